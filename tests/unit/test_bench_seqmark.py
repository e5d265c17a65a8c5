"""Sequence marks: embedding and extraction (bench/seqmark.py), fast and pure."""

from __future__ import annotations

import pytest

from bench import seqmark
from bench.callaudio import marked_frames
from bridge.audio.formats import SLIN16, ULAW


@pytest.mark.parametrize("encoding", ["ulaw", "slin"])
@pytest.mark.parametrize("seq", [0, 1, 255, 4096, 65535])
def test_stamp_then_find_round_trips(encoding: seqmark.Encoding, seq: int) -> None:
    frame = bytes(range(256)) * 3
    stamped = seqmark.stamp(frame, seq, encoding)
    assert len(stamped) == len(frame)
    assert (
        stamped[len(seqmark.mark_bytes(seq, encoding)) :] == frame[len(seqmark.mark_bytes(seq, encoding)) :]
    )
    assert [s for _, s in seqmark.find_marks(stamped, encoding)] == [seq]


def test_sequence_wraps_at_16_bits() -> None:
    assert seqmark.mark_bytes(65536 + 7, "slin") == seqmark.mark_bytes(7, "slin")


def test_marks_are_found_anywhere_in_a_message_and_in_order() -> None:
    frames = [seqmark.stamp(bytes(640), i, "slin") for i in (5, 6, 7)]
    blob = b"\x01\x02" + b"".join(frames)  # shifted by one sample: still found
    assert [s for _, s in seqmark.find_marks(blob, "slin")] == [5, 6, 7]


def test_a_corrupted_check_is_rejected() -> None:
    mark = bytearray(seqmark.mark_bytes(300, "ulaw"))
    mark[-1] = (
        seqmark.mark_bytes(301, "ulaw")[-1] if mark[-1] != seqmark.mark_bytes(301, "ulaw")[-1] else 0xF0
    )
    assert seqmark.find_marks(bytes(mark), "ulaw") == []


def test_a_truncated_mark_is_not_reported() -> None:
    mark = seqmark.mark_bytes(9, "slin")
    assert seqmark.find_marks(mark[:-2], "slin") == []


def test_short_frames_are_refused() -> None:
    with pytest.raises(ValueError):
        seqmark.stamp(b"\x00" * 4, 1, "slin")


def test_encoding_of_formats() -> None:
    assert seqmark.encoding_of("ulaw") == "ulaw"
    assert seqmark.encoding_of("slin16") == "slin"
    assert seqmark.encoding_of("alaw") is None


@pytest.mark.parametrize("encoding", ["ulaw", "slin"])
def test_mark_table_agrees_with_the_decoder(encoding: seqmark.Encoding) -> None:
    table = seqmark.MarkTable(encoding, range(100))
    blob = b"".join(seqmark.stamp(bytes(400), i, encoding) for i in (3, 99, 42))
    assert table.find(blob) == [3, 99, 42] == [s for _, s in seqmark.find_marks(blob, encoding)]
    assert table.find(seqmark.mark_bytes(100, encoding)) == []  # outside the table


def test_marks_are_quiet() -> None:
    slin = seqmark.mark_bytes(0xFFFF, "slin")
    samples = [int.from_bytes(slin[i : i + 2], "little", signed=True) for i in range(0, len(slin), 2)]
    assert max(abs(s) for s in samples) <= 300


@pytest.mark.parametrize("fmt", [ULAW, SLIN16])
def test_marked_frames_carry_their_index(fmt: object) -> None:
    frames = marked_frames(fmt, 60)  # type: ignore[arg-type]
    enc = seqmark.encoding_of(fmt.name)  # type: ignore[attr-defined]
    assert enc is not None
    assert all(len(f) == fmt.frame_bytes for f in frames)  # type: ignore[attr-defined]
    assert [s for _, s in seqmark.find_marks(b"".join(frames), enc)] == list(range(60))
