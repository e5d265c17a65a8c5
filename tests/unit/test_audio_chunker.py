"""FrameChunker: whole frames out, nothing lost or reordered, remainder kept."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.audio.chunker import FrameChunker
from bridge.audio.formats import ALAW, SLIN16, ULAW, AudioFormat


@given(
    frame_bytes=st.integers(1, 700),
    chunks=st.lists(st.binary(max_size=2000), max_size=40),
)
def test_output_plus_pending_is_the_input_in_whole_frames(frame_bytes: int, chunks: list[bytes]) -> None:
    chunker = FrameChunker(frame_bytes)
    out = []
    for chunk in chunks:
        piece = chunker.feed(chunk)
        assert len(piece) % frame_bytes == 0
        assert 0 <= chunker.pending < frame_bytes
        out.append(piece)
    joined = b"".join(chunks)
    assert b"".join(out) + chunker.take_remainder(pad=False) == joined
    assert len(b"".join(out)) == len(joined) - len(joined) % frame_bytes
    assert chunker.pending == 0


@given(frame_bytes=st.integers(1, 400), chunks=st.lists(st.binary(max_size=1500), max_size=20))
def test_feed_frames_cuts_the_same_stream_into_frames(frame_bytes: int, chunks: list[bytes]) -> None:
    as_frames = FrameChunker(frame_bytes)
    as_bytes = FrameChunker(frame_bytes)
    for chunk in chunks:
        frames = as_frames.feed_frames(chunk)
        assert all(len(f) == frame_bytes for f in frames)
        assert b"".join(frames) == as_bytes.feed(chunk)


def test_aligned_input_with_nothing_pending_is_returned_as_is() -> None:
    chunker = FrameChunker(320)
    data = bytes(range(128)) * 5
    assert chunker.feed(data) is data
    frame = bytes(320)
    assert chunker.feed_frames(frame)[0] is frame


def test_remainder_is_joined_to_the_next_feed() -> None:
    chunker = FrameChunker(4)
    assert chunker.feed(b"abcdef") == b"abcd"
    assert chunker.pending == 2
    assert chunker.feed(b"g") == b""
    assert chunker.feed(b"hijklm") == b"efghijkl"
    assert chunker.pending == 1


@pytest.mark.parametrize(("fmt", "pad"), [(ULAW, b"\xff"), (ALAW, b"\xd5"), (SLIN16, b"\x00")])
def test_take_remainder_pads_with_the_formats_silence(fmt: AudioFormat, pad: bytes) -> None:
    chunker = FrameChunker(6, pad_byte=fmt.silence_byte)
    chunker.feed(b"\x01\x02")
    assert chunker.take_remainder(pad=True) == b"\x01\x02" + pad * 4
    assert chunker.take_remainder(pad=True) == b""  # nothing pending: no frame of pure padding


def test_clear_drops_the_partial_frame() -> None:
    chunker = FrameChunker(10)
    chunker.feed(b"12345")
    chunker.clear()
    assert chunker.pending == 0
    assert chunker.feed(b"abcdefghij") == b"abcdefghij"


def test_long_streams_hold_less_than_a_frame() -> None:
    chunker = FrameChunker(320)
    total = 0
    for _ in range(10_000):
        total += len(chunker.feed(bytes(333)))
        assert chunker.pending < 320
    assert total + chunker.pending == 333 * 10_000


@pytest.mark.parametrize("kwargs", [{"frame_bytes": 0}, {"frame_bytes": 10, "pad_byte": 256}])
def test_invalid_settings_are_rejected(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        FrameChunker(**kwargs)
