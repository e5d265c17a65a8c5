"""bench.io_floor: its frames read back by `websockets` (the second implementation), its splitter over
any cut of the stream, and each relay carrying audio both ways on loopback."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from bench.io_floor import WORKS, append_message, client_frame, delta_message, measure, split_frames
from bridge.asterisk.ws_frames import OP_BINARY, OP_TEXT, server_frame

payloads = st.binary(max_size=300) | st.sampled_from((125, 126, 65_535, 65_536)).map(bytes)


@given(payloads, st.binary(min_size=4, max_size=4))
def test_a_client_frame_is_masked_and_parses_back(payload: bytes, mask: bytes) -> None:
    reader = StreamReader()
    reader.feed_data(client_frame(OP_BINARY, payload, mask))
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=True, max_size=None)  # a server refuses unmasked ones
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame: Frame = done.value.value
    assert (frame.opcode, frame.fin, bytes(frame.data)) == (Opcode.BINARY, True, payload)
    assert not reader.buffer


@given(st.lists(st.tuples(payloads, st.booleans()), max_size=6), st.data())
def test_split_frames_returns_whole_payloads_in_order_however_the_stream_is_cut(
    messages: list[tuple[bytes, bool]], data: st.DataObject
) -> None:
    wire = b"".join(
        client_frame(OP_BINARY, payload, b"\x01\x02\x03\x04") if masked else server_frame(OP_TEXT, payload)
        for payload, masked in messages
    )
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=5)))
    buf, out = bytearray(), []
    for start, end in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        buf += wire[start:end]
        out += split_frames(buf)
    assert out == [payload for payload, _ in messages]
    assert not buf


def test_the_messages_are_the_openai_events_they_stand_for() -> None:
    audio = bytes(range(160))
    append = json.loads(append_message(audio))
    assert append["type"] == "input_audio_buffer.append"
    assert base64.b64decode(append["audio"]) == audio
    delta = json.loads(delta_message(audio))
    assert delta["type"] == "response.output_audio.delta"
    assert base64.b64decode(delta["delta"]) == audio


@pytest.mark.parametrize("work", WORKS)
async def test_each_relay_carries_audio_both_ways(work: str) -> None:
    result = await measure(calls=3, seconds=0.6, work=work, warm=0.6)
    frames, up, back = (
        result["caller_frames"],
        result["bytes_up_per_caller_frame"],
        result["bytes_back_per_call_s"],
    )
    assert isinstance(frames, int)
    assert frames > 0
    # Up: each caller frame reached the sink, as itself (168 bytes) or as an append of it (263 and more).
    assert isinstance(up, int)
    assert up >= 160
    # Down: the sink's deltas reached the callers.
    assert isinstance(back, int)
    assert back > 0
