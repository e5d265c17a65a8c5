"""Pacers on a simulated clock: one drift-free grid for AudioSocket; queue budget for chan_websocket."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bridge.audio.pacer import GridPacer, PlayoutBudget

START = 12_345.678  # monotonic clocks are far from zero


def send_times(
    pacer: GridPacer,
    arrivals: list[float],
    wake_late: Callable[[int], float] = lambda n: 0.0,
    restarts: frozenset[int] = frozenset(),
    slots: list[float] | None = None,
) -> list[float]:
    """The AudioSocket driver's loop on a simulated clock: frames come at `arrivals`; the sender sleeps
    until `due` and wakes `wake_late(n)` late; a frame that came to an empty queue passes its arrival.
    `restarts`: before frame n a new run begins (the previous response ended with frame n - 1).
    `slots` collects the grid time each frame was sent for."""
    sent: list[float] = []
    now, n = arrivals[0], 0
    while n < len(arrivals):
        now = max(now, arrivals[n])
        if n in restarts:
            pacer.restart()
        head_came = arrivals[n] if not sent or arrivals[n] > sent[-1] else None
        due = pacer.due(now, head_came)
        if due > now:
            now = due + wake_late(n)
            due = pacer.due(now, head_came)  # the same slot, unless the wake-up was far too late
            now = max(now, due)
        if slots is not None:
            slots.append(due)
        sent.append(now)
        pacer.sent()
        n += 1
    return sent


def grid_error(sent: list[float], origin: float) -> list[float]:
    """Each send's distance to the nearest point of the 20 ms grid through `origin`."""
    return [abs((t - origin) / 0.02 - round((t - origin) / 0.02)) * 0.02 for t in sent]


def test_frames_queued_ahead_go_on_the_grid_for_sixty_seconds_without_drift() -> None:
    rng = random.Random(7)
    pacer = GridPacer()
    arrivals = [START] * 3000  # a model faster than real time: everything is queued ahead
    sent = send_times(pacer, arrivals, lambda n: rng.uniform(0.0, 0.004) if rng.random() > 0.02 else 0.015)
    errors = [t - (START + n * 0.02) for n, t in enumerate(sent)]
    assert all(-1e-9 <= e <= 0.015 + 1e-9 for e in errors)  # never early, never later than one wake-up
    early, late = errors[:500], errors[-500:]
    assert abs(sum(late) / len(late) - sum(early) / len(early)) < 0.001
    assert pacer.slot_time(3000) == pytest.approx(START + 3000 * 0.02, abs=1e-9)
    assert (pacer.underruns, pacer.skips, pacer.late_frames) == (0, 0, 0)


def test_an_echo_with_jitter_and_hiccups_stays_on_one_grid() -> None:
    """The issue's case: frames produced in real time, each a little late, some much later (a stalled
    loop upstream). The old pacer re-anchored at each hiccup: its frames ended ~20 ms off the grid."""
    rng = random.Random(11)
    producer = START + 0.2
    delays = [
        rng.uniform(0.0, 0.003) if rng.random() > 0.02 else rng.uniform(0.02, 0.05) for _ in range(3000)
    ]
    delays[0] = 0.0  # the first frame happens to come fastest: every later one is a little late
    arrivals = [producer + n * 0.02 + d for n, d in enumerate(delays)]
    pacer = GridPacer()
    sent = send_times(pacer, arrivals)
    assert pacer.origin == arrivals[0]
    shift = [t - (arrivals[0] + n * 0.02) for n, t in enumerate(sent)]
    assert max(shift) <= 0.05 + 1e-9
    assert sorted(shift)[int(0.95 * len(shift))] < 0.005  # p95 under 5 ms, over the whole call
    assert shift[-1] < 0.005  # and no drift: the last frame is in its own slot
    assert pacer.underruns == 0
    assert pacer.late_frames > 0


def test_a_producer_that_falls_behind_moves_to_a_later_slot_of_the_same_grid() -> None:
    arrivals = [START + n * 0.02 for n in range(100)] + [START + n * 0.02 + 0.035 for n in range(100, 150)]
    pacer = GridPacer()
    sent = send_times(pacer, arrivals)
    assert pacer.underruns == 1  # frames 100 and 101 went late, frame 102 moved on
    assert pacer.late_frames == 2
    assert max(grid_error(sent[102:], START)) < 1e-9  # back on the grid ...
    assert sent[102] == pytest.approx(START + 104 * 0.02)  # ... two slots on: the first after it came
    assert sent[-1] == pytest.approx(START + 151 * 0.02)
    assert pacer.prebuffer_s == pytest.approx(0.035 - 48 * 0.0002)  # headroom for a new run, decaying


