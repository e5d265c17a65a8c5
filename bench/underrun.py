"""Telling underruns from natural silence at the simulated Asterisk's playout clock.

A *dry tick* is a 20 ms playout tick at which the channel's queue held no frame (and playout was not
paused). It is an *underrun* when the bot had audio to play and it had not arrived; otherwise it is the
silence between replies. Two ways to know, depending on what the generator can see:

- Echo (frames matchable by their sequence marks): frame k of the caller is due back when frame k + 10
  reached the bridge (the echo's delay). A dry tick at time T is an underrun when some frame was due
  before T and arrived after T. Frames that never arrive (dropped by the echo on a barge-in, by design)
  do not make underruns; they are counted as `lost`.
- Any provider on chan_websocket (frames not matchable): the bridge brackets each reply in
  START_MEDIA_BUFFERING ... STOP_MEDIA_BUFFERING, and Asterisk answers MEDIA_BUFFERING_COMPLETED when
  the bracket's end is played. A dry tick between the first played frame of a reply and that event (or
  a FLUSH_MEDIA, which ends the reply on purpose) is an underrun.

Pure: the load generator feeds `ReplyTracker` from its channel model and calls the functions below.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class ReplyTracker:
    """Follows reply brackets and playout of one chan_websocket channel; keeps every dry tick as
    (monotonic time, whether a reply was playing)."""

    __slots__ = ("dry", "open_replies", "paused", "playing")

    def __init__(self) -> None:
        self.open_replies = 0  # START_MEDIA_BUFFERING received, MEDIA_BUFFERING_COMPLETED not yet sent
        self.playing = False  # the oldest open reply has played a frame
        self.paused = False
        self.dry: list[tuple[float, bool]] = []

    def command(self, name: str) -> None:
        if name == "START_MEDIA_BUFFERING":
            self.open_replies += 1
        elif name == "FLUSH_MEDIA":  # the queue and its bracket markers are gone: the reply was cut
            self.open_replies = 0
            self.playing = False
        elif name == "PAUSE_MEDIA":
            self.paused = True
        elif name == "CONTINUE_MEDIA":
            self.paused = False

    def completed(self, replies: int = 1) -> None:
        """MEDIA_BUFFERING_COMPLETED fired: that reply's audio has all played."""
        self.open_replies = max(0, self.open_replies - replies)
        self.playing = False

    def played(self) -> None:
        if self.open_replies:
            self.playing = True

    def dry_tick(self, t: float) -> None:
        if not self.paused:
            self.dry.append((t, self.playing))


@dataclass(frozen=True, slots=True)
class DryTicks:
    underruns: int
    silence: int


def classify_by_reply(dry: Iterable[tuple[float, bool]]) -> DryTicks:
    """Dry ticks inside a playing reply are underruns, the rest silence."""
    flags = [inside for _, inside in dry]
    under = sum(flags)
    return DryTicks(under, len(flags) - under)


def late_intervals(
    sent: Sequence[float], arrivals: Mapping[int, float], delay_frames: int
) -> list[tuple[float, float]]:
    """(due, arrival) of every echoed frame that arrived after it was due; frame k is due when frame
    k + `delay_frames` was sent (`sent[k]`: when the caller's frame k went out)."""
    out: list[tuple[float, float]] = []
    for k, arrived in arrivals.items():
        j = k + delay_frames
        if 0 <= j < len(sent) and arrived > sent[j]:
            out.append((sent[j], arrived))
    return out


def merge_intervals(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def classify_marked(dry_times: Sequence[float], late: Iterable[tuple[float, float]]) -> DryTicks:
    """A dry tick at T is an underrun when T lies strictly inside some (due, arrival) interval."""
    merged = merge_intervals(late)
    starts = [lo for lo, _ in merged]
    under = 0
    for t in dry_times:
        i = bisect.bisect_left(starts, t) - 1  # the last interval starting strictly before t
        if i >= 0 and t < merged[i][1]:
            under += 1
    return DryTicks(under, len(dry_times) - under)


def dry_slots(played: Sequence[tuple[int, int]]) -> list[int]:
    """Empty 20 ms slots between the first and last audio on a timeline of (slot, frames) entries in slot
    order (AudioSocket: a message of n frames occupies n slots from where it started playing)."""
    out: list[int] = []
    busy_until: int | None = None
    for slot, frames in played:
        if busy_until is not None and slot > busy_until:
            out.extend(range(busy_until, slot))
        end = slot + max(1, frames)
        busy_until = end if busy_until is None else max(busy_until, end)
    return out
