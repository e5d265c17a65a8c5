"""Audio helpers for the fake: formats, G.711 written from scratch, reply audio, an energy VAD.

Independent of `bridge.audio` on purpose: a codec bug must not hide in both ends.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

Codec = Literal["pcm", "pcmu", "pcma"]
Int16Array = npt.NDArray[np.int16]


@dataclass(frozen=True)
class AudioFormat:
    """One wire format: s16le PCM at `rate`, or G.711 (always 8 kHz, 1 byte per sample)."""

    codec: Codec
    rate: int = 24000

    @property
    def sample_width(self) -> int:
        return 2 if self.codec == "pcm" else 1

    @property
    def bytes_per_ms(self) -> float:
        return self.rate * self.sample_width / 1000

    def ms_of(self, nbytes: int) -> float:
        return nbytes / self.bytes_per_ms

    def bytes_for_ms(self, ms: float) -> int:
        """Byte count of `ms` of audio, whole samples only."""
        return round(ms * self.rate / 1000) * self.sample_width

    @classmethod
    def from_wire(cls, obj: object) -> AudioFormat:
        """Parse a validated format object; missing pieces take the GA defaults."""
        if not isinstance(obj, dict):
            return PCM24
        kind = obj.get("type", "audio/pcm")
        if kind == "audio/pcmu":
            return cls("pcmu", 8000)
        if kind == "audio/pcma":
            return cls("pcma", 8000)
        rate = obj.get("rate")
        return cls("pcm", rate if isinstance(rate, int) else 24000)


PCM24 = AudioFormat("pcm", 24000)
PCMU = AudioFormat("pcmu", 8000)
PCMA = AudioFormat("pcma", 8000)

# --- G.711 -----------------------------------------------------------------------------------------


def _ulaw_decode_table() -> Int16Array:
    u = (~np.arange(256, dtype=np.int32)) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_decode_table() -> Int16Array:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (a >> 4) & 0x07
    mantissa = a & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0)
    )
    # A-law: sign bit set means positive.
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode(x: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    # The classic 14-bit reference algorithm (arithmetic shift first, then sign and bias 33).
    v = x >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 0x21
    seg_ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(seg_ends, v, side="left")
    uval = np.where(seg >= 8, 0x7F, (seg << 4) | ((v >> (seg + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _alaw_encode(x: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    mask = np.where(x >= 0, 0xD5, 0x55)
    v = x >> 3
    v = np.where(x < 0, -v - 1, v)
    seg_ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(seg_ends, v, side="left")
    low = np.where(seg < 2, (v >> 1) & 0x0F, (v >> np.maximum(seg, 1)) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, (seg << 4) | low)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


_ALL_INT16 = np.arange(-32768, 32768, dtype=np.int32)
ULAW_DECODE = _ulaw_decode_table()
ALAW_DECODE = _alaw_decode_table()
# Encoding via full 64 K tables keeps the per-call cost to one fancy-indexing pass.
ULAW_ENCODE = _ulaw_encode(_ALL_INT16)
ALAW_ENCODE = _alaw_encode(_ALL_INT16)
ULAW_SQUARES = ULAW_DECODE.astype(np.float64) ** 2
ALAW_SQUARES = ALAW_DECODE.astype(np.float64) ** 2


def decode(data: bytes, fmt: AudioFormat) -> Int16Array:
    """Wire bytes → int16 samples (trailing odd byte of PCM is dropped)."""
    if fmt.codec == "pcm":
        return np.frombuffer(data[: len(data) & ~1], dtype="<i2").astype(np.int16)
    codes = np.frombuffer(data, dtype=np.uint8)
    return (ULAW_DECODE if fmt.codec == "pcmu" else ALAW_DECODE)[codes]


def encode(samples: Int16Array, fmt: AudioFormat) -> bytes:
    if fmt.codec == "pcm":
        return samples.astype("<i2").tobytes()
    idx = samples.astype(np.int32) + 32768
    return (ULAW_ENCODE if fmt.codec == "pcmu" else ALAW_ENCODE)[idx].tobytes()


# --- Reply audio -----------------------------------------------------------------------------------

AudioFactory = Callable[[int, int, AudioFormat], bytes]


def voiced_signal(turn_index: int, ms: int, rate: int) -> Int16Array:
    """A speech-like signal: harmonic buzz (pitch varies per turn) under a 4 Hz syllable envelope.

    Loud (about -10 dBFS peak) so any VAD on the far side sees speech; the envelope has short dips
    between syllables like real speech, but never a 100 ms hole that could end a VAD segment.
    """
    n = round(ms * rate / 1000)
    t = np.arange(n, dtype=np.float64) / rate
    f0 = 110.0 + 20.0 * (turn_index % 5)
    wave = np.zeros(n)
    for k in range(1, 8):
        if k * f0 < rate / 2:
            wave += np.sin(2 * math.pi * k * f0 * t) / k
    envelope = 0.35 + 0.65 * np.abs(np.sin(math.pi * 4.0 * t))
    peak = float(np.max(np.abs(wave))) if n else 1.0
    return (wave / (peak or 1.0) * envelope * 10000).astype(np.int16)


@functools.lru_cache(maxsize=256)
def default_audio_factory(turn_index: int, ms: int, fmt: AudioFormat) -> bytes:
    """Cached: a benchmark with one reply length per format generates each buffer once."""
    return encode(voiced_signal(turn_index, ms, fmt.rate), fmt)


def rms(samples: Int16Array) -> float:
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


# --- Energy VAD ------------------------------------------------------------------------------------


@dataclass
class VadEvent:
    kind: Literal["start", "stop"]
    ms: int  # position in the session's input audio stream


class EnergyVad:
    """RMS per 20 ms frame against a threshold; onset after `onset_ms` of speech, end after silence.

    Positions are milliseconds of the whole input stream, kept across reconfiguration.
    """

    FRAME_MS = 20

    def __init__(self, rate: int, *, threshold_rms: float, onset_ms: int, silence_ms: int) -> None:
        self.threshold = threshold_rms
        self.onset_frames = max(1, onset_ms // self.FRAME_MS)
        self.pos_ms = 0
        self.in_speech = False
        self._voiced_run = 0
        self._silent_run = 0
        self.rate = rate
        self.silence_ms = silence_ms
        self.frame_len = rate * self.FRAME_MS // 1000
        self._residual: npt.NDArray[np.float64] = np.zeros(0)

    def reconfigure(self, rate: int, silence_ms: int) -> None:
        if rate != self.rate:
            self._residual = np.zeros(0)  # samples of the old rate mean nothing now
            self.rate = rate
            self.frame_len = rate * self.FRAME_MS // 1000
        self.silence_ms = silence_ms

    def reset(self) -> None:
        """Buffer cleared or committed: forget speech state but keep the stream position."""
        self._voiced_run = 0
        self._silent_run = 0
        self.in_speech = False

    def feed(self, data: bytes, fmt: AudioFormat) -> list[VadEvent]:
        """Wire bytes in; frame energies come from per-sample squares (a table lookup for G.711)
        because numpy's per-call overhead dominates on 20 ms appends."""
        if fmt.codec == "pcm":
            x = np.frombuffer(data[: len(data) & ~1], dtype="<i2").astype(np.float64)
            squares = x * x
        else:
            table = ULAW_SQUARES if fmt.codec == "pcmu" else ALAW_SQUARES
            squares = table[np.frombuffer(data, dtype=np.uint8)]
        buf = np.concatenate((self._residual, squares)) if self._residual.size else squares
        nframes = buf.size // self.frame_len
        self._residual = buf[nframes * self.frame_len :]
        if nframes == 0:
            return []
        energy = buf[: nframes * self.frame_len].reshape(nframes, self.frame_len).sum(axis=1)
        voiced = energy > self.threshold * self.threshold * self.frame_len
        events: list[VadEvent] = []
        for is_voiced in voiced.tolist():
            self.pos_ms += self.FRAME_MS
            if is_voiced:
                self._voiced_run += 1
                self._silent_run = 0
                if not self.in_speech and self._voiced_run >= self.onset_frames:
                    self.in_speech = True
                    events.append(VadEvent("start", self.pos_ms - self._voiced_run * self.FRAME_MS))
            else:
                self._voiced_run = 0
                if self.in_speech:
                    self._silent_run += 1
                    if self._silent_run * self.FRAME_MS >= self.silence_ms:
                        self.in_speech = False
                        events.append(VadEvent("stop", self.pos_ms - self._silent_run * self.FRAME_MS))
                        self._silent_run = 0
        return events
