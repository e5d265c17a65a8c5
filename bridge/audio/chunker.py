"""Re-framing of a byte stream into whole frames (e.g. 20 ms of a format), keeping the remainder.

Between calls at most `frame_bytes - 1` bytes are held, so each feed copies O(len(data)) bytes and a
long stream never costs quadratic copying. When nothing is pending and the input is already whole
frames, the input object itself is returned.
"""

from __future__ import annotations


class FrameChunker:
    """Cuts arbitrary-sized input into exact multiples of `frame_bytes`."""

    __slots__ = ("_frame_bytes", "_pad_byte", "_pending")

    def __init__(self, frame_bytes: int, pad_byte: int = 0) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        if not 0 <= pad_byte <= 255:
            raise ValueError(f"pad_byte must be a byte value, got {pad_byte}")
        self._frame_bytes = frame_bytes
        self._pad_byte = pad_byte  # silence in the stream's format: 0xFF for µ-law, 0xD5 for A-law
        self._pending = bytearray()

    @property
    def frame_bytes(self) -> int:
        return self._frame_bytes

    @property
    def pending(self) -> int:
        """Bytes held back, always fewer than one frame."""
        return len(self._pending)

    def feed(self, data: bytes) -> bytes:
        """Append `data`; return the longest whole-frame prefix of everything pending (maybe b"")."""
        size = self._frame_bytes
        if not self._pending:
            whole = len(data) - len(data) % size
            if whole == len(data):
                return data
            self._pending += memoryview(data)[whole:]
            return data[:whole]
        self._pending += data
        whole = len(self._pending) - len(self._pending) % size
        if not whole:
            return b""
        out = bytes(memoryview(self._pending)[:whole])
        del self._pending[:whole]
        return out

    def feed_frames(self, data: bytes) -> list[bytes]:
        """Like `feed`, but cut into one bytes object per frame."""
        joined = self.feed(data)
        size = self._frame_bytes
        if len(joined) == size:
            return [joined]
        view = memoryview(joined)
        return [bytes(view[i : i + size]) for i in range(0, len(joined), size)]

    def take_remainder(self, pad: bool) -> bytes:
        """Return and clear the partial frame; with `pad`, fill it up to a whole frame (b"" if none)."""
        rest = bytes(self._pending)
        self._pending.clear()
        if pad and rest:
            rest += bytes((self._pad_byte,)) * (self._frame_bytes - len(rest))
        return rest

    def clear(self) -> None:
        """Drop the partial frame (e.g. on flush or barge-in)."""
        self._pending.clear()
