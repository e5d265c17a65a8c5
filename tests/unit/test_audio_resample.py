"""Streaming resampler: length, frequency, distortion, alias rejection, latency, statefulness."""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.resample import Resampler

F64 = npt.NDArray[np.float64]
TELEPHONY_PAIRS = [(8000, 16000), (8000, 24000), (16000, 24000)]
PAIRS = [
    *TELEPHONY_PAIRS,
    *[(b, a) for a, b in TELEPHONY_PAIRS],
    (8000, 48000),
    (48000, 8000),
    (16000, 48000),
    (48000, 16000),
]
DOWN_PAIRS = [(a, b) for a, b in PAIRS if b < a]


def tone(rate: int, freq: float, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return np.round(amplitude * 32767 * np.sin(2 * math.pi * freq * t)).astype("<i2")


def in_frames(resampler: Resampler, pcm: npt.NDArray[np.int16], frame_ms: int = 20) -> list[bytes]:
    step = resampler.in_rate * frame_ms // 1000
    return [resampler.process(pcm[i : i + step].tobytes()) for i in range(0, len(pcm), step)]


def samples(data: bytes) -> F64:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def sine_fit(signal: F64, rate: int, freq: float) -> tuple[float, float]:
    """(amplitude, residual rms) of the least-squares sine at `freq` (plus DC) through `signal`."""
    t = np.arange(len(signal)) / rate
    basis = np.column_stack([np.sin(2 * math.pi * freq * t), np.cos(2 * math.pi * freq * t), np.ones_like(t)])
    coef, *_ = np.linalg.lstsq(basis, signal, rcond=None)
    residual = signal - basis @ coef
    return float(math.hypot(coef[0], coef[1])), float(np.sqrt(np.mean(residual**2)))


def settled(resampler: Resampler, out: F64) -> F64:
    """Drop the start-up transient: the filter delay plus a margin."""
    skip = int((resampler.latency_ms + 10) * resampler.out_rate / 1000)
    return out[skip:]


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_sine_in_20ms_frames_keeps_length_frequency_and_purity(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    outputs = in_frames(resampler, tone(in_rate, 1000, 1.0))
    # Every 20 ms frame yields exactly 20 ms, so one second is exactly one second.
    assert {len(o) for o in outputs} == {out_rate // 50 * 2}
    out = samples(b"".join(outputs))
    assert len(out) == out_rate

    body = settled(resampler, out)
    spectrum = np.abs(np.fft.rfft(body * np.hanning(len(body))))
    peak_hz = np.argmax(spectrum) * out_rate / len(body)
    assert peak_hz == pytest.approx(1000, abs=out_rate / len(body))

    amplitude, residual = sine_fit(body, out_rate, 1000)
    assert amplitude == pytest.approx(0.5 * 32767, rel=0.001)  # flat passband, unity gain
    sinad_db = 20 * math.log10(amplitude / math.sqrt(2) / residual)
    # The brief's floor is 40 dB; a band-limited resampler without seams at frame edges gets ~90.
    assert sinad_db >= 70


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_top_of_telephone_band_is_flat(in_rate: int, out_rate: int) -> None:
    edge_hz = 0.85 * min(in_rate, out_rate) / 2  # 3.4 kHz on 8 kHz legs
    resampler = Resampler(in_rate, out_rate)
    out = settled(resampler, samples(b"".join(in_frames(resampler, tone(in_rate, edge_hz, 0.5)))))
    amplitude, residual = sine_fit(out, out_rate, edge_hz)
    assert 20 * math.log10(amplitude / (0.5 * 32767)) == pytest.approx(0, abs=0.05)
    # On upsampling the residual is the images the filter failed to remove.
    assert 20 * math.log10(amplitude / math.sqrt(2) / residual) >= 60


@pytest.mark.parametrize(("in_rate", "out_rate"), DOWN_PAIRS)
@pytest.mark.parametrize("times_nyquist", [1.03, 1.25, 1.6])
def test_tones_above_the_target_nyquist_are_rejected(
    in_rate: int, out_rate: int, times_nyquist: float
) -> None:
    freq = min(times_nyquist * out_rate / 2, 0.95 * in_rate / 2)
    pcm = tone(in_rate, freq, 0.5)
    resampler = Resampler(in_rate, out_rate)
    out = settled(resampler, samples(b"".join(in_frames(resampler, pcm))))
    leaked_rms = float(np.sqrt(np.mean(out**2)))
    in_rms = 0.5 * 32767 / math.sqrt(2)
    # Whatever comes out is an alias (plus rounding noise, ~0.3 LSB rms).
    assert 20 * math.log10(in_rms / max(leaked_rms, 1e-9)) >= 60


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_latency_matches_the_measured_impulse_shift(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    assert resampler.latency_ms <= 5.0  # the per-direction budget
    pcm = np.zeros(in_rate // 5, dtype="<i2")
    at = in_rate // 10
    pcm[at] = 20000
    energy = samples(b"".join(in_frames(resampler, pcm))) ** 2
    centroid = float(np.sum(np.arange(len(energy)) * energy) / np.sum(energy))
    shift_ms = (centroid / out_rate - at / in_rate) * 1000
    assert shift_ms == pytest.approx(resampler.latency_ms, abs=0.5)
    assert shift_ms > 0.5  # a real delay was measured, not an empty output


@settings(max_examples=40, deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    cuts=st.lists(st.integers(min_value=0, max_value=2400), max_size=30),
    seed=st.integers(0, 2**16),
)
def test_any_chunking_gives_the_one_shot_output(pair: tuple[int, int], cuts: list[int], seed: int) -> None:
    in_rate, out_rate = pair
    pcm = (np.random.default_rng(seed).standard_normal(2400) * 4000).astype("<i2")
    whole = Resampler(in_rate, out_rate)
    expected = whole.process(pcm.tobytes()) + whole.flush()

    chunked = Resampler(in_rate, out_rate)
    pieces = []
    bounds = [0, *sorted(cuts), len(pcm)]
    for start, end in itertools.pairwise(bounds):
        predicted = chunked.output_samples_for(end - start)
        piece = chunked.process(pcm[start:end].tobytes())
        assert len(piece) == 2 * predicted
        pieces.append(piece)
    assert b"".join(pieces) + chunked.flush() == expected


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 16000), (16000, 8000)])
def test_long_streams_of_odd_chunks_do_not_drift(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    total_in = total_out = 0
    for size in [7, 333, 1, 160, 479, 2, 999] * 300:
        total_in += size
        total_out += len(resampler.process(bytes(2 * size))) // 2
        assert total_out == math.ceil(total_in * out_rate / in_rate)


def test_flush_releases_the_delayed_tail_then_starts_afresh() -> None:
    resampler = Resampler(8000, 24000)
    pcm = np.zeros(160, dtype="<i2")
    pcm[-1] = 20000  # an impulse in the last sample is still inside the filter
    body = samples(resampler.process(pcm.tobytes()))
    tail = samples(resampler.flush())
    assert np.abs(body).max() < 0.5 * np.abs(tail).max()
    assert len(tail) * 1000 / 24000 >= resampler.latency_ms
    again = Resampler(8000, 24000).process(pcm.tobytes())
    assert resampler.process(pcm.tobytes()) == again


def test_flush_with_nothing_fed_adds_no_silence() -> None:
    resampler = Resampler(24000, 8000)
    assert resampler.flush() == b""
    resampler.process(bytes(960))
    assert len(resampler.flush()) > 0
    assert resampler.flush() == b""  # the first flush reset the stream


def test_reset_forgets_history() -> None:
    noise = (np.random.default_rng(3).standard_normal(480) * 5000).astype("<i2").tobytes()
    resampler = Resampler(24000, 8000)
    resampler.process(noise)
    resampler.reset()
    assert resampler.process(noise) == Resampler(24000, 8000).process(noise)


def test_full_scale_square_wave_clips_instead_of_wrapping() -> None:
    square = np.where(np.sin(2 * math.pi * 500 * np.arange(8000) / 8000) >= 0, 32767, -32768)
    out = samples(Resampler(8000, 24000).process(square.astype("<i2").tobytes()))
    assert out.max() == 32767  # the overshoot hit the rail
    assert np.abs(np.diff(out)).max() < 40000  # a wrap-around would jump by ~65535


def test_equal_rates_pass_through_without_delay() -> None:
    resampler = Resampler(16000, 16000)
    data = bytes(range(200))
    assert resampler.process(data) is data
    assert resampler.latency_ms == 0.0
    assert resampler.flush() == b""


def test_invalid_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="even length"):
        Resampler(8000, 16000).process(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 16000)
    with pytest.raises(ValueError, match="polyphase"):
        Resampler(8000, 8001 * 7)
    assert Resampler(8000, 16000).process(b"") == b""
