"""Transcoder: every combination of ulaw, alaw, slin, slin16 and slin24."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio import g711
from bridge.audio.convert import Transcoder
from bridge.audio.formats import ALAW, SLIN, SLIN16, SLIN24, ULAW, AudioFormat, Encoding, slin_at
from bridge.audio.resample import Resampler

FORMATS = [ULAW, ALAW, SLIN, SLIN16, SLIN24]
COMBINATIONS = list(itertools.product(FORMATS, FORMATS))
IDS = [f"{a.name}-{b.name}" for a, b in COMBINATIONS]


def encode(fmt: AudioFormat, pcm: bytes) -> bytes:
    if fmt.encoding is Encoding.ULAW:
        return g711.ulaw_encode(pcm)
    if fmt.encoding is Encoding.ALAW:
        return g711.alaw_encode(pcm)
    return pcm


def decode(fmt: AudioFormat, data: bytes) -> npt.NDArray[np.float64]:
    if fmt.encoding is Encoding.ULAW:
        data = g711.ulaw_decode(data)
    elif fmt.encoding is Encoding.ALAW:
        data = g711.alaw_decode(data)
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def sine_bytes(fmt: AudioFormat, freq: float, seconds: float) -> bytes:
    t = np.arange(round(fmt.sample_rate * seconds)) / fmt.sample_rate
    pcm = np.round(0.5 * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")
    return encode(fmt, pcm.tobytes())


@pytest.mark.parametrize(("src", "dst"), COMBINATIONS, ids=IDS)
def test_a_second_of_1khz_arrives_framed_and_in_tune(src: AudioFormat, dst: AudioFormat) -> None:
    transcoder = Transcoder(src, dst)
    data = sine_bytes(src, 1000, 1.0)
    step = src.frame_bytes
    outputs = [transcoder.convert(data[i : i + step]) for i in range(0, len(data), step)]
    assert {len(o) for o in outputs} == {dst.frame_bytes}

    out = decode(dst, b"".join(outputs))
    skip = int((transcoder.latency_ms + 10) * dst.sample_rate / 1000)
    body = out[skip:]
    t = np.arange(len(body)) / dst.sample_rate
    basis = np.column_stack([np.sin(2 * math.pi * 1000 * t), np.cos(2 * math.pi * 1000 * t)])
    coef, *_ = np.linalg.lstsq(basis, body, rcond=None)
    amplitude = math.hypot(coef[0], coef[1])
    residual = float(np.sqrt(np.mean((body - basis @ coef) ** 2)))
    assert amplitude == pytest.approx(0.5 * 32767, rel=0.02)
    # G.711 on either side limits the SNR to ~37 dB; linear-only paths stay near 90 dB.
    companded = Encoding.SLIN is not src.encoding or Encoding.SLIN is not dst.encoding
    floor_db = 30 if companded else 70
    assert 20 * math.log10(amplitude / math.sqrt(2) / residual) >= floor_db


@pytest.mark.parametrize(("src", "dst"), COMBINATIONS, ids=IDS)
def test_latency_and_passthrough(src: AudioFormat, dst: AudioFormat) -> None:
    transcoder = Transcoder(src, dst)
    data = sine_bytes(src, 440, 0.02)
    if src == dst:
        assert transcoder.is_passthrough
        assert transcoder.convert(data) is data
        assert transcoder.latency_ms == 0.0
        assert transcoder.flush() == b""
        return
    assert not transcoder.is_passthrough
    if src.sample_rate == dst.sample_rate:
        assert transcoder.latency_ms == 0.0
        assert transcoder.flush() == b""
    else:
        expected = Resampler(src.sample_rate, dst.sample_rate).latency_ms
        assert transcoder.latency_ms == expected
        assert 0 < transcoder.latency_ms <= 5.0


@pytest.mark.parametrize(("src", "dst"), COMBINATIONS, ids=IDS)
def test_output_is_decode_resample_encode(src: AudioFormat, dst: AudioFormat) -> None:
    data = sine_bytes(src, 700, 0.1)
    pcm = decode(src, data).astype("<i2").tobytes()
    if src.sample_rate != dst.sample_rate:
        resampler = Resampler(src.sample_rate, dst.sample_rate)
        pcm = resampler.process(pcm)
        tail = resampler.flush()
    else:
        tail = b""
    transcoder = Transcoder(src, dst)
    assert transcoder.convert(data) == encode(dst, pcm)
    assert transcoder.flush() == encode(dst, tail)


def test_slin_formats_with_different_names_but_one_rate_pass_through() -> None:
    transcoder = Transcoder(SLIN, slin_at(8000))
    assert transcoder.is_passthrough
    odd_named = Transcoder(slin_at(12000), AudioFormat("linear12", Encoding.SLIN, 12000))
    data = b"\x01\x02" * 10
    assert odd_named.is_passthrough
    assert odd_named.convert(data) is data


def test_reset_drops_resampler_history() -> None:
    data = sine_bytes(ULAW, 900, 0.02)
    transcoder = Transcoder(ULAW, SLIN24)
    first = transcoder.convert(data)
    transcoder.convert(sine_bytes(ULAW, 300, 0.02))
    transcoder.reset()
    assert transcoder.convert(data) == first