def test_a_producer_one_frame_behind_moves_on_by_one_slot_not_two() -> None:
    """Seen on loopback: an echo's frames suddenly come one frame (and 0.2 ms) later. The nearest
    slot is 0.2 ms gone: it still counts, so the run moves on by one slot, not two."""
    arrivals = [START + n * 0.02 for n in range(50)] + [START + n * 0.02 + 0.0202 for n in range(50, 100)]
    pacer = GridPacer()
    sent = send_times(pacer, arrivals)
    assert (pacer.late_frames, pacer.underruns) == (2, 1)
    assert [t - (START + (n + 1) * 0.02) for n, t in enumerate(sent)][52:] == pytest.approx(
        [0.0002] * 48, abs=1e-9
    )


def test_a_frame_far_too_late_moves_on_at_once() -> None:
    arrivals = [START + n * 0.02 for n in range(10)] + [START + 10 * 0.02 + 0.5]
    pacer = GridPacer(max_prebuffer_s=0.06)
    sent = send_times(pacer, arrivals)
    assert pacer.underruns == 1
    assert sent[10] == pytest.approx(START + 35 * 0.02)  # the first slot after it came (0.5 s late)
    assert pacer.prebuffer_s == pytest.approx(0.06 - 0.0002)  # grown to the lateness, within its cap


def test_a_new_response_starts_in_the_next_slot_with_the_prebuffer() -> None:
    pacer = GridPacer(prebuffer_s=0.01)
    first = [START] * 10  # a response queued at once, played in slots 0..9 (origin START + 10 ms)
    second = [START + 1.003] * 5  # the next response, after a pause
    sent = send_times(pacer, first + second, restarts=frozenset({10}))
    origin = START + 0.01
    assert sent[:10] == pytest.approx([origin + n * 0.02 for n in range(10)])
    # 1.003 + 10 ms of prebuffer = 1.013 from START: the first slot at or after it is slot 51 (1.030)
    assert sent[10] == pytest.approx(origin + 51 * 0.02)
    assert max(grid_error(sent, origin)) < 1e-9
    assert pacer.underruns == 0  # a pause between responses is not an underrun


def test_a_new_run_never_reuses_the_slot_just_sent() -> None:
    pacer = GridPacer()
    pacer.due(START)
    pacer.sent()
    pacer.restart()  # a barge-in right after the frame went; new audio comes in the same instant
    assert pacer.due(START, START) == pytest.approx(START + 0.02)


def test_a_stalled_sender_catches_up_a_little_and_skips_a_long_backlog() -> None:
    pacer = GridPacer(max_late_s=0.06)
    arrivals = [START] * 40
    stalls = {5: 0.045, 20: 0.3}  # the sender's own loop stalls before frames 5 and 20
    sent = send_times(pacer, arrivals, lambda n: stalls.get(n, 0.0))
    # 45 ms late: frames 5 and 6 go at once (their slots passed), frame 7 is on time again
    assert sent[5] == sent[6] == pytest.approx(START + 5 * 0.02 + 0.045)
    assert sent[7] == pytest.approx(START + 7 * 0.02)
    # 300 ms late: no burst of 15 frames; the run moves on to the slot now due
    assert pacer.skips == 1
    assert sent[20] == pytest.approx(START + 35 * 0.02)
    assert max(grid_error(sent[20:], START)) < 1e-9


def test_restart_before_any_frame_and_bad_settings() -> None:
    pacer = GridPacer()
    with pytest.raises(RuntimeError):
        pacer.slot_time(0)
    with pytest.raises(RuntimeError):
        pacer.sent()
    pacer.restart()
    assert pacer.due(START + 1) == START + 1
    assert pacer.due(START + 1.05) == START + 1  # the same slot until sent ...
    assert pacer.due(START + 2) == START + 2  # ... unless the sender comes back far too late
    for bad in (
        {"interval_s": 0.0},
        {"late_tolerance_s": 0.1, "max_late_s": 0.05},
        {"late_run_limit": 0},
        {"prebuffer_s": 0.1, "max_prebuffer_s": 0.05},
        {"prebuffer_decay": -1.0},
    ):
        with pytest.raises(ValueError):
            GridPacer(**bad)


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(0.0, 0.2), min_size=1, max_size=80),
    wake=st.lists(st.floats(0.0, 0.1), min_size=80, max_size=80),
    restarts=st.frozensets(st.integers(1, 79), max_size=5),
)
def test_any_arrivals_any_wakeups_keep_the_grid(
    gaps: list[float], wake: list[float], restarts: frozenset[int]
) -> None:
    arrivals = list(itertools.accumulate(gaps, initial=START))[1:]
    pacer = GridPacer()
    slots: list[float] = []
    sent = send_times(pacer, arrivals, lambda n: wake[n], restarts, slots)
    origin = pacer.origin
    assert origin is not None
    assert max(grid_error(slots, origin)) < 1e-6  # every frame was meant for a slot of the one grid
    assert all(b > a + 0.02 - 1e-6 for a, b in itertools.pairwise(slots))  # never two in one slot
    for t, slot, came in zip(sent, slots, arrivals, strict=True):
        assert t >= came  # never before the audio exists
        assert t >= slot - 1e-9  # never before its slot
        assert t <= max(slot, came) + 0.06 + 0.1 + 1e-9  # late by at most max_late plus one wake-up
    assert all(b >= a for a, b in itertools.pairwise(sent))


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
@example(sends=[(0.0, 39)], probe=0.4)  # float rounding once made this "wait 1 µs" though a frame was allowed
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


