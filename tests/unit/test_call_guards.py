"""The pure guards: caller silence counted in VAD frames, the wait for a voicemail beep, AMD verdicts."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.session.guards import QuietWait, SilenceGuard, SilenceVerdict, amd_result


def frames(voiced: bool, ms: int) -> list[bool]:
    return [voiced] * (ms // 20)


def test_a_silent_caller_is_prompted_then_given_up_on() -> None:
    guard = SilenceGuard(2000)
    assert guard.hear(frames(False, 1980), bot_speaking=False) is None
    assert guard.hear([False], bot_speaking=False) is SilenceVerdict.PROMPT
    assert guard.prompted
    assert guard.hear(frames(False, 1980), bot_speaking=False) is None
    assert guard.hear([False], bot_speaking=False) is SilenceVerdict.GIVE_UP
    assert guard.hear(frames(False, 10_000), bot_speaking=False) is None  # spent: once per call


def test_frames_while_the_bot_speaks_count_neither_way() -> None:
    guard = SilenceGuard(1000)
    assert guard.hear(frames(False, 600), bot_speaking=False) is None
    assert guard.hear(frames(False, 5000), bot_speaking=True) is None  # the prompt or an answer playing
    assert guard.hear(frames(True, 5000), bot_speaking=True) is None  # maybe the bot's own echo
    assert guard.hear(frames(False, 400), bot_speaking=False) is SilenceVerdict.PROMPT


def test_speech_or_a_key_starts_over() -> None:
    guard = SilenceGuard(1000)
    assert guard.hear(frames(False, 1000), bot_speaking=False) is SilenceVerdict.PROMPT
    assert guard.hear(frames(True, 100), bot_speaking=False) is None  # the caller answered the prompt
    assert not guard.prompted
    assert guard.hear(frames(False, 1000), bot_speaking=False) is SilenceVerdict.PROMPT  # a first one again
    guard.caller_active()  # a key
    assert guard.hear(frames(False, 980), bot_speaking=False) is None
    assert guard.hear([False], bot_speaking=False) is SilenceVerdict.PROMPT


def test_a_click_is_not_speech() -> None:
    guard = SilenceGuard(1000)
    assert guard.hear(frames(False, 900) + frames(True, 60), bot_speaking=False) is None
    assert guard.hear(frames(False, 100), bot_speaking=False) is SilenceVerdict.PROMPT


# The caller's line as runs of voiced or unvoiced frames (long runs are what guards are about).
lines = st.lists(st.tuples(st.booleans(), st.integers(1, 80)), max_size=30).map(
    lambda runs: [voiced for voiced, length in runs for _ in range(length)]
)


@given(lines, st.integers(100, 1000))
def test_verdicts_match_the_reference(voiced: list[bool], limit_ms: int) -> None:
    guard = SilenceGuard(limit_ms)
    needed = -(-limit_ms // 20)
    silent = speech = 0  # unvoiced frames since the caller last spoke (100 ms voiced in a row)
    prompted = spent = False
    for frame_voiced in voiced:
        verdict = guard.hear([frame_voiced], bot_speaking=False)
        expected = None
        if not spent:
            speech = speech + 1 if frame_voiced else 0
            if speech >= 5:
                silent, prompted = 0, False
            elif not frame_voiced:
                silent += 1
            if silent == needed:
                silent = 0
                expected = SilenceVerdict.GIVE_UP if prompted else SilenceVerdict.PROMPT
                spent, prompted = prompted, True
        assert verdict is expected


def test_quiet_wait_needs_the_line_quiet_after_the_greeting() -> None:
    wait = QuietWait(1200)
    assert not wait.hear(frames(True, 3000))  # the greeting
    assert not wait.hear(frames(False, 1000))
    assert not wait.hear(frames(True, 200))  # the beep
    assert not wait.hear(frames(False, 1180))
    assert wait.hear([False])
    assert wait.frames == (3000 + 1000 + 200 + 1200) // 20


@pytest.mark.parametrize(
    ("variables", "result"),
    [
        ({}, None),
        ({"BRIDGE_CALL_ID": "x"}, None),
        ({"amd": "MACHINE"}, "machine"),
        ({"amd": "human"}, "human"),
        ({"AMDSTATUS": "NOTSURE"}, "unknown"),
        ({"__AMDSTATUS": "HANGUP"}, "unknown"),
        ({"BRIDGE_AMD_STATUS": "MACHINE"}, "machine"),
        ({"amd": ""}, "unknown"),
    ],
)
def test_amd_verdicts(variables: dict[str, str], result: str | None) -> None:
    assert amd_result(variables) == result


def test_silence_guard_refuses_no_limit() -> None:
    with pytest.raises(ValueError):
        SilenceGuard(0)
