"""SpeechDetector on synthetic signals: silence, faint noise, and a voiced, formant-shaped signal."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from bridge.audio.vad import SpeechDetector, SpeechEvent, SpeechStarted, SpeechStopped

Pcm = npt.NDArray[np.int16]
FORMANTS = ((700.0, 130.0), (1220.0, 70.0), (2600.0, 160.0))  # an /a/-like vowel: (centre, width) Hz


def voiced(rate: int, seconds: float, f0: float = 150.0) -> Pcm:
    """Harmonics of a wobbling f0 shaped by formant bumps, amplitude-modulated at a syllable rate."""
    t = np.arange(round(rate * seconds)) / rate
    pitch = f0 * (1 + 0.05 * np.sin(2 * math.pi * 3 * t))
    phase = 2 * math.pi * np.cumsum(pitch) / rate
    signal = np.zeros_like(t)
    for k in range(1, int((min(rate / 2, 4000) - 200) // f0)):
        gain = sum(math.exp(-0.5 * ((k * f0 - centre) / width) ** 2) for centre, width in FORMANTS)
        signal += (gain + 0.05) / math.sqrt(k) * np.sin(k * phase)
    signal *= 0.6 + 0.4 * np.sin(2 * math.pi * 4 * t)
    scaled: Pcm = np.round(signal / np.abs(signal).max() * 0.5 * 32767).astype("<i2")
    return scaled


def silence(rate: int, seconds: float) -> Pcm:
    return np.zeros(round(rate * seconds), dtype="<i2")


def feed_in_odd_chunks(detector: SpeechDetector, pcm: Pcm) -> list[SpeechEvent]:
    """Feed in uneven sizes, some splitting a sample, as a socket might deliver them."""
    data = pcm.tobytes()
    events: list[SpeechEvent] = []
    sizes = [7, 333, 1000, 2, 641, 160]
    offset = index = 0
    while offset < len(data):
        size = sizes[index % len(sizes)]
        events += detector.feed(data[offset : offset + size])
        offset += size
        index += 1
    return events


def talk_spurt(rate: int, f0: float = 150.0) -> Pcm:
    """0.5 s silence, 1 s voiced, 1 s silence."""
    return np.concatenate([silence(rate, 0.5), voiced(rate, 1.0, f0), silence(rate, 1.0)])


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
def test_digital_silence_never_triggers(rate: int) -> None:
    detector = SpeechDetector(rate)
    assert feed_in_odd_chunks(detector, silence(rate, 5.0)) == []
    assert not detector.speaking


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
@pytest.mark.parametrize("sigma", [10.0, 30.0, 100.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_faint_steady_noise_never_triggers(rate: int, sigma: float, seed: int) -> None:
    noise = (np.random.default_rng(seed).standard_normal(rate * 3) * sigma).astype("<i2")
    assert feed_in_odd_chunks(SpeechDetector(rate), noise) == []


@pytest.mark.parametrize("rate", [8000, 16000, 24000, 12000, 48000])
@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_voiced_spurt_starts_and_stops_near_its_edges(rate: int, frame_ms: int) -> None:
    detector = SpeechDetector(rate, frame_ms=frame_ms)
    events = feed_in_odd_chunks(detector, talk_spurt(rate))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]
    started, stopped = events
    assert started.offset_ms == pytest.approx(500, abs=30)
    assert started.detected_ms - started.offset_ms == pytest.approx(120, abs=0.01)
    # webrtcvad itself holds a decision ~100 ms after the voice ends.
    assert 1480 <= stopped.offset_ms <= 1660
    assert stopped.detected_ms - stopped.offset_ms == pytest.approx(300, abs=0.01)
    assert not detector.speaking


def test_higher_voice_is_detected_too() -> None:
    events = feed_in_odd_chunks(SpeechDetector(16000), talk_spurt(16000, f0=220.0))
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_speaking_follows_the_events() -> None:
    detector = SpeechDetector(8000)
    assert detector.feed(silence(8000, 0.5).tobytes()) == []
    assert not detector.speaking
    started = detector.feed(voiced(8000, 0.3).tobytes())
    assert [type(e) for e in started] == [SpeechStarted]
    assert detector.speaking
    assert detector.feed(silence(8000, 0.2).tobytes()) == []  # shorter than the hangover
    assert detector.speaking
    assert [type(e) for e in detector.feed(silence(8000, 0.5).tobytes())] == [SpeechStopped]
    assert not detector.speaking


def test_a_blip_shorter_than_the_onset_is_ignored() -> None:
    # 20 ms of voice reads as ~100 ms to webrtcvad (its own overhang), under the 120 ms onset.
    blip = np.concatenate([silence(16000, 0.5), voiced(16000, 0.02), silence(16000, 1.0)])
    assert feed_in_odd_chunks(SpeechDetector(16000), blip) == []
    # The same blip with a shorter onset does count, so it was voiced and only the onset held it.
    events = feed_in_odd_chunks(SpeechDetector(16000, onset_ms=40), blip)
    assert [type(e) for e in events] == [SpeechStarted, SpeechStopped]


def test_separate_blips_do_not_add_up_to_an_onset() -> None:
    gap = silence(16000, 0.4)
    blips = np.concatenate(
        [gap, voiced(16000, 0.02), gap, voiced(16000, 0.02), gap, voiced(16000, 0.02), gap]
    )
    assert feed_in_odd_chunks(SpeechDetector(16000), blips) == []


def test_24k_input_is_resampled_for_the_vad_and_agrees_with_16k() -> None:
    detector = SpeechDetector(24000)
    assert detector.vad_rate == 8000
    assert detector.latency_ms > 0
    at_24k = feed_in_odd_chunks(detector, talk_spurt(24000))
    at_16k = feed_in_odd_chunks(SpeechDetector(16000), talk_spurt(16000))
    assert [type(e) for e in at_24k] == [type(e) for e in at_16k]
    for a, b in zip(at_24k, at_16k, strict=True):
        assert a.offset_ms == pytest.approx(b.offset_ms, abs=25)


def test_chunking_does_not_change_the_events() -> None:
    pcm = talk_spurt(24000)
    whole = SpeechDetector(24000).feed(pcm.tobytes())
    assert feed_in_odd_chunks(SpeechDetector(24000), pcm) == whole


def test_reset_starts_a_new_stream() -> None:
    detector = SpeechDetector(8000)
    detector.feed(np.concatenate([silence(8000, 0.2), voiced(8000, 0.4)]).tobytes())
    assert detector.speaking
    detector.reset()
    assert not detector.speaking
    again = detector.feed(talk_spurt(8000).tobytes())
    assert again == SpeechDetector(8000).feed(talk_spurt(8000).tobytes())


@pytest.mark.parametrize(
    "kwargs",
    [{"aggressiveness": 4}, {"frame_ms": 15}, {"onset_ms": -1}, {"sample_rate": 4000}],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, int]) -> None:
    settings = {"sample_rate": 8000, **kwargs}
    with pytest.raises(ValueError):
        SpeechDetector(**settings)
