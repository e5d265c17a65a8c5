"""Caller audio for the simulated call: a speech-like test signal, WAV files, and leg-format bytes.

Independent of `bridge.audio` except for the `AudioFormat` description: the resampler here is a plain
windowed-sinc low-pass plus linear interpolation done once over the whole file (fine for test audio,
not meant to be fast), and G.711 comes from `bridge.simulate.g711`.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bridge.audio.formats import AudioFormat, Encoding
from bridge.simulate import g711

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float64]


def speech_like_signal(sample_rate: int, seconds: float, seed: int = 7) -> Int16Array:
    """A deterministic voice-like test signal: phrases of voiced "syllables" separated by pauses.

    Each phrase is a harmonic series (fundamental 100-220 Hz with slow intonation, harmonics shaped by
    two formant-like resonances) amplitude-modulated at a syllable rate of ~4 Hz; phrases last 0.8-2.2 s
    and are separated by 0.35-0.9 s of near-silence (a -70 dBFS noise floor). Speech parts sit around
    -18 dBFS RMS and never clip. The same `seed` always gives the same samples.
    """
    if sample_rate <= 0 or seconds < 0:
        raise ValueError("sample_rate must be positive and seconds non-negative")
    rng = np.random.default_rng(seed)
    n = round(sample_rate * seconds)
    out = rng.normal(0.0, 10.0, n)  # noise floor, ~-70 dBFS
    pos = int(rng.uniform(0.05, 0.25) * sample_rate)
    while pos < n:
        length = min(int(rng.uniform(0.8, 2.2) * sample_rate), n - pos)
        out[pos : pos + length] += _phrase(sample_rate, length, rng)
        pos += length + int(rng.uniform(0.35, 0.9) * sample_rate)
    return np.clip(np.round(out), -32768, 32767).astype(np.int16)


def _phrase(sample_rate: int, length: int, rng: np.random.Generator) -> FloatArray:
    t = np.arange(length) / sample_rate
    f0_base = rng.uniform(100.0, 220.0)
    # Intonation: a slow declining glide with a little vibrato.
    f0 = f0_base * (1.08 - 0.16 * t / max(t[-1], 1e-9)) * (1.0 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    formants = (rng.uniform(500, 800), rng.uniform(1100, 1800))
    voiced = np.zeros(length)
    nyquist = sample_rate / 2
    for k in range(1, 40):
        freq = k * f0_base
        if freq > min(nyquist * 0.9, 3800.0):
            break
        gain = sum(1.0 / (1.0 + ((freq - fc) / 150.0) ** 2) for fc in formants) + 0.15 / k
        voiced += gain * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    syllable_rate = rng.uniform(3.5, 5.0)
    envelope = np.clip(np.sin(np.pi * syllable_rate * t + rng.uniform(0, np.pi)) ** 2 * 1.3 - 0.15, 0, 1)
    ramp = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.03)  # 30 ms fade in/out of the phrase
    shaped = voiced * envelope * ramp
    peak = float(np.max(np.abs(shaped))) or 1.0
    scaled: FloatArray = shaped / peak * 14000.0
    return scaled


def read_wav(path: str | Path) -> tuple[Int16Array, int]:
    """Mono int16 samples and the sample rate of a PCM WAV file (8/16-bit; stereo is averaged)."""
    with wave.open(str(path), "rb") as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        raw = wav.readframes(wav.getnframes())
    if width == 2:
        samples = np.frombuffer(raw, dtype="<i2").astype(np.int32)
    elif width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.int32) - 128) << 8
    else:
        raise ValueError(f"{path}: {8 * width}-bit WAV is not supported; use 16-bit PCM")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int32)
    return samples.astype(np.int16), rate


def write_wav(path: str | Path, pcm: bytes, sample_rate: int) -> None:
    """Write little-endian s16 mono PCM as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)


def resample(samples: Int16Array, from_rate: int, to_rate: int) -> Int16Array:
    """Whole-buffer resampling: windowed-sinc low-pass when going down, then linear interpolation."""
    if from_rate == to_rate or samples.size == 0:
        return samples.copy()
    x = samples.astype(np.float64)
    if to_rate < from_rate:
        cutoff = 0.45 * to_rate / from_rate  # cycles per input sample, a little under the new Nyquist
        taps = np.arange(-48, 49)
        kernel = 2 * cutoff * np.sinc(2 * cutoff * taps) * np.hamming(taps.size)
        x = np.convolve(x, kernel / kernel.sum(), mode="same")
    n_out = round(samples.size * to_rate / from_rate)
    positions = np.arange(n_out) * (from_rate / to_rate)
    y = np.interp(positions, np.arange(samples.size), x)
    out: Int16Array = np.clip(np.round(y), -32768, 32767).astype(np.int16)
    return out


def encode_for_leg(samples: Int16Array, fmt: AudioFormat) -> bytes:
    """Bytes on an Asterisk leg of format `fmt` (samples must already be at fmt.sample_rate)."""
    if fmt.encoding is Encoding.ULAW:
        return g711.ulaw_encode(samples)
    if fmt.encoding is Encoding.ALAW:
        return g711.alaw_encode(samples)
    return np.asarray(samples, dtype="<i2").tobytes()


def decode_from_leg(data: bytes, fmt: AudioFormat) -> Int16Array:
    """Int16 samples from leg bytes (a trailing odd byte of slin is ignored)."""
    if fmt.encoding is Encoding.ULAW:
        return g711.ulaw_decode(data)
    if fmt.encoding is Encoding.ALAW:
        return g711.alaw_decode(data)
    usable = len(data) - len(data) % 2
    return np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def silence_frame(fmt: AudioFormat) -> bytes:
    """One 20 ms frame of digital silence in the leg format."""
    if fmt.encoding is Encoding.ULAW:
        return bytes([g711.ULAW_SILENCE]) * fmt.frame_bytes
    if fmt.encoding is Encoding.ALAW:
        return bytes([g711.ALAW_SILENCE]) * fmt.frame_bytes
    return bytes(fmt.frame_bytes)


def leg_frames(samples: Int16Array, sample_rate: int, fmt: AudioFormat) -> list[bytes]:
    """Convert caller audio to the leg format and cut it into 20 ms frames.

    Like Asterisk at the end of a played file, the last frame is left short when the audio does not
    fill it (the 22.10.1 captures show a 416-byte slin16 frame): the bridge must accept that.
    """
    data = encode_for_leg(resample(samples, sample_rate, fmt.sample_rate), fmt)
    step = fmt.frame_bytes
    return [data[i : i + step] for i in range(0, len(data), step)]
