"""Send-time arithmetic for downlink audio, with the clock injected (times are seconds, floats).

Two peers, two policies:
- AudioSocket does not re-time what it receives, so `FramePacer` sends frame n at start + n*interval on
  an absolute schedule (computed, never accumulated, so it cannot drift) and re-anchors after a stall
  instead of bursting to catch up.
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


class FramePacer:
    """Absolute 20 ms schedule for a peer that plays frames as they arrive."""

    __slots__ = ("_anchor", "_interval", "_max_lag", "_reanchors", "_sent")

    def __init__(self, interval_s: float = 0.02, max_lag_s: float = 0.2) -> None:
        if interval_s <= 0 or max_lag_s < 0:
            raise ValueError("interval_s must be positive and max_lag_s not negative")
        self._interval = interval_s
        self._max_lag = max_lag_s
        self._anchor: float | None = None
        self._sent = 0
        self._reanchors = 0

    @property
    def interval_s(self) -> float:
        return self._interval

    @property
    def started(self) -> bool:
        return self._anchor is not None

    @property
    def frames_sent(self) -> int:
        """Frames sent since the schedule was (re)started or re-anchored."""
        return self._sent

    @property
    def reanchors(self) -> int:
        """How many times a stall longer than max_lag moved the schedule (lifetime count)."""
        return self._reanchors

    def start(self, now: float) -> None:
        """Begin a schedule whose first frame is due at `now` (call again after the queue ran dry)."""
        self._anchor = now
        self._sent = 0

    def stop(self) -> None:
        """Forget the schedule (e.g. on barge-in); the next `start` begins afresh."""
        self._anchor = None
        self._sent = 0

    def due_time(self) -> float:
        """When the next frame is due."""
        if self._anchor is None:
            raise RuntimeError("FramePacer.start() has not been called")
        return self._anchor + self._sent * self._interval

    def delay_until_due(self, now: float) -> float:
        """Seconds to wait before sending the next frame (0 when due or late).

        When the next frame is more than max_lag late, the schedule re-anchors so the frame is due
        `now`: the stalled time is lost rather than replayed as a burst.
        """
        due = self.due_time()
        if now - due > self._max_lag:
            self._anchor = now - self._sent * self._interval
            self._reanchors += 1
            return 0.0
        return max(0.0, due - now)

    def mark_sent(self) -> None:
        """Record that the frame due at `due_time()` has been written."""
        if self._anchor is None:
            raise RuntimeError("FramePacer.start() has not been called")
        self._sent += 1


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
        if self._held:
            return 0
        depth, tokens = self._advance(now)
        by_rate = math.floor(tokens + _EPSILON)
        by_queue = self._max_queue - math.ceil(depth - _EPSILON)
        return max(0, min(by_rate, by_queue))

    def time_until_allowed(self, now: float) -> float | None:
        """Seconds until one frame is allowed (0.0 if now); None while held, as only XON frees it."""
        if self._held:
            return None
        depth, tokens = self._advance(now)
        wait_rate = max(0.0, (1.0 - tokens) * self._interval / self._rate)
        wait_queue = max(0.0, (depth - (self._max_queue - 1)) * self._interval)
        wait = max(wait_rate, wait_queue)
        return wait + _WAIT_SLACK_S if wait > 0 else 0.0

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
