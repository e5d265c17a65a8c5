"""The fake Asterisk's own audio helpers: G.711, the test signal, resampling, WAV, timeline, stats."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio.formats import ALAW, SLIN, SLIN16, SLIN24, ULAW, AudioFormat
from bridge.simulate import g711
from bridge.simulate.audio_source import (
    decode_from_leg,
    leg_frames,
    read_wav,
    resample,
    silence_frame,
    speech_like_signal,
    write_wav,
)
from bridge.simulate.summary import ArrivalStats, Timeline

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def _audioop() -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        mod: ModuleType = pytest.importorskip("audioop")
    return mod


def test_g711_matches_the_reference_implementation_for_every_sample() -> None:
    ref = _audioop()  # CPython's C implementation of the same Sun reference code: an independent oracle
    pcm = ALL_INT16.tobytes()
    assert g711.ulaw_encode(ALL_INT16) == ref.lin2ulaw(pcm, 2)
    assert g711.alaw_encode(ALL_INT16) == ref.lin2alaw(pcm, 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tobytes() == ref.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == ref.alaw2lin(codes, 2)


def test_g711_known_values_and_round_trip() -> None:
    assert g711.ulaw_encode(np.array([0, 32767, -32768], dtype=np.int16)) == b"\xff\x80\x00"
    assert g711.alaw_encode(np.array([0, -1], dtype=np.int16)) == b"\xd5\x55"
    assert g711.ulaw_decode(b"\xff\x7f").tolist() == [0, 0]
    assert g711.alaw_decode(b"\xd5\x55").tolist() == [8, -8]
    codes = bytes(range(256))
    again = g711.ulaw_encode(g711.ulaw_decode(codes))
    assert [i for i in range(256) if again[i] != i] == [0x7F]  # µ-law's negative zero comes back positive
    assert g711.alaw_encode(g711.alaw_decode(codes)) == codes
    wide = ALL_INT16.astype(np.int32)
    for enc, dec in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        error = np.abs(dec(enc(ALL_INT16)).astype(np.int32) - wide)
        assert np.all(error <= np.maximum(16, np.abs(wide) // 16))  # about 6 % at most: log companding


def _rms(x: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0


def test_speech_like_signal_is_voiced_with_pauses_and_deterministic() -> None:
    rate = 16000
    sig = speech_like_signal(rate, 8.0, seed=3)
    assert sig.dtype == np.int16
    assert sig.size == 8 * rate
    assert sig.size == speech_like_signal(rate, 8.0, seed=3).size
    assert np.array_equal(sig, speech_like_signal(rate, 8.0, seed=3))
    assert not np.array_equal(sig, speech_like_signal(rate, 8.0, seed=4))
    windows = sig[: sig.size // 3200 * 3200].reshape(-1, 3200)  # 200 ms windows
    levels = np.array([_rms(w) for w in windows])
    assert (levels > 1500).mean() > 0.4  # mostly talking
    assert (levels < 100).sum() >= 3  # with real pauses between phrases
    assert int(np.abs(sig).max()) < 32000  # never clips
    loud = windows[int(np.argmax(levels))].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(loud * np.hanning(loud.size)))
    freqs = np.fft.rfftfreq(loud.size, 1 / rate)
    assert 80 < freqs[np.argmax(spectrum)] < 2000  # energy in the voice band, harmonic
    envelope = np.array([_rms(c) for c in np.array_split(sig[: 4 * rate], 4 * 50)])  # 20 ms frames
    modulation = np.abs(np.fft.rfft(envelope - envelope.mean()))
    mod_freqs = np.fft.rfftfreq(envelope.size, 0.020)
    assert 1.0 < mod_freqs[np.argmax(modulation)] < 12.0  # syllable-rate amplitude modulation


def test_speech_like_signal_triggers_webrtc_vad() -> None:
    vad_mod = pytest.importorskip("webrtcvad")
    vad = vad_mod.Vad(2)
    sig = speech_like_signal(8000, 6.0, seed=1)
    frames = [sig[i : i + 160] for i in range(0, sig.size - 160, 160)]
    voiced = [f for f in frames if _rms(f) > 1500]
    silent = [f for f in frames if _rms(f) < 50]
    assert voiced
    assert silent
    assert np.mean([vad.is_speech(f.tobytes(), 8000) for f in voiced]) > 0.8
    assert np.mean([vad.is_speech(f.tobytes(), 8000) for f in silent]) < 0.2


@pytest.mark.parametrize(("src", "dst"), [(48000, 8000), (8000, 24000), (16000, 16000), (44100, 16000)])
def test_resample_keeps_a_tone_and_the_duration(src: int, dst: int) -> None:
    t = np.arange(src) / src
    tone = (8000 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    out = resample(tone, src, dst)
    assert out.size == dst
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64)))
    assert abs(np.fft.rfftfreq(out.size, 1 / dst)[np.argmax(spectrum)] - 1000) < 2
    assert 0.9 < _rms(out[dst // 10 : -dst // 10]) / _rms(tone) < 1.1


def test_downsampling_removes_what_the_new_rate_cannot_carry() -> None:
    t = np.arange(48000) / 48000
    high = (8000 * np.sin(2 * np.pi * 6000 * t)).astype(np.int16)  # above 4 kHz Nyquist of 8 kHz
    assert _rms(resample(high, 48000, 8000)[800:-800]) < 0.05 * _rms(high)


@pytest.mark.parametrize("fmt", [ULAW, ALAW, SLIN, SLIN16, SLIN24])
def test_leg_frames_are_whole_20ms_frames_in_the_leg_encoding(fmt: AudioFormat) -> None:
    samples = speech_like_signal(16000, 1.01, seed=2)
    frames = leg_frames(samples, 16000, fmt)
    assert len(frames) == 51  # 1.01 s: 50 whole frames and a short one, as Asterisk ends a file
    assert {len(f) for f in frames[:-1]} == {fmt.frame_bytes}
    assert len(frames[-1]) == fmt.frame_bytes // 2
    decoded = decode_from_leg(b"".join(frames), fmt)
    assert decoded.size == round(1.01 * fmt.sample_rate)
    assert _rms(decoded) > 1000
    assert max(abs(v) for v in decode_from_leg(silence_frame(fmt), fmt).tolist()) <= 8  # A-law has no 0


def test_wav_round_trip(tmp_path: Path) -> None:
    pcm = speech_like_signal(24000, 0.5, seed=5)
    path = tmp_path / "x.wav"
    write_wav(path, pcm.tobytes(), 24000)
    back, rate = read_wav(path)
    assert rate == 24000
    assert np.array_equal(back, pcm)


def test_timeline_places_ticks_and_arrivals() -> None:
    tl = Timeline(ULAW)
    tl.at_tick(2, 0.04, b"\x00" * 160)  # µ-law 0x00 decodes to -32124
    pcm = np.frombuffer(tl.pcm(), dtype="<i2")
    assert pcm.size == 3 * 160
    assert set(pcm[:320].tolist()) == {0}
    assert set(pcm[320:].tolist()) == {-32124}
    tl2 = Timeline(SLIN)
    for t in (0.0, 0.001, 0.002):  # a burst: each frame queues behind the previous one
        tl2.arriving(t / 0.020, t, b"\x01\x00" * 160)
    assert [p.tick for p in tl2.played] == [0, 1, 2]


def test_arrival_stats_find_gaps_and_bursts() -> None:
    paced = [i * 0.020 for i in range(50)]
    s = ArrivalStats.of(paced, [0.020] * 50)
    assert s.mean_ms == pytest.approx(20.0)
    assert s.gaps_over_40ms == 0
    assert s.bursts == 0
    assert s.max_lead_ms == pytest.approx(20.0)
    burst = [0.0] * 10 + [0.5 + i * 0.02 for i in range(10)]
    b = ArrivalStats.of(burst, [0.020] * 20)
    assert b.bursts == 8
    assert b.gaps_over_40ms == 1
    assert b.max_lead_ms == pytest.approx(200.0)


def test_grid_stats_tell_a_drift_free_stream_from_a_drifting_one() -> None:
    # On one grid, with a pause between responses and a frame that slipped a whole slot: 0 off.
    on_grid = [1.003 + k * 0.020 for k in [*range(100), *range(150, 200), *range(201, 260)]]
    s = ArrivalStats.of(on_grid, [0.020] * len(on_grid))
    assert s.grid_p95_ms == pytest.approx(0.0, abs=1e-6)
    assert s.grid_max_ms == pytest.approx(0.0, abs=1e-6)
    # The case: a sender that re-anchors ends up ~20.05 ms apart on average, all over the grid.
    drifting = [1.003 + k * 0.02005 for k in range(450)]
    d = ArrivalStats.of(drifting, [0.020] * 450)
    assert d.mean_ms == pytest.approx(20.05)
    assert d.grid_p95_ms is not None
    assert d.grid_p95_ms > 5
