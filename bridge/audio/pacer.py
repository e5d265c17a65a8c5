"""Send-time arithmetic for downlink audio, with the clock injected (times are seconds, floats).

Two peers, two policies:
- AudioSocket does not re-time what it receives, so `GridPacer` sends every frame of a call on one
  absolute 20 ms grid (computed, never accumulated, never re-anchored, so it cannot drift): a frame that
  comes a little late goes at once and the next is back on its slot; a producer that fell behind, and a
  new response, continue in a later slot of the same grid.
- chan_websocket plays one frame per 20 ms tick from a queue of at most 1000 frames (XOFF at 900, and
  anything sent at >= 1000 is dropped silently). `PlayoutBudget` keeps a local model of that queue and
  lets the sender run ahead by a small burst and then at most `rate` x real time, never past
  `max_queue_frames`.
"""

from __future__ import annotations

import math
from typing import Final

# Stay clear of Asterisk's XON level (800) so our own cap, not XOFF, is what limits a burst.
QUEUE_CEILING_FRAMES: Final = 800
# Float slack: counts within this of a whole frame are taken as whole.
_EPSILON: Final = 1e-9
# Added to computed waits so that sleeping exactly that long always yields a frame, even with
# monotonic clock values around 1e7 s where a float's step is ~2e-9 s.
_WAIT_SLACK_S: Final = 1e-6
_MIN_WAIT_S: Final = 1e-3  # never ask to be woken sooner than this: no busy polling


