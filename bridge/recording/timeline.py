"""Where each piece of a call's audio lands in its stereo recording (pure: times are passed in).

Positions are samples since the call's clock started (the leg's format was known). The caller track
takes frames in the order they arrived; a gap longer than `gap_s` between the clock and the track
(the caller sent nothing for a while) is filled with silence, while shorter lateness (a busy event
loop reading a burst) is not, so a stall never shifts the rest of the call. The bot track models
Asterisk's playout: audio handed to the leg plays right after what is queued, or now if nothing is;
a barge-in cuts the track where the leg says the caller stopped hearing it. Only audio at least
`hold_s` in the past is committed, so a late caller frame or a cut still lands before it is written.
Buffers hold leg-format bytes (µ-law/A-law are decoded by the writer, off the event loop).
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.audio.formats import AudioFormat


@dataclass(frozen=True, slots=True)
class Block:
    """Both tracks over the same span: samples [start, start + len(left) / bytes_per_sample)."""

    start: int
    left: bytes
    right: bytes


class StereoTimeline:
    def __init__(
        self,
        fmt: AudioFormat,
        origin: float,
        *,
        hold_s: float = 0.4,
        gap_s: float = 1.0,  # Asterisk sends caller audio without pause: a shorter gap is our stall
        max_ahead_s: float = 120.0,
    ) -> None:
        self.fmt = fmt
        self.origin = origin
        self._rate, self._width = fmt.sample_rate, fmt.bytes_per_sample
        self._hold, self._gap = round(hold_s * self._rate), round(gap_s * self._rate)
        self._max_ahead = round(max_ahead_s * self._rate)
        self._silence = fmt.silence(1)
        self.written = 0  # samples committed; both buffers start here
        self._left = bytearray()
        self._right = bytearray()
        self._response_start: int | None = None  # where the latest response's first sample plays
        self._response_open = False
        self.bot_dropped_bytes = 0  # model audio more than max_ahead_s ahead of playout

    def position(self, t: float) -> int:
        return max(0, round((t - self.origin) * self._rate))

    @property
    def left_end(self) -> int:
        return self.written + len(self._left) // self._width

    @property
    def right_end(self) -> int:
        return self.written + len(self._right) // self._width

    @property
    def buffered_bytes(self) -> int:
        return len(self._left) + len(self._right)

    def _pad(self, track: bytearray, to: int) -> None:
        missing = to - self.written - len(track) // self._width
        if missing > 0:
            track += self._silence * (missing * self._width)

    def caller(self, data: bytes, received_at: float) -> None:
        """A caller frame read at `received_at` (its last sample arrived then)."""
        n = len(data) // self._width
        at = self.position(received_at) - n
        if at > self.left_end + self._gap:
            self._pad(self._left, at)
        self._left += data[: n * self._width]

    def bot(self, data: bytes, now: float) -> None:
        """Model audio handed to the leg at `now`."""
        n = len(data) // self._width
        start = max(self.right_end, self.position(now))
        if start + n - self.position(now) > self._max_ahead:
            self.bot_dropped_bytes += len(data)
            return
        self._pad(self._right, start)
        if not self._response_open:
            self._response_start, self._response_open = start, True
        self._right += data[: n * self._width]

    def end_response(self) -> None:
        self._response_open = False

    def interrupt(self, played_ms: float | None, now: float) -> None:
        """The leg flushed all but `played_ms` of the latest response (None: all but what played by
        `now`): the rest never played."""
        cut = min(self.right_end, self.position(now))
        if self._response_start is not None and played_ms is not None:
            cut = min(cut, self._response_start + round(played_ms * self._rate / 1000))
        cut = max(cut, self.written)
        del self._right[(cut - self.written) * self._width :]
        self._response_open = False

    def commit(self, now: float, *, final: bool = False) -> Block | None:
        """Both tracks up to `hold_s` before `now` (everything heard by `now` if `final`), or None."""
        if final:
            self.interrupt(None, now)  # audio still queued at the end was never heard
            end = max(self.left_end, self.right_end)
        else:
            end = self.position(now) - self._hold
        if end <= self.written:
            return None
        self._pad(self._left, end)
        self._pad(self._right, end)
        size = (end - self.written) * self._width
        block = Block(self.written, bytes(self._left[:size]), bytes(self._right[:size]))
        del self._left[:size], self._right[:size]
        self.written = end
        return block
