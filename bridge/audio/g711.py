"""G.711 µ-law and A-law for s16le mono, by table lookup.

Bit-exact with the Sun/CCITT g711.c algorithm that CPython's removed `audioop` used (`lin2ulaw`,
`ulaw2lin`, `lin2alaw`, `alaw2lin`): encoding takes the top 14 (µ-law) or 13 (A-law) bits of each
sample. The tables are computed once at import with vectorised numpy and are read-only: encoding is one
lookup of 65,536 entries indexed by the sample's bit pattern, decoding one lookup of 256.
"""

from __future__ import annotations

from typing import Final, TypeVar

import numpy as np
import numpy.typing as npt

_Code = TypeVar("_Code", np.uint8, np.int16)

_SEG_ULAW_END: Final = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
_SEG_ALAW_END: Final = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
_ULAW_BIAS: Final = 0x84
_ULAW_CLIP_14BIT: Final = 8159
ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5


def _every_sample() -> npt.NDArray[np.int32]:
    """All int16 values, in the order of their bit patterns read as uint16 (0, 1, ..., -1)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    value = _every_sample() >> 2
    negative = value < 0
    magnitude = np.minimum(np.abs(value), _ULAW_CLIP_14BIT) + (_ULAW_BIAS >> 2)
    segment = np.searchsorted(np.array(_SEG_ULAW_END), magnitude).astype(np.int32)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> (np.minimum(segment, 7) + 1)) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return np.asarray(code ^ np.where(negative, 0x7F, 0xFF), dtype=np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    value = _every_sample() >> 3
    negative = value < 0
    magnitude = np.where(negative, -value - 1, value)
    segment = np.searchsorted(np.array(_SEG_ALAW_END), magnitude).astype(np.int32)
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    return np.asarray(code ^ np.where(negative, 0x55, 0xD5), dtype=np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    inverted = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + _ULAW_BIAS) << ((inverted & 0x70) >> 4)
    sample = np.where(inverted & 0x80, _ULAW_BIAS - magnitude, magnitude - _ULAW_BIAS)
    return np.asarray(sample, dtype="<i2")


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    toggled = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (toggled & 0x70) >> 4
    mantissa = (toggled & 0x0F) << 4
    magnitude = np.where(segment == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(segment - 1, 0))
    sample = np.where(toggled & 0x80, magnitude, -magnitude)
    return np.asarray(sample, dtype="<i2")


def _frozen(table: npt.NDArray[_Code]) -> npt.NDArray[_Code]:
    table.flags.writeable = False
    return table


ULAW_ENCODE_TABLE: Final = _frozen(_build_ulaw_encode())
ALAW_ENCODE_TABLE: Final = _frozen(_build_alaw_encode())
ULAW_DECODE_TABLE: Final = _frozen(_build_ulaw_decode())
ALAW_DECODE_TABLE: Final = _frozen(_build_alaw_decode())
# Code-to-code tables for bytes.translate: the same as decoding with one law and encoding with the other.
ULAW_TO_ALAW: Final = ALAW_ENCODE_TABLE[ULAW_DECODE_TABLE.view(np.uint16)].tobytes()
ALAW_TO_ULAW: Final = ULAW_ENCODE_TABLE[ALAW_DECODE_TABLE.view(np.uint16)].tobytes()


def _samples(pcm: bytes) -> npt.NDArray[np.uint16]:
    if len(pcm) % 2:
        raise ValueError(f"s16le input must have an even length, got {len(pcm)} bytes")
    return np.frombuffer(pcm, dtype="<u2")


def ulaw_encode(pcm: bytes) -> bytes:
    """s16le samples to µ-law codes (one byte per sample)."""
    return ULAW_ENCODE_TABLE[_samples(pcm)].tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """s16le samples to A-law codes (one byte per sample)."""
    return ALAW_ENCODE_TABLE[_samples(pcm)].tobytes()


def ulaw_decode(codes: bytes) -> bytes:
    """µ-law codes to s16le samples."""
    return ULAW_DECODE_TABLE[np.frombuffer(codes, dtype=np.uint8)].tobytes()


def alaw_decode(codes: bytes) -> bytes:
    """A-law codes to s16le samples."""
    return ALAW_DECODE_TABLE[np.frombuffer(codes, dtype=np.uint8)].tobytes()


def ulaw_to_alaw(codes: bytes) -> bytes:
    """µ-law codes to A-law codes, equal to `alaw_encode(ulaw_decode(codes))`."""
    return codes.translate(ULAW_TO_ALAW)


def alaw_to_ulaw(codes: bytes) -> bytes:
    """A-law codes to µ-law codes, equal to `ulaw_encode(alaw_decode(codes))`."""
    return codes.translate(ALAW_TO_ULAW)