class GridPacer:
    """One drift-free 20 ms grid per call for a peer that plays frames as they arrive (AudioSocket).

    Frame times are `origin + slot * interval`, computed, never accumulated. The origin is fixed by the
    call's first frame and never moves, so every frame of the call lands on the same grid (within the
    sender's wake-up jitter); what adapts is which slot a frame takes:
    - a run of frames takes consecutive slots: a frame waiting in the queue goes when its slot comes;
    - a frame that comes to an empty queue after its slot went by (more than `late_tolerance_s`), up
      to `max_late_s` late, goes at once and the run keeps its slots: a frame or two late, then on time
      again (a hiccup, e.g. a stalled event loop upstream);
    - a frame later than `max_late_s`, or the `late_run_limit`-th late one in a row (the producer has
      fallen behind: an underrun), takes the first free slot from `prebuffer_s` after it came (one
      missed by up to `late_tolerance_s` still counts), and the first frame of a new run (`restart`:
      after a response's tail, or a barge-in) the first free slot at least `prebuffer_s` after it came.
      After an underrun the prebuffer grows to its lateness (at most `max_prebuffer_s`) and decays by
      `prebuffer_decay` of an interval per frame sent: headroom for a jittery producer, none for a
      steady one;
    - when the sender itself wakes more than `max_late_s` after the slot of a waiting frame, the run
      moves on to the slot now due instead of bursting the backlog out.
    """

    __slots__ = (
        "_decay",
        "_floor",
        "_interval",
        "_late_limit",
        "_late_run",
        "_max_late",
        "_max_prebuffer",
        "_next",
        "_origin",
        "_prebuffer",
        "_slot",
        "_tolerance",
        "late_frames",
        "skips",
        "underruns",
    )

    def __init__(
        self,
        interval_s: float = 0.02,
        *,
        late_tolerance_s: float = 0.005,
        max_late_s: float = 0.06,
        late_run_limit: int = 3,
        prebuffer_s: float = 0.0,
        max_prebuffer_s: float = 0.06,
        prebuffer_decay: float = 0.01,
    ) -> None:
        if interval_s <= 0 or not 0 <= late_tolerance_s <= max_late_s:
            raise ValueError("need interval_s > 0 and 0 <= late_tolerance_s <= max_late_s")
        if late_run_limit < 1 or not 0 <= prebuffer_s <= max_prebuffer_s or prebuffer_decay < 0:
            raise ValueError(
                "need late_run_limit >= 1, 0 <= prebuffer_s <= max_prebuffer_s, prebuffer_decay >= 0"
            )
        self._interval = interval_s
        self._tolerance = late_tolerance_s
        self._max_late = max_late_s
        self._late_limit = late_run_limit
        self._prebuffer = prebuffer_s
        self._max_prebuffer = max_prebuffer_s
        self._decay = prebuffer_decay * interval_s
        self._origin: float | None = None  # the grid: slot k is at origin + k * interval
        self._next: int | None = None  # the slot the run's next frame takes (None: no run)
        self._slot: int | None = None  # the slot chosen for the frame waiting to go
        self._floor = 0  # the first slot not yet used: never two frames in one slot
        self._late_run = 0  # frames in a row that came late to an empty queue
        self.late_frames = 0  # frames that came after their slot and went at once, the run kept its slots
        self.underruns = 0  # times the producer fell behind and the run moved to a later slot
        self.skips = 0  # times the sender woke so late that the run moved on to a later slot

    @property
    def interval_s(self) -> float:
        return self._interval

    @property
    def prebuffer_s(self) -> float:
        return self._prebuffer

    @property
    def origin(self) -> float | None:
        """The grid's slot 0 (None until the first frame)."""
        return self._origin

    def slot_time(self, slot: int) -> float:
        if self._origin is None:
            raise RuntimeError("the grid starts with the first frame")
        return self._origin + slot * self._interval

    def due(self, now: float, arrived_at: float | None = None) -> float:
        """When the frame at the head of the queue goes: a time on the grid, `<= now` meaning at once.

        `arrived_at`: when that frame was queued, if it came to an empty queue (None: it was already
        waiting when the previous frame went). The slot stays chosen until `sent` or `restart`, unless
        the sender comes back more than `max_late_s` after it."""
        if self._slot is not None:
            if now <= self.slot_time(self._slot) + self._max_late:
                return self.slot_time(self._slot)
            self.skips += 1  # the sender woke far too late for this slot: take the one due now
            self._slot = self._first_slot_at_or_after(now - self._tolerance)
            return self.slot_time(self._slot)
        came = now if arrived_at is None else arrived_at
        if self._origin is None:
            self._origin = came + self._prebuffer
            slot = 0
        elif self._next is None:  # a new run, with the prebuffer's headroom
            slot = self._first_slot_at_or_after(came + self._prebuffer)
        else:
            slot = self._next
            lateness = -math.inf if arrived_at is None else arrived_at - self.slot_time(slot)
            if lateness > self._tolerance:
                if lateness <= self._max_late and self._late_run + 1 < self._late_limit:
                    self.late_frames += 1  # goes at once; the next frame keeps its slot
                else:  # to the nearest slot: one missed by at most the tolerance still counts
                    self.underruns += 1
                    slot = self._first_slot_at_or_after(came + self._prebuffer - self._tolerance)
                    self._prebuffer = min(self._max_prebuffer, max(self._prebuffer, lateness))
            elif now > self.slot_time(slot) + self._max_late:
                self.skips += 1
                slot = self._first_slot_at_or_after(now - self._tolerance)
        late = arrived_at is not None and arrived_at > self.slot_time(slot) + self._tolerance
        self._late_run = self._late_run + 1 if late else 0
        self._slot = slot
        return self.slot_time(slot)

    def sent(self) -> None:
        """The frame `due` placed has been written: the run goes on in the next slot."""
        if self._slot is None:
            raise RuntimeError("sent() without due()")
        self._next = self._floor = self._slot + 1
        self._slot = None
        self._prebuffer = max(0.0, self._prebuffer - self._decay)

    def restart(self) -> None:
        """The run is over (its last frame went, or a barge-in dropped the rest): the next frame starts
        a new run on the same grid."""
        self._next = self._slot = None
        self._late_run = 0

    def _first_slot_at_or_after(self, t: float) -> int:
        assert self._origin is not None
        return max(self._floor, math.ceil((t - self._origin) / self._interval - _EPSILON))


