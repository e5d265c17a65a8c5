"""WAV read/write: mono 16-bit PCM only, clear errors for the rest."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import pytest

from bridge.audio.wav import read_wav, write_wav


def test_round_trip(tmp_path: Path) -> None:
    pcm = struct.pack("<5h", 0, 1, -1, 32767, -32768)
    path = tmp_path / "a.wav"
    write_wav(path, pcm, 16000)
    assert read_wav(path) == (pcm, 16000)
    assert read_wav(str(path)) == (pcm, 16000)
    with wave.open(str(path), "rb") as reader:  # a standard reader agrees on the header
        assert (reader.getnchannels(), reader.getsampwidth(), reader.getframerate()) == (1, 2, 16000)
        assert reader.getnframes() == 5


def _write_with_wave(path: Path, channels: int, width: int) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(8000)
        writer.writeframes(bytes(channels * width * 10))


def test_stereo_is_rejected(tmp_path: Path) -> None:
    _write_with_wave(tmp_path / "s.wav", channels=2, width=2)
    with pytest.raises(ValueError, match="2 channels"):
        read_wav(tmp_path / "s.wav")


def test_8_bit_is_rejected(tmp_path: Path) -> None:
    _write_with_wave(tmp_path / "b.wav", channels=1, width=1)
    with pytest.raises(ValueError, match="8-bit"):
        read_wav(tmp_path / "b.wav")


@pytest.mark.parametrize(("tag", "width"), [(3, 4), (7, 1), (6, 1)])  # float32, µ-law, A-law WAV
def test_non_pcm_formats_are_rejected(tmp_path: Path, tag: int, width: int) -> None:
    data = bytes(width * 8)
    fmt = struct.pack("<HHIIHH", tag, 1, 8000, 8000 * width, width, 8 * width)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    body = b"WAVE" + chunks
    path = tmp_path / "c.wav"
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    with pytest.raises(ValueError, match="not a 16-bit PCM WAV"):
        read_wav(path)


def test_garbage_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"this is not a wav file at all")
    with pytest.raises(ValueError, match="not a 16-bit PCM WAV"):
        read_wav(path)
    path.write_bytes(b"RIFF")
    with pytest.raises(ValueError):
        read_wav(path)


def test_write_rejects_half_samples_and_bad_rates(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even length"):
        write_wav(tmp_path / "o.wav", b"\x00", 8000)
    with pytest.raises(ValueError, match="positive"):
        write_wav(tmp_path / "o.wav", b"\x00\x00", 0)
