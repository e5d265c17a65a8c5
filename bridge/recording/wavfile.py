"""Stereo 16-bit PCM WAV files written block by block (blocking calls: run them in a thread).

The header is the canonical 44 bytes. After every block the RIFF and data sizes are rewritten from
what is on disk, so a crash loses at most the block in flight; `repair` fixes the sizes of a file a
crash left behind (from its length) or deletes one with nothing in it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from bridge.audio.formats import AudioFormat, Encoding
from bridge.audio.g711 import alaw_decode, ulaw_decode
from bridge.recording.timeline import Block

HEADER_BYTES: Final = 44
CHANNELS: Final = 2
FRAME_BYTES: Final = 4  # one stereo sample: two 16-bit values
STREAMING_SIZE: Final = 0xFFFFFFFF  # "unknown length", for a recording sent while it grows
_MAX_DATA: Final = 0xFFFFFFFF - 36
_ZEROS: Final = bytes(64 * 1024)


def header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a stereo s16le file holding `data_bytes` (STREAMING_SIZE: unknown)."""
    riff = STREAMING_SIZE if data_bytes == STREAMING_SIZE else 36 + data_bytes
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        riff,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        CHANNELS,
        sample_rate,
        sample_rate * FRAME_BYTES,
        FRAME_BYTES,
        16,
        b"data",
        data_bytes,
    )


def parse_header(raw: bytes) -> int | None:
    """The sample rate of a header this module wrote, or None if `raw` is not one."""
    if len(raw) < HEADER_BYTES:
        return None
    fields = struct.unpack("<4sI4s4sIHHIIHH4sI", raw[:HEADER_BYTES])
    riff, _, wave, fmt, fmt_size, pcm, channels, rate, _, align, bits, data, _ = fields
    if (riff, wave, fmt, data) != (b"RIFF", b"WAVE", b"fmt ", b"data"):
        return None
    if (fmt_size, pcm, channels, align, bits) != (16, 1, CHANNELS, FRAME_BYTES, 16) or rate <= 0:
        return None
    return int(rate)


def to_pcm(data: bytes, fmt: AudioFormat) -> bytes:
    if fmt.encoding is Encoding.ULAW:
        return ulaw_decode(data)
    if fmt.encoding is Encoding.ALAW:
        return alaw_decode(data)
    return data


def interleave(left: bytes, right: bytes) -> bytes:
    """Two s16le tracks of equal length as one stereo stream (left first)."""
    out = np.empty(len(left), dtype="<i2")  # len(left) bytes = 2 x samples per track
    out[0::2] = np.frombuffer(left, dtype="<i2")
    out[1::2] = np.frombuffer(right, dtype="<i2")
    return out.tobytes()


class StereoWavWriter:
    """One recording on disk. Every method blocks: call them from a worker thread."""

    def __init__(self, path: Path, fmt: AudioFormat) -> None:
        self.path = path
        self.fmt = fmt
        self.data_bytes = 0
        self._file: BinaryIO | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a call id is used once, so an existing file is never overwritten.
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._file = os.fdopen(fd, "wb")
        self._file.write(header(self.fmt.sample_rate, 0))
        self._file.flush()

    def write(self, block: Block) -> None:
        """Append `block` at its place: silence first if blocks before it were dropped."""
        f = self._file
        if f is None:
            raise RuntimeError("open() first")
        missing = block.start * FRAME_BYTES - self.data_bytes
        while missing > 0:
            chunk = _ZEROS[: min(missing, len(_ZEROS))]
            f.write(chunk)
            missing -= len(chunk)
            self.data_bytes += len(chunk)
        skip = max(0, self.data_bytes - block.start * FRAME_BYTES)  # never rewrite what is on disk
        stereo = interleave(to_pcm(block.left, self.fmt), to_pcm(block.right, self.fmt))[skip:]
        stereo = stereo[: max(0, _MAX_DATA - self.data_bytes)]
        f.write(stereo)
        self.data_bytes += len(stereo)
        self._sizes(f)

    def _sizes(self, f: BinaryIO) -> None:
        end = f.tell()
        f.seek(0)
        f.write(header(self.fmt.sample_rate, self.data_bytes))
        f.seek(end)
        f.flush()

    def close(self) -> None:
        if self._file is not None:
            self._sizes(self._file)
            self._file.close()
            self._file = None


def repair(path: Path) -> str:
    """Fix a recording's sizes from its length: "ok", "repaired" or "deleted" (empty or not ours)."""
    with open(path, "r+b") as f:
        raw = f.read(HEADER_BYTES)
        rate = parse_header(raw)
        length = f.seek(0, os.SEEK_END)
        data = min((length - HEADER_BYTES) // FRAME_BYTES * FRAME_BYTES, _MAX_DATA) if rate else 0
        if rate is not None and data > 0:
            if raw == header(rate, data) and length == HEADER_BYTES + data:
                return "ok"
            f.truncate(HEADER_BYTES + data)
            f.seek(0)
            f.write(header(rate, data))
            return "repaired"
    path.unlink(missing_ok=True)
    return "deleted"