class PlayoutBudget:
    """How many frames may go to chan_websocket now, from a model of its playout queue.

    The queue model drains one frame per interval and never goes below zero. A token bucket of
    `burst_frames` refilled at `rate` frames per interval caps the pace ahead of playout; XOFF
    (`hold`) stops everything until `reset`.
    """

    __slots__ = (
        "_at",
        "_burst",
        "_depth",
        "_held",
        "_interval",
        "_max_queue",
        "_rate",
        "_tokens",
    )

    def __init__(
        self,
        interval_s: float = 0.02,
        burst_frames: int = 10,
        rate: float = 1.5,
        max_queue_frames: int = 200,
    ) -> None:
        if interval_s <= 0 or burst_frames < 1 or rate < 1.0:
            raise ValueError("need interval_s > 0, burst_frames >= 1 and rate >= 1.0")
        if not burst_frames <= max_queue_frames <= QUEUE_CEILING_FRAMES:
            raise ValueError(
                f"max_queue_frames must be within [burst_frames, {QUEUE_CEILING_FRAMES}], "
                f"got {max_queue_frames}"
            )
        self._interval = interval_s
        self._burst = burst_frames
        self._rate = rate
        self._max_queue = max_queue_frames
        self._at = -math.inf  # nothing sent yet: the queue is empty and the bucket full at any time
        self._depth = 0.0  # modelled frames in Asterisk's queue at time `_at`
        self._tokens = float(burst_frames)
        self._held = False

    @property
    def max_queue_frames(self) -> int:
        return self._max_queue

    @property
    def held(self) -> bool:
        """True after `hold` (MEDIA_XOFF) until `reset`."""
        return self._held

    def queued_frames(self, now: float) -> int:
        """Modelled frames still queued in Asterisk (a started frame counts as queued)."""
        depth, _ = self._advance(now)
        return math.ceil(depth - _EPSILON)

    def queued_seconds(self, now: float) -> float:
        """Modelled audio still queued ahead of what the caller has heard."""
        depth, _ = self._advance(now)
        return depth * self._interval

    def frames_allowed(self, now: float) -> int:
        """Frames that may be sent at `now` without beating the rate cap or the queue cap."""
        return self._allowed(*self._advance(now))

    def _allowed(self, depth: float, tokens: float) -> int:
        if self._held:
            return 0
        by_rate = math.floor(tokens + _EPSILON)
        by_queue = self._max_queue - math.ceil(depth - _EPSILON)
        return max(0, min(by_rate, by_queue))

    def time_until_allowed(self, now: float, frames: int = 1) -> float | None:
        """Seconds until `frames` frames are allowed at once (0.0 if now; more than the burst or the
        queue cap can never be, so those count as the cap); None while held, as only XON frees it."""
        if self._held:
            return None
        frames = max(1, min(frames, self._burst, self._max_queue))
        depth, tokens = self._advance(now)
        if self._allowed(depth, tokens) >= frames:
            return 0.0  # the same tolerance as frames_allowed: never "wait 1 µs" for what is allowed now
        wait_rate = max(0.0, (frames - tokens) * self._interval / self._rate)
        wait_queue = max(0.0, (depth - (self._max_queue - frames)) * self._interval)
        wait = max(wait_rate, wait_queue)
        return wait + _WAIT_SLACK_S if wait > 0 else 0.0

    def batch(
        self, now: float, available: int, *, per_message: int, low_water_s: float, last: bool
    ) -> tuple[int, float | None]:
        """How many of `available` frames to send now in messages of up to `per_message`, and, if
        none, when to look again (None: only when more audio comes).

        Whole messages go as soon as audio and budget allow one. Less than a message goes only when
        the modelled queue is down to `low_water_s` (the caller would soon hear a gap), or when these
        are all the frames there will be (`last`: the response ended). Otherwise wait for more audio,
        for the budget to allow a whole message, or for the queue to reach the low-water mark."""
        depth, tokens = self._advance(now)  # once: this runs on every write-loop wake-up
        n = min(available, self._allowed(depth, tokens))
        everything = last and n == available
        if n >= per_message and not everything:
            return n - n % per_message, None  # whole messages; the rest waits to fill the next one
        queued = depth * self._interval
        low = queued <= low_water_s + _EPSILON
        if n and (everything or low):
            return n, None
        if low:  # out of budget (or held): as soon as one frame may go
            wait = self.time_until_allowed(now)
            return 0, None if wait is None else now + max(wait, _MIN_WAIT_S)
        wake = now + queued - low_water_s + _WAIT_SLACK_S  # at the latest: when the queue gets low
        want = min(per_message, available)
        if n < want:  # the budget, not the audio, is short of a whole message
            wait = self.time_until_allowed(now, want)
            if wait is not None:
                wake = min(wake, now + max(wait, _MIN_WAIT_S))
        return 0, wake

    def on_sent(self, frames: int, now: float) -> None:
        """Record `frames` sent at `now` (may exceed `frames_allowed`, e.g. a final short frame)."""
        if frames < 0:
            raise ValueError(f"frames must not be negative, got {frames}")
        self._depth, self._tokens = self._advance(now)
        self._at = max(now, self._at)
        self._depth += frames
        self._tokens -= frames

    def hold(self, now: float) -> None:
        """MEDIA_XOFF: send nothing until `reset`."""
        self._depth, self._tokens = self._advance(now)
        self._at = max(now, self._at)
        self._held = True

    def reset(self, now: float, queued_frames: int = 0) -> None:
        """Re-anchor: after FLUSH_MEDIA (queue empty) or MEDIA_XON (pass the known depth)."""
        self._at = now
        self._depth = float(max(0, queued_frames))
        self._tokens = float(self._burst)
        self._held = False

    def _advance(self, now: float) -> tuple[float, float]:
        elapsed = max(0.0, now - self._at) / self._interval
        depth = max(0.0, self._depth - elapsed)
        tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
        return depth, tokens
