"""G.711 µ-law and A-law for the simulated Asterisk, written independently of `bridge.audio`.

The fake Asterisk must not share a codec with the bridge: a bug in one would be hidden by the same bug
in the other. This is the classic segment/quantisation algorithm of ITU-T G.711 (the form used by
Sun's reference `g711.c`, and therefore by sox and CPython's old `audioop`), evaluated once for every
possible input into read-only lookup tables.

All functions take and return little-endian signed 16-bit PCM as `numpy.int16` arrays, and G.711 as
`bytes`.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

Int16Array = npt.NDArray[np.int16]

_QUANT_MASK: Final = 0x0F
_SEG_SHIFT: Final = 4
_SEG_MASK: Final = 0x70
_SIGN_BIT: Final = 0x80
_ULAW_BIAS: Final = 0x84
_ULAW_CLIP: Final = 8159  # in the 14-bit domain
_ULAW_SEG_END: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)

ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5


def _all_int16() -> npt.NDArray[np.int32]:
    return np.arange(-32768, 32768, dtype=np.int32)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    """Code for every int16, indexed by the int16's bit pattern read as uint16."""
    pcm = _all_int16() >> 2
    negative = pcm < 0
    mag = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    mask = np.where(negative, 0x7F, 0xFF)
    value = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & _QUANT_MASK)
    value = np.where(seg >= 8, 0x7F, value)
    codes = (value ^ mask).astype(np.uint8)
    return _by_bit_pattern(codes)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    pcm = _all_int16() >> 3
    negative = pcm < 0
    mag = np.where(negative, -pcm - 1, pcm)
    mask = np.where(negative, 0x55, 0xD5)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    segc = np.minimum(seg, 7)
    quant = np.where(segc < 2, mag >> 1, mag >> np.maximum(segc, 1)) & _QUANT_MASK
    value = np.where(seg >= 8, 0x7F, (segc << _SEG_SHIFT) | quant)
    codes = (value ^ mask).astype(np.uint8)
    return _by_bit_pattern(codes)


def _by_bit_pattern(codes_for_minus32768_up: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    # codes[i] belongs to int16 value i - 32768; reorder so index == uint16 bit pattern of the value.
    table = np.roll(codes_for_minus32768_up, 32768)
    table.setflags(write=False)
    return table


def _ulaw_decode_table() -> Int16Array:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    t = ((u & _QUANT_MASK) << 3) + _ULAW_BIAS
    t = t << ((u & _SEG_MASK) >> _SEG_SHIFT)
    out = np.where(u & _SIGN_BIT, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)
    out.setflags(write=False)
    return out


def _alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & _QUANT_MASK) << 4
    seg = (a & _SEG_MASK) >> _SEG_SHIFT
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    out = np.where(a & _SIGN_BIT, t, -t).astype(np.int16)
    out.setflags(write=False)
    return out


_ULAW_ENC: Final = _ulaw_encode_table()
_ALAW_ENC: Final = _alaw_encode_table()
_ULAW_DEC: Final = _ulaw_decode_table()
_ALAW_DEC: Final = _alaw_decode_table()


def ulaw_encode(pcm: Int16Array) -> bytes:
    return _ULAW_ENC[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def alaw_encode(pcm: Int16Array) -> bytes:
    return _ALAW_ENC[np.asarray(pcm, dtype=np.int16).view(np.uint16)].tobytes()


def ulaw_decode(data: bytes) -> Int16Array:
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes) -> Int16Array:
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)]
