"""Audio formats as Asterisk names them, with the arithmetic every layer needs.

Pure: no I/O. One `AudioFormat` describes the bytes on a leg (Asterisk side) or
what a model speaks natively (provider side); comparing two tells the session
whether any transcoding or resampling is needed at all.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

PTIME_MS: Final = 20


class Encoding(enum.StrEnum):
    ULAW = "ulaw"
    ALAW = "alaw"
    SLIN = "slin"  # signed 16-bit little-endian PCM


_SILENCE_BYTE: Final = MappingProxyType({Encoding.ULAW: 0xFF, Encoding.ALAW: 0xD5, Encoding.SLIN: 0x00})


@dataclass(frozen=True, slots=True)
class AudioFormat:
    """A concrete audio format: encoding plus sample rate (always mono)."""

    name: str
    encoding: Encoding
    sample_rate: int

    @property
    def bytes_per_sample(self) -> int:
        return 2 if self.encoding is Encoding.SLIN else 1

    def bytes_for_ms(self, ms: float) -> int:
        """Whole samples' worth of bytes for `ms` milliseconds."""
        return int(self.sample_rate * ms / 1000) * self.bytes_per_sample

    def ms_for_bytes(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_sample * 1000 / self.sample_rate

    @property
    def frame_bytes(self) -> int:
        """Bytes in one 20 ms frame (Asterisk's optimal_frame_size for this format)."""
        return self.bytes_for_ms(PTIME_MS)

    @property
    def silence_byte(self) -> int:
        """The byte value of digital silence: 0xFF for µ-law, 0xD5 for A-law, 0 for signed linear."""
        return _SILENCE_BYTE[self.encoding]

    def silence(self, nbytes: int) -> bytes:
        """`nbytes` of digital silence in this format (for padding a short last frame)."""
        return bytes((self.silence_byte,)) * nbytes


ULAW: Final = AudioFormat("ulaw", Encoding.ULAW, 8000)
ALAW: Final = AudioFormat("alaw", Encoding.ALAW, 8000)
SLIN: Final = AudioFormat("slin", Encoding.SLIN, 8000)
SLIN12: Final = AudioFormat("slin12", Encoding.SLIN, 12000)
SLIN16: Final = AudioFormat("slin16", Encoding.SLIN, 16000)
SLIN24: Final = AudioFormat("slin24", Encoding.SLIN, 24000)
SLIN32: Final = AudioFormat("slin32", Encoding.SLIN, 32000)
SLIN44: Final = AudioFormat("slin44", Encoding.SLIN, 44100)
SLIN48: Final = AudioFormat("slin48", Encoding.SLIN, 48000)
SLIN96: Final = AudioFormat("slin96", Encoding.SLIN, 96000)
SLIN192: Final = AudioFormat("slin192", Encoding.SLIN, 192000)

FORMATS: Final = MappingProxyType(
    {f.name: f for f in (ULAW, ALAW, SLIN, SLIN12, SLIN16, SLIN24, SLIN32, SLIN44, SLIN48, SLIN96, SLIN192)}
)


def format_by_name(name: str) -> AudioFormat | None:
    """The format Asterisk calls `name` (`ulaw`, `slin16`, ...), or None if we do not carry it."""
    return FORMATS.get(name)


def slin_at(sample_rate: int) -> AudioFormat:
    """The signed-linear format at `sample_rate` (any rate; named like Asterisk's where one exists)."""
    for fmt in FORMATS.values():
        if fmt.encoding is Encoding.SLIN and fmt.sample_rate == sample_rate:
            return fmt
    return AudioFormat(f"slin@{sample_rate}", Encoding.SLIN, sample_rate)
