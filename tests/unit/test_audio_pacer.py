"""Pacers on a simulated clock: absolute schedule without drift; queue budget for chan_websocket."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.audio.pacer import FramePacer, PlayoutBudget

START = 12_345.678  # monotonic clocks are far from zero


def run_pacer(pacer: FramePacer, frames: int, jitter: list[float], now: float) -> list[float]:
    """A sender that sleeps `delay_until_due` and wakes up `jitter[n]` late; returns send times."""
    sent = []
    for n in range(frames):
        delay = pacer.delay_until_due(now)
        now += delay + (jitter[n] if delay > 0 else 0.0)
        sent.append(now)
        pacer.mark_sent()
    return sent


def test_sixty_seconds_of_jittered_wakeups_do_not_drift() -> None:
    rng = random.Random(7)
    jitter = [rng.uniform(0.0, 0.004) if rng.random() > 0.02 else 0.015 for _ in range(3000)]
    pacer = FramePacer()
    pacer.start(START)
    sent = run_pacer(pacer, 3000, jitter, START)
    errors = [t - (START + n * 0.02) for n, t in enumerate(sent)]
    assert all(-1e-9 <= e <= 0.015 + 1e-9 for e in errors)  # never early, never later than one wake-up
    early, late = errors[:500], errors[-500:]
    assert abs(sum(late) / len(late) - sum(early) / len(early)) < 0.001
    assert pacer.due_time() == pytest.approx(START + 3000 * 0.02, abs=1e-9)
    assert pacer.reanchors == 0


def test_a_late_wakeup_is_recovered_on_the_next_frame() -> None:
    pacer = FramePacer()
    pacer.start(0.0)
    jitter = [0.0] * 10
    jitter[3] = 0.013  # frame 3 goes out 13 ms late ...
    sent = run_pacer(pacer, 10, jitter, 0.0)
    assert sent[3] == pytest.approx(0.073)
    assert sent[4] == pytest.approx(0.08)  # ... and frame 4 is on time again: no shift carried over


def test_a_short_stall_catches_up_without_reanchoring() -> None:
    pacer = FramePacer(max_lag_s=0.2)
    pacer.start(0.0)
    run_pacer(pacer, 10, [0.0] * 10, 0.0)
    now = 0.2 + 0.06  # frame 10 was due at 0.2; we are 60 ms late
    bursts = 0
    while pacer.delay_until_due(now) == 0.0:
        pacer.mark_sent()
        bursts += 1
    assert bursts == 4  # frames due at 0.20, 0.22, 0.24, 0.26
    assert pacer.reanchors == 0


def test_a_long_stall_reanchors_instead_of_bursting() -> None:
    pacer = FramePacer(max_lag_s=0.2)
    pacer.start(0.0)
    now = run_pacer(pacer, 100, [0.0] * 100, 0.0)[-1]
    now += 1.0  # the producer stalled for a second
    sent = run_pacer(pacer, 20, [0.0] * 20, now)
    assert pacer.reanchors == 1
    assert sent[0] == pytest.approx(now)
    assert [round(b - a, 9) for a, b in itertools.pairwise(sent)] == [0.02] * 19


def test_restart_and_stop() -> None:
    pacer = FramePacer()
    with pytest.raises(RuntimeError):
        pacer.due_time()
    pacer.start(5.0)
    pacer.mark_sent()
    assert pacer.due_time() == pytest.approx(5.02)
    pacer.start(9.0)
    assert pacer.frames_sent == 0
    assert pacer.delay_until_due(8.99) == pytest.approx(0.01)
    pacer.stop()
    assert not pacer.started


class AsteriskQueue:
    """Independent model of chan_websocket playout: one frame leaves per tick at phase + k*20 ms."""

    def __init__(self, phase: float) -> None:
        self.phase = phase
        self.ticks_done = 0
        self.depth = 0
        self.played = 0

    def advance(self, now: float) -> None:
        while self.phase + self.ticks_done * 0.02 <= now:
            if self.depth:
                self.depth -= 1
                self.played += 1
            self.ticks_done += 1

    def enqueue(self, frames: int, now: float) -> None:
        self.advance(now)
        self.depth += frames


def offer(budget: PlayoutBudget, frames: int, until: float, seed: int) -> tuple[list[tuple[float, int]], int]:
    """Send up to `frames` as fast as the budget allows until `until`; check caps after every send."""
    rng = random.Random(seed)
    asterisk = AsteriskQueue(phase=START + rng.uniform(0, 0.02))
    now, remaining, log, worst = START, frames, [], 0
    while remaining and now < until:
        count = min(budget.frames_allowed(now), remaining)
        if count:
            asterisk.enqueue(count, now)
            budget.on_sent(count, now)
            remaining -= count
            log.append((now, count))
            worst = max(worst, asterisk.depth)
            assert asterisk.depth <= budget.queued_frames(now) <= budget.max_queue_frames
            assert budget.queued_seconds(now) <= budget.max_queue_frames * 0.02 + 1e-9
        wait = budget.time_until_allowed(now)
        assert wait is not None
        now += wait + rng.uniform(0, 0.003)  # the event loop wakes a little late
    return log, worst


def sent_between(log: list[tuple[float, int]], start: float, end: float) -> int:
    return sum(count for t, count in log if start <= t < end)


@pytest.mark.parametrize("seed", range(5))
def test_a_ten_second_burst_never_overfills_the_queue(seed: int) -> None:
    budget = PlayoutBudget(max_queue_frames=100)
    log, worst = offer(budget, 500, START + 30, seed)
    assert sum(c for _, c in log) == 500
    assert 90 <= worst <= 100  # it did reach the cap, and never passed it
    assert log[0] == (START, 10)  # the initial burst


@pytest.mark.parametrize("seed", range(3))
def test_rate_is_capped_at_one_and_a_half_then_converges_to_real_time(seed: int) -> None:
    budget = PlayoutBudget()  # defaults: burst 10, 1.5x, cap 200 frames
    log, worst = offer(budget, 3000, START + 60, seed)
    assert worst <= 200
    for seconds in (1, 2, 4, 6):
        assert sent_between(log, START, START + seconds) <= 10 + 1.5 * seconds * 50 + 1
    # Reaching the 200-frame cap at +0.5 frame per tick takes ~7.6 s; from then on, real time.
    assert sent_between(log, START + 20, START + 40) == pytest.approx(1000, abs=3)


def test_idle_time_does_not_bank_a_bigger_burst() -> None:
    budget = PlayoutBudget()
    budget.on_sent(10, START)
    assert budget.frames_allowed(START) == 0
    assert budget.time_until_allowed(START) == pytest.approx(0.02 / 1.5, abs=1e-5)
    assert budget.frames_allowed(START + 30.0) == 10
    assert budget.queued_frames(START + 30.0) == 0


def test_xoff_holds_until_reset_and_reset_takes_a_known_depth() -> None:
    budget = PlayoutBudget()
    budget.hold(START)
    assert budget.frames_allowed(START + 5) == 0
    assert budget.time_until_allowed(START + 5) is None
    budget.reset(START + 5, queued_frames=799)  # MEDIA_XON arrives just below 800
    assert not budget.held
    assert budget.frames_allowed(START + 5) == 0
    wait = budget.time_until_allowed(START + 5)
    assert wait is not None
    assert wait == pytest.approx((799 - 199) * 0.02, abs=1e-5)
    assert budget.frames_allowed(START + 5 + wait) == 1


def test_cap_must_stay_clear_of_asterisks_xon_level() -> None:
    with pytest.raises(ValueError, match="max_queue_frames"):
        PlayoutBudget(max_queue_frames=900)
    with pytest.raises(ValueError):
        PlayoutBudget(rate=0.5)


@given(
    sends=st.lists(st.tuples(st.floats(0, 0.5), st.integers(0, 40)), max_size=30),
    probe=st.floats(0, 1.0),
)
def test_waiting_time_until_allowed_always_yields_a_frame(
    sends: list[tuple[float, int]], probe: float
) -> None:
    budget = PlayoutBudget(max_queue_frames=50)
    now = START
    for gap, frames in sends:
        now += gap
        budget.on_sent(frames, now)
    now += probe
    wait = budget.time_until_allowed(now)
    assert wait is not None
    allowed_now = budget.frames_allowed(now)
    assert (wait == 0.0) == (allowed_now > 0)
    assert budget.frames_allowed(now + wait) >= 1
    assert math.isfinite(wait)
