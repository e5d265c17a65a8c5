"""G.711 tables against a slow pure-Python transcription of g711.c (the algorithm audioop used)."""

from __future__ import annotations

import math
import struct
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np
import pytest

from bridge.audio import g711

Codec = Callable[[bytes], bytes]
SEG_ULAW_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
SEG_ALAW_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
ALL_SAMPLES = range(-32768, 32768)
ALL_PCM = struct.pack("<65536h", *ALL_SAMPLES)
ALL_CODES = bytes(range(256))


def _segment(value: int, ends: tuple[int, ...]) -> int:
    for index, end in enumerate(ends):
        if value <= end:
            return index
    return len(ends)


def ref_linear2ulaw(sample: int) -> int:
    """g711.c linear2ulaw on the top 14 bits (audioop's st_14linear2ulaw(sample >> 2))."""
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + (0x84 >> 2)
    seg = _segment(value, SEG_ULAW_END)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((value >> (seg + 1)) & 0x0F)) ^ mask


def ref_ulaw2linear(code: int) -> int:
    inverted = ~code & 0xFF
    magnitude = (((inverted & 0x0F) << 3) + 0x84) << ((inverted & 0x70) >> 4)
    return 0x84 - magnitude if inverted & 0x80 else magnitude - 0x84


def ref_linear2alaw(sample: int) -> int:
    """g711.c linear2alaw on the top 13 bits (audioop's st_linear2alaw(sample >> 3))."""
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    seg = _segment(value, SEG_ALAW_END)
    if seg >= 8:
        return 0x7F ^ mask
    quant = (value >> 1) if seg < 2 else (value >> seg)
    return ((seg << 4) | (quant & 0x0F)) ^ mask


def ref_alaw2linear(code: int) -> int:
    toggled = code ^ 0x55
    mantissa = (toggled & 0x0F) << 4
    seg = (toggled & 0x70) >> 4
    if seg == 0:
        magnitude = mantissa + 8
    elif seg == 1:
        magnitude = mantissa + 0x108
    else:
        magnitude = (mantissa + 0x108) << (seg - 1)
    return magnitude if toggled & 0x80 else -magnitude


def test_ulaw_encode_matches_reference_on_every_sample() -> None:
    assert g711.ulaw_encode(ALL_PCM) == bytes(ref_linear2ulaw(s) for s in ALL_SAMPLES)


def test_alaw_encode_matches_reference_on_every_sample() -> None:
    assert g711.alaw_encode(ALL_PCM) == bytes(ref_linear2alaw(s) for s in ALL_SAMPLES)


def test_ulaw_decode_matches_reference_on_every_code() -> None:
    assert g711.ulaw_decode(ALL_CODES) == struct.pack("<256h", *map(ref_ulaw2linear, ALL_CODES))


def test_alaw_decode_matches_reference_on_every_code() -> None:
    assert g711.alaw_decode(ALL_CODES) == struct.pack("<256h", *map(ref_alaw2linear, ALL_CODES))


def test_reference_spot_values_from_the_standard() -> None:
    # Known fixed points: µ-law 0xFF/0x7F are +/-0, 0x80/0x00 are +/-32124; A-law 0xD5/0x55 are +/-8.
    assert [ref_ulaw2linear(c) for c in (0xFF, 0x7F, 0x80, 0x00)] == [0, 0, 32124, -32124]
    assert [ref_alaw2linear(c) for c in (0xD5, 0x55, 0xAA, 0x2A)] == [8, -8, 32256, -32256]
    assert g711.ulaw_encode(struct.pack("<h", 0)) == b"\xff"
    assert g711.alaw_encode(struct.pack("<h", 0)) == b"\xd5"


def _audioop() -> ModuleType | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import audioop
        except ImportError:  # Python 3.13+
            return None
    return audioop


def test_matches_audioop_where_it_still_exists() -> None:
    audioop = _audioop()
    if audioop is None:
        pytest.skip("audioop was removed in Python 3.13")
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_code_to_code_equals_decode_then_encode() -> None:
    assert g711.ulaw_to_alaw(ALL_CODES) == g711.alaw_encode(g711.ulaw_decode(ALL_CODES))
    assert g711.alaw_to_ulaw(ALL_CODES) == g711.ulaw_encode(g711.alaw_decode(ALL_CODES))


def test_decoded_codes_reencode_to_themselves() -> None:
    assert g711.alaw_encode(g711.alaw_decode(ALL_CODES)) == ALL_CODES
    # µ-law has two zeros; -0 (0x7F) comes back as +0 (0xFF).
    expected = ALL_CODES.replace(b"\x7f", b"\xff")
    assert g711.ulaw_encode(g711.ulaw_decode(ALL_CODES)) == expected


def _round_trip_snr_db(encode: Codec, decode: Codec) -> float:
    t = np.arange(8000) / 8000
    sine = np.round(0.5 * 32767 * np.sin(2 * math.pi * 1013 * t)).astype("<i2")
    back = np.frombuffer(decode(encode(sine.tobytes())), dtype="<i2").astype(np.float64)
    error = back - sine
    return float(10 * np.log10(np.sum(sine.astype(np.float64) ** 2) / np.sum(error**2)))


def test_round_trip_snr_is_the_textbook_g711_figure() -> None:
    # audio-measurements.md §4: 1013 Hz at -6 dBFS gives 36.7 dB (µ-law) and 38.8 dB (A-law).
    assert _round_trip_snr_db(g711.ulaw_encode, g711.ulaw_decode) == pytest.approx(36.7, abs=0.5)
    assert _round_trip_snr_db(g711.alaw_encode, g711.alaw_decode) == pytest.approx(38.8, abs=0.5)


def test_lengths_and_empty_input() -> None:
    assert g711.ulaw_encode(b"") == b""
    assert g711.alaw_decode(b"") == b""
    assert len(g711.ulaw_encode(bytes(320))) == 160
    assert len(g711.alaw_decode(bytes(160))) == 320


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(ValueError, match="even length"):
        g711.ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="even length"):
        g711.alaw_encode(b"\x00")


def test_tables_are_read_only() -> None:
    for table in (g711.ULAW_ENCODE_TABLE, g711.ALAW_ENCODE_TABLE):
        with pytest.raises(ValueError, match="read-only"):
            table[0] = 1
    for decode_table in (g711.ULAW_DECODE_TABLE, g711.ALAW_DECODE_TABLE):
        with pytest.raises(ValueError, match="read-only"):
            decode_table[0] = 1
    assert g711.ULAW_ENCODE_TABLE.shape == (65536,)
    assert g711.ULAW_DECODE_TABLE.shape == (256,)
