"""The server frames the chan_websocket leg writes, read back by `websockets`' own frame parser (the
second implementation): every length encoding, both opcodes, nothing left over."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from bridge.asterisk.ws_frames import OP_BINARY, OP_TEXT, server_frame

BOUNDARY_LENGTHS = (0, 1, 125, 126, 127, 65_535, 65_536, 70_000)


def parsed(wire: bytes) -> tuple[Frame, bool]:
    """The one frame a client reads from `wire` (a server's frames are unmasked), and whether that was
    all of it."""
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        return done.value, not reader.buffer
    raise AssertionError("the frame is incomplete")


@given(
    st.binary(max_size=300)
    | st.sampled_from(BOUNDARY_LENGTHS).map(lambda n: bytes(range(256)) * (n // 256) + bytes(n % 256))
)
def test_binary_frames_parse_back_to_their_payload(payload: bytes) -> None:
    frame, consumed = parsed(server_frame(OP_BINARY, payload))
    assert (frame.opcode, frame.fin, frame.data) == (Opcode.BINARY, True, payload)
    assert (frame.rsv1, frame.rsv2, frame.rsv3) == (False, False, False)
    assert consumed


@given(st.text(max_size=200))
def test_text_frames_parse_back_to_their_text(text: str) -> None:
    frame, consumed = parsed(server_frame(OP_TEXT, text.encode()))
    assert (frame.opcode, frame.fin) == (Opcode.TEXT, True)
    assert bytes(frame.data).decode() == text
    assert consumed


def test_the_shortest_length_encoding_is_used() -> None:
    # RFC 6455 §5.2: "the minimal number of bytes MUST be used to encode the length".
    header_sizes = {n: len(server_frame(OP_BINARY, bytes(n))) - n for n in BOUNDARY_LENGTHS}
    assert header_sizes == {0: 2, 1: 2, 125: 2, 126: 4, 127: 4, 65_535: 4, 65_536: 10, 70_000: 10}
