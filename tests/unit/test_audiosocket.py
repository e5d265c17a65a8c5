"""AudioSocket framing: round trips, validation, and split-invariance under fuzzing."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.asterisk import audiosocket as aus
from bridge.audio.formats import FORMATS, SLIN16, SLIN24, ULAW

CALL = uuid.UUID("0f8c2d64-7a1b-4c3e-9d5f-2e6a8b4c1d90")


def feed_all(
    data: bytes,
    *,
    from_asterisk: bool = True,
    max_payload: int = aus.MAX_PAYLOAD,
    cuts: list[int] | None = None,
) -> tuple[list[aus.Event], aus.AudioSocketParser]:
    parser = aus.AudioSocketParser(from_asterisk=from_asterisk, max_payload=max_payload)
    events: list[aus.Event] = []
    bounds = [0, *sorted(c for c in (cuts or []) if 0 < c < len(data)), len(data)]
    for a, b in itertools.pairwise(bounds):
        events += parser.feed(data[a:b])
    return events, parser


def test_the_captured_opening_parses_to_the_uuid() -> None:
    # audiosocket.jsonl: the first bytes Asterisk 22.10.1 sent
    opening = bytes.fromhex("0100100f8c2d647a1b4c3e9d5f2e6a8b4c1d90")
    events, parser = feed_all(opening)
    assert events == [aus.Uuid(CALL)]
    assert events[0].text == "0f8c2d64-7a1b-4c3e-9d5f-2e6a8b4c1d90"  # type: ignore[union-attr]
    assert not parser.closed
    assert aus.encode_uuid(str(CALL)) == opening
    assert aus.encode_uuid(CALL) == opening


def test_a_call_round_trips_byte_by_byte() -> None:
    frame, short = b"\x01\x02" * 320, b"\x03\x04" * 208  # Asterisk's last frame can be short
    stream = (
        aus.encode_uuid(CALL)
        + aus.encode_audio(frame, aus.Kind.SLIN16)
        + aus.encode_dtmf("#")
        + aus.encode_audio(short, aus.Kind.SLIN16)
        + aus.encode_error(7)
        + aus.encode_error()
        + aus.encode_hangup()
    )
    expected = [
        aus.Uuid(CALL),
        aus.Audio(0x12, 16000, frame),
        aus.Dtmf("#"),
        aus.Audio(0x12, 16000, short),
        aus.PeerError(7),
        aus.PeerError(None),
        aus.Hangup(),
    ]
    assert feed_all(stream)[0] == expected
    events, parser = feed_all(stream, cuts=list(range(len(stream))))  # one byte at a time
    assert events == expected
    assert parser.closed
    assert parser.error is None


def test_hangup_is_three_bytes_and_ends_the_stream() -> None:
    assert aus.encode_hangup() == b"\x00\x00\x00"
    events, parser = feed_all(aus.encode_uuid(CALL) + b"\x00\x00\x00" + aus.encode_audio(b"\x00\x00"))
    assert events == [aus.Uuid(CALL), aus.Hangup()]
    assert parser.feed(aus.encode_audio(b"\x00\x00")) == []


@pytest.mark.parametrize(
    ("kind", "rate"),
    [
        (0x10, 8000),
        (0x11, 12000),
        (0x12, 16000),
        (0x13, 24000),
        (0x14, 32000),
        (0x15, 44100),
        (0x16, 48000),
        (0x17, 96000),
        (0x18, 192000),
    ],
)
def test_every_audio_type_and_its_rate(kind: int, rate: int) -> None:
    assert aus.RATE_FOR_AUDIO_TYPE[kind] == rate
    assert aus.AUDIO_TYPE_FOR_RATE[rate] == kind
    events, _ = feed_all(aus.encode_uuid(CALL) + aus.encode_audio(b"\x7f\x00", kind))
    assert events[1] == aus.Audio(kind, rate, b"\x7f\x00")


def test_audio_type_for_format() -> None:
    assert aus.audio_type_for_format(SLIN16) == 0x12
    assert aus.audio_type_for_format(SLIN24) == 0x13
    assert aus.audio_type_for_format(ULAW) is None  # AudioSocket carries signed linear only
    assert {aus.audio_type_for_format(f) for f in FORMATS.values()} - {None} == set(aus.RATE_FOR_AUDIO_TYPE)


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (aus.encode_audio(b"\x00\x00"), "first message is not the UUID"),
        (aus.encode_uuid(CALL) + aus.encode_uuid(CALL), "UUID sent twice"),
        (aus.encode_message(0x01, b"\x00" * 15), "UUID of 15 bytes"),
        (aus.encode_uuid(CALL) + aus.encode_message(0x02, b"x"), "unexpected message type 0x02"),
        (aus.encode_uuid(CALL) + aus.encode_message(0x19, b"xx"), "unexpected message type 0x19"),
        (aus.encode_uuid(CALL) + aus.encode_message(0x12), "empty audio"),
        (aus.encode_uuid(CALL) + aus.encode_message(0x03, b"12"), "DTMF of 2 bytes"),
        (aus.encode_uuid(CALL) + aus.encode_message(0x03, b"x"), "invalid DTMF byte 0x78"),
        (aus.encode_uuid(CALL) + aus.encode_message(0xFF, b"\x01\x02"), "error message of 2 bytes"),
    ],
)
def test_malformed_streams_are_fatal_protocol_errors(stream: bytes, reason: str) -> None:
    events, parser = feed_all(stream + aus.encode_audio(b"\x00\x00"))
    assert isinstance(events[-1], aus.ProtocolError)
    assert reason in events[-1].reason
    assert parser.closed
    assert parser.error == events[-1].reason
    assert parser.feed(aus.encode_audio(b"\x00\x00")) == []
    assert parser.buffered == 0


def test_oversize_length_is_refused_from_the_header_alone() -> None:
    parser = aus.AudioSocketParser(max_payload=4000)
    assert parser.feed(aus.encode_uuid(CALL)) == [aus.Uuid(CALL)]
    assert parser.feed(b"\x12\x1f\x41") == [aus.ProtocolError("length 8001 over the 4000-byte limit")]


def test_reading_the_bridge_only_hangup_and_audio_are_legal() -> None:
    ok, _ = feed_all(aus.encode_audio(b"\x01\x00", 0x12) + aus.encode_hangup(), from_asterisk=False)
    assert ok == [aus.Audio(0x12, 16000, b"\x01\x00"), aus.Hangup()]
    for bad in (aus.encode_dtmf("1"), aus.encode_error(), aus.encode_uuid(CALL)):
        events, parser = feed_all(bad, from_asterisk=False)
        assert isinstance(events[0], aus.ProtocolError)
        assert parser.closed


def test_partial_input_is_held_not_reported() -> None:
    parser = aus.AudioSocketParser()
    msg = aus.encode_uuid(CALL)
    assert parser.feed(msg[:2]) == []
    assert parser.feed(msg[2:10]) == []
    assert parser.buffered == 10
    assert parser.feed(msg[10:]) == [aus.Uuid(CALL)]
    assert parser.buffered == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda: aus.encode_audio(b""),
        lambda: aus.encode_audio(b"\x00\x00", 0x03),
        lambda: aus.encode_audio(b"\x00" * 65536),
        lambda: aus.encode_dtmf("E"),
        lambda: aus.encode_dtmf("12"),
        lambda: aus.encode_error(256),
        lambda: aus.encode_uuid("not-a-uuid"),
        lambda: aus.encode_message(256),
    ],
)
def test_encoders_refuse_what_no_peer_should_send(call: object) -> None:
    with pytest.raises(ValueError):
        call()  # type: ignore[operator]


# ------------------------------------------------------------------ property-based

audio_msgs = st.builds(
    aus.encode_audio, st.binary(min_size=1, max_size=700), st.sampled_from(sorted(aus.RATE_FOR_AUDIO_TYPE))
)
valid_msgs = (
    audio_msgs
    | st.builds(aus.encode_dtmf, st.sampled_from("0123456789*#ABCD"))
    | st.builds(aus.encode_error, st.none() | st.integers(0, 255))
)


@settings(deadline=None)  # no timing assertions
@given(st.lists(valid_msgs, max_size=20), st.lists(st.integers(0, 20_000), max_size=30))
def test_valid_streams_parse_fully_wherever_they_are_split(msgs: list[bytes], cuts: list[int]) -> None:
    stream = aus.encode_uuid(CALL) + b"".join(msgs)
    whole, parser = feed_all(stream)
    assert len(whole) == len(msgs) + 1
    assert not any(isinstance(e, aus.ProtocolError) for e in whole)
    assert parser.buffered == 0
    assert feed_all(stream, cuts=cuts)[0] == whole
    assert [aus.encode_audio(e.payload, e.kind) for e in whole if isinstance(e, aus.Audio)] == [
        m for m in msgs if m[0] >= 0x10 and m[0] != 0xFF
    ]


@settings(deadline=None)  # no timing assertions
@given(
    st.lists(valid_msgs | st.binary(max_size=8), max_size=12),
    st.lists(st.integers(0, 2000), max_size=20),
    st.booleans(),
    st.sampled_from([aus.MAX_PAYLOAD, 100]),
)
def test_random_bytes_never_raise_and_splits_do_not_matter(
    parts: list[bytes], cuts: list[int], from_asterisk: bool, max_payload: int
) -> None:
    junk = b"".join(parts)  # valid messages mixed with random bytes
    for stream in (junk, aus.encode_uuid(CALL) + junk):
        whole, parser = feed_all(stream, from_asterisk=from_asterisk, max_payload=max_payload)
        split, split_parser = feed_all(
            stream, from_asterisk=from_asterisk, max_payload=max_payload, cuts=cuts
        )
        assert split == whole
        assert split_parser.closed == parser.closed
        errors = [e for e in whole if isinstance(e, aus.ProtocolError)]
        assert len(errors) <= 1
        assert not errors or whole[-1] is errors[0]
        assert parser.buffered < aus.HEADER_BYTES + max_payload
