"""The callers' audio: speech-like phrases with long pauses, cut into 20 ms leg frames, each one marked.

The pauses are at least 0.8 s on purpose: the echo provider treats a caller who starts again within
~0.55 s of their previous phrase as a barge-in and flushes, which would measure barge-in handling
instead of steady relaying (and drop marked frames).
"""

from __future__ import annotations

import numpy as np

from bench import seqmark
from bridge.audio.formats import AudioFormat
from bridge.simulate.audio_source import encode_for_leg, speech_like_signal

PTIME_S = 0.020
PHRASE_S = (0.9, 1.6)
PAUSE_S = (0.8, 1.4)


def speech_with_pauses(
    sample_rate: int, seconds: float, seed: int = 11
) -> np.ndarray[tuple[int], np.dtype[np.int16]]:
    """Phrases of `speech_like_signal` (voiced, formant-shaped, syllable-modulated) separated by a
    -70 dBFS noise floor; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    total = round(sample_rate * seconds)
    parts: list[np.ndarray[tuple[int], np.dtype[np.int16]]] = []
    have = 0
    phrase = 0
    while have < total:
        speech = speech_like_signal(sample_rate, rng.uniform(*PHRASE_S), seed=seed * 1000 + phrase)
        pause = np.clip(
            np.round(rng.normal(0.0, 10.0, round(rng.uniform(*PAUSE_S) * sample_rate))), -32768, 32767
        )
        parts += [speech, pause.astype(np.int16)]
        have += speech.size + pause.size
        phrase += 1
    out: np.ndarray[tuple[int], np.dtype[np.int16]] = np.concatenate(parts)[:total]
    return out


def marked_frames(fmt: AudioFormat, frames: int, seed: int = 11) -> tuple[bytes, ...]:
    """`frames` consecutive 20 ms frames in the leg format; frame i carries sequence mark i (mod 2^16).

    Calls share one tuple (a 30 s slin24 call is 1.4 MB of frames) and start at different offsets.
    """
    encoding = seqmark.encoding_of(fmt.name)
    if encoding is None:
        raise ValueError(f"no sequence marks for format {fmt.name}")
    pcm = speech_with_pauses(fmt.sample_rate, frames * PTIME_S, seed)
    data = encode_for_leg(pcm, fmt)
    step = fmt.frame_bytes
    return tuple(seqmark.stamp(data[i * step : (i + 1) * step], i, encoding) for i in range(frames))