def test_batch_sends_whole_messages_and_holds_less_while_asterisk_has_plenty() -> None:
    budget = PlayoutBudget()  # burst 10, 1.5x, cap 200

    def batch(now: float, available: int, last: bool = False) -> tuple[int, float | None]:
        return budget.batch(now, available, per_message=10, low_water_s=0.1, last=last)

    assert batch(START, 4) == (4, None)  # the queue is empty: no waiting
    budget.on_sent(4, START)
    budget.reset(START, queued_frames=30)  # say 600 ms are queued in Asterisk now
    # 7 frames of audio, budget for 10: not a whole message, and Asterisk has plenty: wait for more
    # audio, at the latest until the queue is down to 100 ms (500 ms from now)
    n, wake = batch(START, 7)
    assert n == 0
    assert wake == pytest.approx(START + 0.5, abs=1e-5)
    assert batch(START, 7, last=True) == (7, None)  # the response's last frames: go
    assert batch(START + 0.5 + 1e-5, 7) == (7, None)  # the queue is low: go
    assert batch(START, 27) == (10, None)  # whole messages only; 17 wait


def test_batch_waits_for_the_budget_to_allow_a_whole_message() -> None:
    budget = PlayoutBudget()
    budget.on_sent(10, START)
    budget.reset(START, queued_frames=40)
    budget.on_sent(6, START)  # 46 queued; 4 tokens left of 10
    n, wake = budget.batch(START, 30, per_message=10, low_water_s=0.1, last=False)
    assert n == 0
    assert wake == pytest.approx(START + 6 * 0.02 / 1.5, abs=1e-5)  # 6 more tokens at 1.5 per tick
    assert wake is not None
    assert budget.batch(wake, 30, per_message=10, low_water_s=0.1, last=False)[0] == 10


@settings(max_examples=100, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.floats(0.0, 0.3), st.integers(1, 30)), min_size=1, max_size=40),
    per_message=st.integers(1, 10),
    lag=st.floats(0.0, 0.06),
)
def test_batching_never_starves_the_queue_while_audio_waits(
    arrivals: list[tuple[float, int]], per_message: int, lag: float
) -> None:
    """Holding audio back to fill a message never costs the caller a gap, even when the sender wakes
    up to 60 ms late: whenever Asterisk's playout tick finds its queue empty, nothing waited here."""
    budget = PlayoutBudget()
    asterisk = AsteriskQueue(phase=START + 0.013)
    now, local, waiting_since = START, 0, math.inf
    pending = list(arrivals)
    t_next = START + pending[0][0]
    while pending or local:
        while pending and t_next <= now + 1e-12:
            waiting_since = min(waiting_since, now)
            local += pending.pop(0)[1]
            if pending:
                t_next = now + pending[0][0]
        # Ticks up to now: an empty one while audio waited here since before it is a starved tick.
        while asterisk.phase + asterisk.ticks_done * 0.02 <= now:
            tick = asterisk.phase + asterisk.ticks_done * 0.02
            assert asterisk.depth or not asterisk.played or tick < waiting_since, f"starved at {tick}"
            asterisk.advance(tick)
        n, wake = budget.batch(now, local, per_message=per_message, low_water_s=0.1, last=not pending)
        if n:
            assert n <= local
            asterisk.enqueue(n, now)
            budget.on_sent(n, now)
            local -= n
            waiting_since = now if local else math.inf
            continue
        candidates = [t for t in (wake, t_next if pending else None) if t is not None]
        assert candidates  # audio is never left without a reason to look again
        assert min(candidates) > now
        now = min(candidates) + (lag if wake is not None and min(candidates) == wake else 0.0)
