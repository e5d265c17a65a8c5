"""The caller's keys as conversation input (bridge/session/dtmf.py): pass-through, collection, digit maps,
masking. Keys and times in, inputs out: checked against a reference model for any key sequence."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.session.dtmf import DTMF_KEYS, DtmfCollector, DtmfRules, KeyInput

KEYS = sorted(DTMF_KEYS)
# (key, seconds since the previous key) sequences
presses = st.lists(st.tuples(st.sampled_from(KEYS), st.floats(0.0, 6.0, allow_nan=False)), max_size=40)


def play(collector: DtmfCollector, sequence: list[tuple[str, float]], *, tail: float = 0.0) -> list[KeyInput]:
    """Press the keys with their gaps, letting the collector's deadline pass as the runner would."""
    now, out = 0.0, []
    for key, gap in sequence:
        deadline = collector.deadline
        if deadline is not None and now + gap >= deadline:
            out += collector.expire(deadline)
        now += gap
        out += collector.press(key, now)
    deadline = collector.deadline
    if deadline is not None and tail > 0:
        out += collector.expire(max(deadline, now + tail))
    return out


def reference_collect(rules: DtmfRules, sequence: list[tuple[str, float]]) -> list[str]:
    """What collection must produce, written the obvious way."""
    out, buffer, now, last = [], "", 0.0, 0.0
    for key, gap in sequence:
        now += gap
        if buffer and now >= last + rules.timeout_ms / 1000:
            out.append(buffer)
            buffer = ""
        last = now
        if key == rules.terminator:
            out.append(buffer or key)
            buffer = ""
            continue
        buffer += key
        if len(buffer) >= rules.max_digits:
            out.append(buffer)
            buffer = ""
    if buffer:
        out.append(buffer)
    return out


@given(presses, st.booleans(), st.booleans())
def test_pass_through_sends_each_key_at_once(
    sequence: list[tuple[str, float]], sensitive: bool, respond: bool
) -> None:
    collector = DtmfCollector(DtmfRules(sensitive=sensitive, respond=respond))
    now = 0.0
    for key, gap in sequence:
        now += gap
        (key_input,) = collector.press(key, now)
        assert key_input == KeyInput(key, f"DTMF: {key}", "*" if sensitive else key, respond)
        assert collector.deadline is None


@given(presses, st.integers(1, 8), st.sampled_from(["#", "*", ""]), st.integers(200, 5000))
def test_collection_matches_the_reference(
    sequence: list[tuple[str, float]], max_digits: int, terminator: str, timeout_ms: int
) -> None:
    rules = DtmfRules(mode="collect", terminator=terminator, timeout_ms=timeout_ms, max_digits=max_digits)
    collector = DtmfCollector(rules)
    got = play(collector, sequence, tail=10.0)
    assert [i.digits for i in got] == reference_collect(rules, sequence)
    for key_input in got:
        assert key_input.text == f"DTMF: {key_input.digits}"
        assert 1 <= len(key_input.digits) <= max_digits
    assert collector.pending == ""
    assert collector.deadline is None


@given(presses)
def test_nothing_is_due_before_the_deadline(sequence: list[tuple[str, float]]) -> None:
    collector = DtmfCollector(DtmfRules(mode="collect", timeout_ms=1000))
    now = 0.0
    for key, gap in sequence:
        now += gap
        collector.press(key, now)
        deadline = collector.deadline
        if deadline is not None:
            assert deadline == pytest.approx(now + 1.0)
            assert collector.expire(deadline - 0.001) == []


def test_collect_until_the_terminator_then_a_timeout() -> None:
    collector = DtmfCollector(DtmfRules(mode="collect", timeout_ms=2000))
    assert [collector.press(k, t) for k, t in (("1", 0.0), ("2", 0.5), ("3", 1.0))] == [[], [], []]
    assert collector.deadline == pytest.approx(3.0)
    (entered,) = collector.press("#", 1.2)
    assert (entered.digits, entered.text, entered.transcript) == ("123", "DTMF: 123", "[DTMF 123]")
    assert collector.press("4", 5.0) == []
    assert collector.expire(6.9) == []
    (late,) = collector.expire(7.0)
    assert late.text == "DTMF: 4"
    (alone,) = collector.press("#", 9.0)
    assert alone.text == "DTMF: #"


@given(presses)
def test_a_digit_map_sends_meanings_and_passes_other_keys(sequence: list[tuple[str, float]]) -> None:
    meanings = MappingProxyType({"1": "sales", "2": "support"})
    collector = DtmfCollector(DtmfRules(mode="map", digit_map=meanings, respond=False))
    now = 0.0
    for key, gap in sequence:
        now += gap
        (key_input,) = collector.press(key, now)
        assert not key_input.respond
        if key in meanings:
            assert (key_input.text, key_input.transcript) == (meanings[key], f"[DTMF {key}: {meanings[key]}]")
        else:
            assert (key_input.text, key_input.transcript) == (f"DTMF: {key}", f"[DTMF {key}]")


@given(presses, st.sampled_from(["pass_through", "collect", "map"]))
def test_sensitive_keys_never_show_but_reach_the_model(sequence: list[tuple[str, float]], mode: str) -> None:
    meanings = MappingProxyType({"1": "card"}) if mode == "map" else MappingProxyType({})
    rules = DtmfRules(mode=mode, digit_map=meanings, sensitive=True, max_digits=4)  # type: ignore[arg-type]
    collector = DtmfCollector(rules)
    for key_input in play(collector, sequence, tail=10.0):
        assert set(key_input.shown) == {"*"}
        assert set(key_input.transcript) <= set("[DTMF *]")
        assert len(key_input.shown) == len(key_input.digits)
        assert key_input.text.endswith(key_input.digits) or key_input.text == meanings.get(key_input.digits)


def test_unknown_keys_are_ignored_and_letters_taken_in_either_case() -> None:
    collector = DtmfCollector(DtmfRules())
    assert collector.press("x", 0.0) == []
    assert collector.press("", 0.0) == []
    assert collector.press("12", 0.0) == []
    assert collector.press("a", 0.0)[0].text == "DTMF: A"


@pytest.mark.parametrize("rules", [{"max_digits": 0}, {"timeout_ms": 0}, {"terminator": "x"}])
def test_rules_refuse_nonsense(rules: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DtmfRules(**rules)  # type: ignore[arg-type]
