"""Mono 16-bit PCM WAV files, through the stdlib `wave` module (no hand-rolled RIFF)."""

from __future__ import annotations

import os
import wave

StrPath = str | os.PathLike[str]


def read_wav(path: StrPath) -> tuple[bytes, int]:
    """(s16le samples, sample rate) of a mono 16-bit PCM WAV file; ValueError for anything else."""
    try:
        with wave.open(os.fspath(path), "rb") as reader:
            channels = reader.getnchannels()
            width = reader.getsampwidth()
            rate = reader.getframerate()
            if reader.getcomptype() != "NONE":
                raise ValueError(f"{path}: compressed WAV ({reader.getcompname()}) is not supported")
            if channels != 1:
                raise ValueError(f"{path}: {channels} channels, need mono")
            if width != 2:
                raise ValueError(f"{path}: {8 * width}-bit samples, need 16-bit PCM")
            pcm = reader.readframes(reader.getnframes())
    except wave.Error as exc:
        # e.g. "unknown format: 3" (IEEE float) or 6/7 (A-law/µ-law WAV): not 16-bit PCM.
        raise ValueError(f"{path}: not a 16-bit PCM WAV file ({exc})") from exc
    except EOFError as exc:
        raise ValueError(f"{path}: truncated WAV file") from exc
    return pcm, rate


def write_wav(path: StrPath, pcm: bytes, sample_rate: int) -> None:
    """Write s16le mono `pcm` at `sample_rate` as a 16-bit PCM WAV file."""
    if len(pcm) % 2:
        raise ValueError(f"s16le data must have an even length, got {len(pcm)} bytes")
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    with wave.open(os.fspath(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
