"""The chan_websocket control codec: wire forms, round trips, malformed input, fuzzing."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.asterisk import chan_websocket as cw
from bridge.asterisk.chan_websocket import ControlFormat

JSON, PLAIN = ControlFormat.JSON, ControlFormat.PLAIN

EVENTS: list[cw.Event] = [
    cw.MediaStart(
        "bridge_media",
        "WebSocket/bridge_media/0x7f3a",
        "1795212352.2",
        "slin16",
        640,
        20,
        {"AI_SESSION": "c-9f2", "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640"},
        JSON,
    ),
    cw.MediaStart("ai", "WebSocket/ai/0x1", None, "ulaw", 160, 20, {}, JSON),
    cw.MediaXoff("1.2"),
    cw.MediaXon("1.2"),
    cw.QueueDrained("1.2"),
    cw.MediaXoff(),
    cw.QueueDrained(),
    cw.Status(1000, 800, 900, True, False, False, "1.2"),
    cw.Status(0, 800, 900, False, True, True),
    cw.MediaBufferingCompleted("r1", "1.2"),
    cw.MediaBufferingCompleted(""),
    cw.MediaMarkProcessed("m7", "1.2"),
    cw.MediaMarkProcessed("m8"),
    cw.DtmfEnd("#", "1.2"),
    cw.DtmfEnd("5"),
    cw.AsteriskError("'sideways' is not a valid direction for SET_MEDIA_DIRECTION.", "1.2"),
    cw.AsteriskError("Unable to parse JSON command"),
]

COMMANDS: list[cw.Command] = [
    cw.Answer(),
    cw.Hangup(),
    cw.StartMediaBuffering(),
    cw.StopMediaBuffering(),
    cw.StopMediaBuffering("r1"),
    cw.MarkMedia("m1"),
    cw.MarkMedia(None),
    cw.FlushMedia(),
    cw.PauseMedia(),
    cw.ContinueMedia(),
    cw.ReportQueueDrained(),
    cw.GetStatus(),
    cw.SetMediaDirection(cw.MediaDirection.IN),
]


def as_plain(event: cw.Event) -> cw.Event:
    """What survives the plain-text form, which drops channel variables and some channel ids."""
    if isinstance(event, cw.MediaStart):
        return dataclasses.replace(event, channel_variables={}, control_format=PLAIN)
    if isinstance(event, cw.Status | cw.DtmfEnd | cw.AsteriskError):
        return event
    assert isinstance(
        event,
        cw.MediaXoff | cw.MediaXon | cw.QueueDrained | cw.MediaBufferingCompleted | cw.MediaMarkProcessed,
    )
    return dataclasses.replace(event, channel_id=None)


@pytest.mark.parametrize("event", EVENTS, ids=repr)
@pytest.mark.parametrize("fmt", list(ControlFormat))
def test_every_event_round_trips(event: cw.Event, fmt: ControlFormat) -> None:
    text = cw.encode_event(event, fmt)
    assert text.startswith("{") == (fmt is JSON)
    assert cw.parse_event(text) == (event if fmt is JSON else as_plain(event))


@pytest.mark.parametrize("cmd", COMMANDS, ids=repr)
@pytest.mark.parametrize("fmt", list(ControlFormat))
def test_every_command_round_trips(cmd: cw.Command, fmt: ControlFormat) -> None:
    if fmt is PLAIN and isinstance(cmd, cw.SetMediaDirection):
        with pytest.raises(ValueError, match="JSON-only"):
            cw.encode_command(cmd, fmt)
        return
    text = cw.encode_command(cmd, fmt)
    assert len(text.encode()) <= 128
    assert cw.parse_command(text) == cmd


@pytest.mark.parametrize(
    ("cmd", "json_text", "plain_text"),
    [
        (cw.Hangup(), '{"command":"HANGUP"}', "HANGUP"),
        (
            cw.StopMediaBuffering("r1"),
            '{"command":"STOP_MEDIA_BUFFERING","correlation_id":"r1"}',
            "STOP_MEDIA_BUFFERING r1",
        ),
        (cw.StopMediaBuffering(), '{"command":"STOP_MEDIA_BUFFERING"}', "STOP_MEDIA_BUFFERING"),
        (cw.MarkMedia("m1f"), '{"command":"MARK_MEDIA","correlation_id":"m1f"}', "MARK_MEDIA m1f"),
        (cw.ReportQueueDrained(), '{"command":"REPORT_QUEUE_DRAINED"}', "REPORT_QUEUE_DRAINED"),
    ],
)
def test_commands_encode_exactly(cmd: cw.Command, json_text: str, plain_text: str) -> None:
    assert cw.encode_command(cmd, JSON) == json_text
    assert cw.encode_command(cmd, PLAIN) == plain_text


def test_set_media_direction_is_json_only_and_validated() -> None:
    cmd = cw.SetMediaDirection(cw.MediaDirection.OUT)
    assert cw.encode_command(cmd, JSON) == '{"command":"SET_MEDIA_DIRECTION","direction":"out"}'
    with pytest.raises(ValueError):
        cw.SetMediaDirection("sideways")  # type: ignore[arg-type]
    assert isinstance(cw.parse_command("SET_MEDIA_DIRECTION in"), cw.ProtocolError)


def test_commands_over_128_bytes_are_refused() -> None:
    long_id = "x" * 110
    with pytest.raises(ValueError, match="128"):
        cw.encode_command(cw.MarkMedia(long_id), JSON)
    assert cw.encode_command(cw.MarkMedia(long_id), PLAIN) == f"MARK_MEDIA {long_id}"  # 121 bytes: fits
    padded = '{"command":"GET_STATUS","pad":"' + "p" * 120 + '"}'
    assert isinstance(cw.parse_command(padded), cw.ProtocolError)


@pytest.mark.parametrize("bad", ["", "a b", "tab\there", "nl\n", "\x00"])
def test_correlation_ids_must_be_bare_words(bad: str) -> None:
    with pytest.raises(ValueError):
        cw.MarkMedia(bad)
    with pytest.raises(ValueError):
        cw.StopMediaBuffering(bad)


# ------------------------------------------------------------------ wire forms of each release


def test_plain_media_start_22_6_has_no_channel_id() -> None:
    ev = cw.parse_event(
        "MEDIA_START connection_id:ai channel:WebSocket/ai/0x55 format:ulaw optimal_frame_size:160 ptime:20"
    )
    assert ev == cw.MediaStart("ai", "WebSocket/ai/0x55", None, "ulaw", 160, 20, {}, PLAIN)


def test_plain_media_start_22_7_has_channel_id() -> None:
    ev = cw.parse_event(
        "MEDIA_START connection_id:bridge_media channel:WebSocket/bridge_media/0x7f39fc0 "
        "channel_id:1795212381.5 format:slin16 optimal_frame_size:640 ptime:20"
    )
    assert isinstance(ev, cw.MediaStart)
    assert (ev.channel_id, ev.format, ev.optimal_frame_size, ev.ptime) == ("1795212381.5", "slin16", 640, 20)
    assert ev.control_format is PLAIN
    assert dict(ev.channel_variables) == {}


NEWER_JSON_START = (
    '{"event":"MEDIA_START","connection_id":"bridge_media","channel":"WebSocket/bridge_media/0x7f2",'
    '"channel_id":"1796525050.2","format":"slin16","optimal_frame_size":640,"ptime":20,'
    '"passthrough":false,"unbuffered":true,"media_direction":"out","some_future_field":{"x":[1,2]},'
    '"channel_variables":{"BRIDGE_CALL_ID":"c-1","__CUSTOMER":"acme-42"}}'
)


def test_newer_media_start_fields_are_read_and_unknown_ones_ignored() -> None:
    # asterisk/asterisk#2120 adds `passthrough` and `unbuffered` to MEDIA_START in both formats.
    ev = cw.parse_event(NEWER_JSON_START)
    assert isinstance(ev, cw.MediaStart)
    assert (ev.passthrough, ev.unbuffered) == (False, True)
    assert dict(ev.channel_variables) == {"BRIDGE_CALL_ID": "c-1", "__CUSTOMER": "acme-42"}
    plain = cw.parse_event(
        "MEDIA_START connection_id:bridge_media channel:WebSocket/bridge_media/0x7f2 channel_id:1.2 "
        "format:ulaw optimal_frame_size:160 ptime:20 passthrough:true unbuffered:false future:thing"
    )
    assert isinstance(plain, cw.MediaStart)
    assert (plain.passthrough, plain.unbuffered, plain.format) == (True, False, "ulaw")


def test_media_start_of_22_10_says_nothing_about_modes() -> None:
    ev = cw.parse_event(
        "MEDIA_START connection_id:a channel:WebSocket/a/0x1 channel_id:1.2 format:ulaw "
        "optimal_frame_size:160 ptime:20"
    )
    assert isinstance(ev, cw.MediaStart)
    assert (ev.passthrough, ev.unbuffered) == (None, None)


@pytest.mark.parametrize(
    "text",
    [
        NEWER_JSON_START.replace('"passthrough":false', '"passthrough":"no"'),
        NEWER_JSON_START.replace('"unbuffered":true', '"unbuffered":1'),
        "MEDIA_START connection_id:a channel:b format:ulaw optimal_frame_size:160 ptime:20 passthrough:yes",
    ],
)
def test_a_known_mode_field_of_the_wrong_type_is_still_refused(text: str) -> None:
    ev = cw.parse_event(text)
    assert isinstance(ev, cw.ProtocolError)


@pytest.mark.parametrize("fmt", [JSON, PLAIN])
def test_mode_fields_round_trip(fmt: cw.ControlFormat) -> None:
    start = cw.MediaStart(
        "a", "WebSocket/a/0x1", "1.2", "ulaw", 160, 20, {}, fmt, passthrough=False, unbuffered=True
    )
    assert cw.parse_event(cw.encode_event(start, fmt)) == start


def test_plain_tokens_split_at_first_colon() -> None:
    ev = cw.parse_event(
        "MEDIA_START connection_id:a:b channel:X/y:z format:slin optimal_frame_size:320 ptime:20"
    )
    assert isinstance(ev, cw.MediaStart)
    assert (ev.connection_id, ev.channel) == ("a:b", "X/y:z")


def test_plain_status_22_6_and_22_7() -> None:
    old = cw.parse_event(
        "STATUS queue_length:3 xon_level:800 xoff_level:900 queue_full:false "
        "bulk_media:true media_paused:false"
    )
    new = cw.parse_event(
        "STATUS channel_id:9.1 queue_length:3 xon_level:800 xoff_level:900 "
        "queue_full:false bulk_media:true media_paused:false"
    )
    assert old == cw.Status(3, 800, 900, False, True, False, None)
    assert new == cw.Status(3, 800, 900, False, True, False, "9.1")


def test_plain_dtmf_and_error_forms() -> None:
    assert cw.parse_event("DTMF_END digit:*") == cw.DtmfEnd("*", None)
    assert cw.parse_event("DTMF_END digit:7 channel_id:1.5") == cw.DtmfEnd("7", "1.5")
    err = cw.parse_event("ERROR channel_id:1.5 error_text:Command: 'X' not valid in passthrough mode")
    assert err == cw.AsteriskError("Command: 'X' not valid in passthrough mode", "1.5")


def test_ids_after_event_names_are_bare_words() -> None:
    assert cw.parse_event("MEDIA_MARK_PROCESSED mark-2") == cw.MediaMarkProcessed("mark-2")
    assert cw.parse_event("MEDIA_BUFFERING_COMPLETED") == cw.MediaBufferingCompleted("")
    assert cw.parse_event('{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"1","correlation_id":""}') == (
        cw.MediaBufferingCompleted("", "1")
    )


def test_json_error_text_loses_trailing_newline() -> None:
    ev = cw.parse_event('{"event":"ERROR","channel_id":"1","error_text":"bad direction.\\n"}')
    assert ev == cw.AsteriskError("bad direction.", "1")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("HELLO world", "unknown event"),
        ("[1,2]", "unknown event"),
        ("{not json", "invalid JSON"),
        ("[]", "unknown event"),
        ('{"event":1}', "unknown event"),
        ('"MEDIA_XON"', "unknown event"),
        ('{"event":"MEDIA_BOGUS"}', "unknown event"),
        ('{"event":"STATUS","queue_length":1}', "missing"),
        (
            '{"event":"STATUS","queue_length":"1","xon_level":800,"xoff_level":900,"queue_full":false,'
            '"bulk_media":false,"media_paused":false}',
            "queue_length",
        ),
        (
            '{"event":"STATUS","queue_length":1,"xon_level":800,"xoff_level":900,"queue_full":0,'
            '"bulk_media":false,"media_paused":false}',
            "queue_full",
        ),
        (
            '{"event":"MEDIA_START","connection_id":"a","channel":"b","format":"ulaw","optimal_frame_size":true,'
            '"ptime":20}',
            "optimal_frame_size",
        ),
        (
            '{"event":"MEDIA_START","connection_id":"a","channel":"b","format":"ulaw","optimal_frame_size":0,'
            '"ptime":20}',
            "optimal_frame_size",
        ),
        (
            '{"event":"MEDIA_START","connection_id":"a","channel":"b","format":"ulaw","optimal_frame_size":160,'
            '"ptime":20,"channel_variables":{"A":1}}',
            "channel_variables",
        ),
        ('{"event":"MEDIA_XOFF","channel_id":7}', "channel_id"),
        ('{"event":"DTMF_END","digit":"12"}', "DTMF"),
        ("MEDIA_START connection_id:a channel:b format:ulaw optimal_frame_size:1x0 ptime:20", "optimal"),
        ("MEDIA_START connection_id:a channel:b format:ulaw optimal_frame_size:160", "ptime"),
        ("MEDIA_START connection_id:a connection_id:b", "duplicate"),
        ("STATUS queue_length:1 junk", "key:value"),
        (
            "STATUS queue_length:1 xon_level:800 xoff_level:900 queue_full:yes bulk_media:false "
            "media_paused:false",
            "queue_full",
        ),
        ("DTMF_END digit:", "digit"),
        ("ERROR channel_id:1", "error_text"),
        ("MEDIA_MARK_PROCESSED \x01", "bare word"),
    ],
)
def test_malformed_events_become_protocol_errors(text: str, reason: str) -> None:
    ev = cw.parse_event(text)
    assert isinstance(ev, cw.ProtocolError)
    assert reason in ev.reason
    assert ev.raw == text if len(text) <= 80 else ev.raw == text[:77] + "..."


def test_protocol_error_excerpt_is_short() -> None:
    ev = cw.parse_event("X" * 5000)
    assert isinstance(ev, cw.ProtocolError)
    assert len(ev.raw) <= 80
    assert ev.raw.startswith("XXX")
    deep = cw.parse_event("[" * 100_000)
    assert isinstance(deep, cw.ProtocolError)
    deep_json = cw.parse_event('{"event":' + "[" * 100_000)
    assert isinstance(deep_json, cw.ProtocolError)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"command": "MARK_MEDIA", "correlation_id": "mark-1"}', cw.MarkMedia("mark-1")),
        ("  GET_STATUS  ", cw.GetStatus()),
        ('{"command":"MARK_MEDIA","correlation_id":""}', cw.MarkMedia(None)),
    ],
)
def test_parse_command_accepts_what_asterisk_accepts(text: str, expected: cw.Command) -> None:
    assert cw.parse_command(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{not json",
        "BOGUS",
        "get_status",
        "HANGUP now",
        "MARK_MEDIA a b",
        '{"command":5}',
        '{"command":"MARK_MEDIA","correlation_id":5}',
        '{"command":"SET_MEDIA_DIRECTION","direction":"up"}',
    ],
)
def test_parse_command_rejects(text: str) -> None:
    assert isinstance(cw.parse_command(text), cw.ProtocolError)


def test_events_are_frozen_and_hashable() -> None:
    start = EVENTS[0]
    assert isinstance(start, cw.MediaStart)
    assert len({start, start}) == 1
    with pytest.raises(TypeError):
        start.channel_variables["X"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        start.format = "ulaw"  # type: ignore[misc]


def test_detect_format() -> None:
    assert cw.detect_format(' {"event":"MEDIA_START"}') is JSON
    assert cw.detect_format("MEDIA_START connection_id:a") is PLAIN


# ------------------------------------------------------------------ property-based

words = st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=12)
opt_id = st.none() | words
digits = st.sampled_from(sorted(cw.DTMF_DIGITS))
small = st.integers(0, 5000)

event_strategy: st.SearchStrategy[cw.Event] = st.one_of(
    st.builds(
        cw.MediaStart,
        words,
        words,
        opt_id,
        words,
        st.integers(1, 8000),
        st.integers(1, 100),
        st.dictionaries(words, st.text(max_size=20), max_size=4),
        st.just(JSON),
    ),
    st.builds(cw.MediaXoff, opt_id),
    st.builds(cw.MediaXon, opt_id),
    st.builds(cw.QueueDrained, opt_id),
    st.builds(cw.Status, small, small, small, st.booleans(), st.booleans(), st.booleans(), opt_id),
    st.builds(cw.MediaBufferingCompleted, words | st.just(""), opt_id),
    st.builds(cw.MediaMarkProcessed, words | st.just(""), opt_id),
    st.builds(cw.DtmfEnd, digits, opt_id),
    st.builds(cw.AsteriskError, st.text(min_size=1, max_size=60).map(str.strip).filter(bool), opt_id),
)


@settings(deadline=None)  # no timing assertions
@given(event_strategy, st.sampled_from(list(ControlFormat)))
def test_generated_events_round_trip(event: cw.Event, fmt: ControlFormat) -> None:
    expected = event if fmt is JSON else as_plain(event)
    if fmt is PLAIN and isinstance(event, cw.AsteriskError):
        expected = dataclasses.replace(event, error_text=event.error_text.strip())
    assert cw.parse_event(cw.encode_event(event, fmt)) == expected


@settings(deadline=None)  # no timing assertions
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    ev = cw.parse_event(text)
    cmd = cw.parse_command(text)
    assert isinstance(ev, cw.Event)
    assert isinstance(cmd, cw.Command | cw.ProtocolError)
    first = text.strip().split(" ", 1)[0]
    if not first.startswith("{") and first not in {
        "MEDIA_START",
        "MEDIA_XOFF",
        "MEDIA_XON",
        "QUEUE_DRAINED",
        "STATUS",
        "MEDIA_BUFFERING_COMPLETED",
        "MEDIA_MARK_PROCESSED",
        "DTMF_END",
        "ERROR",
    }:
        assert isinstance(ev, cw.ProtocolError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)

VALID: dict[str, dict[str, Any]] = {
    "MEDIA_START": {
        "connection_id": "a",
        "channel": "b",
        "channel_id": "1.2",
        "format": "slin16",
        "optimal_frame_size": 640,
        "ptime": 20,
        "channel_variables": {"A": "b"},
    },
    "STATUS": {
        "channel_id": "1",
        "queue_length": 1,
        "xon_level": 800,
        "xoff_level": 900,
        "queue_full": False,
        "bulk_media": False,
        "media_paused": False,
    },
    "DTMF_END": {"digit": "5", "channel_id": "1"},
    "ERROR": {"error_text": "x", "channel_id": "1"},
    "MEDIA_MARK_PROCESSED": {"correlation_id": "m1", "channel_id": "1"},
    "MEDIA_XON": {"channel_id": "1"},
}
REQUIRED = {
    "MEDIA_START": {"connection_id", "channel", "format", "optimal_frame_size", "ptime"},
    "STATUS": set(VALID["STATUS"]) - {"channel_id"},
    "DTMF_END": {"digit"},
    "ERROR": {"error_text"},
}
INT_KEYS = {"optimal_frame_size", "ptime", "queue_length", "xon_level", "xoff_level"}
BOOL_KEYS = {"queue_full", "bulk_media", "media_paused"}


def wrong_for(key: str) -> st.SearchStrategy[object]:
    if key in INT_KEYS:
        return json_values.filter(lambda v: type(v) is not int) | st.integers(max_value=-1)
    if key in BOOL_KEYS:
        return json_values.filter(lambda v: type(v) is not bool)
    if key == "channel_variables":
        return json_values.filter(
            lambda v: not isinstance(v, dict) or any(not isinstance(x, str) for x in v.values())
        )
    return json_values.filter(lambda v: not isinstance(v, str))


@st.composite
def broken_event(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(VALID)))
    obj: dict[str, object] = {"event": name, **VALID[name]}
    key = draw(st.sampled_from(sorted(VALID[name])))
    if key in REQUIRED.get(name, ()) and draw(st.booleans()):
        del obj[key]
    else:
        obj[key] = draw(wrong_for(key))
    return json.dumps(obj)


@settings(deadline=None)  # no timing assertions
@given(broken_event())
def test_structured_but_wrong_json_is_a_protocol_error(text: str) -> None:
    assert isinstance(cw.parse_event(text), cw.ProtocolError)


@settings(deadline=None)  # no timing assertions
@given(json_values.filter(lambda v: not isinstance(v, dict)))
def test_non_object_json_is_a_protocol_error(value: object) -> None:
    assert isinstance(cw.parse_event(json.dumps(value)), cw.ProtocolError)
    assert isinstance(cw.parse_command(json.dumps(value)), cw.ProtocolError)


def test_valid_fixtures_are_valid() -> None:  # guards the fuzz test above against vacuity
    for name, fields in VALID.items():
        assert not isinstance(cw.parse_event(json.dumps({"event": name, **fields})), cw.ProtocolError)
