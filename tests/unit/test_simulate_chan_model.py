"""The fake Asterisk's chan_websocket model, driven without sockets or clocks.

Expected strings are copied from the Asterisk 22.10.1 wire captures (ws_full_json / ws_plain), so the
model is checked against what a real Asterisk sent, not against our reading of the spec.
"""

from __future__ import annotations

import json
from typing import Literal

import pytest

from bridge.audio.formats import SLIN16, ULAW, AudioFormat
from bridge.simulate.chan_model import ChannelModel, frame_too_big
from bridge.simulate.wire import Dialect, EventFormatter, PlainVariant

CHAN_ID = "1795212352.2"
FRAME = SLIN16.frame_bytes  # 640


def model(
    control: Literal["json", "plain"] = "json", variant: PlainVariant = "22.10", fmt: AudioFormat = SLIN16
) -> ChannelModel:
    dialect = Dialect.of(control, variant)
    return ChannelModel(fmt, dialect, EventFormatter(dialect, CHAN_ID))


def cmd(m: ChannelModel, **fields: str) -> list[str]:
    m.receive_text(json.dumps(fields).encode())
    return m.take_outbox()


def plain(m: ChannelModel, text: str) -> list[str]:
    m.receive_text(text.encode())
    return m.take_outbox()


def events(texts: list[str]) -> list[str]:
    return [json.loads(t)["event"] for t in texts]


def run_ticks(m: ChannelModel, n: int) -> tuple[list[bytes | None], list[str]]:
    played: list[bytes | None] = []
    sent: list[str] = []
    for _ in range(n):
        played.append(m.tick())
        sent += m.take_outbox()
    return played, sent


def test_whole_frames_play_one_per_tick_and_partial_chunk_is_dropped() -> None:
    m = model()
    m.receive_binary(bytes(range(256)) * 5)  # 1280 bytes = 2 frames
    m.receive_binary(b"\x01" * 1000)  # 1 frame + 360 dropped
    assert m.queue_length == 3
    assert m.stats.error_counts == {"partial_frame_dropped": 1}
    assert "360 of 1000" in m.stats.errors[0]
    played, _ = run_ticks(m, 4)
    assert [len(p) if p else 0 for p in played] == [FRAME, FRAME, FRAME, 0]
    assert played[0] == (bytes(range(256)) * 5)[:FRAME]


def test_buffering_joins_remainders_and_stop_queues_short_frame_then_completion() -> None:
    m = model()
    assert cmd(m, command="START_MEDIA_BUFFERING") == []
    for _ in range(3):
        m.receive_binary(b"\x02" * 1000)
    assert m.queue_length == 4  # as STATUS#6 in the capture
    assert cmd(m, command="GET_STATUS") == [
        '{"event":"STATUS","channel_id":"1795212352.2","queue_length":4,"xon_level":800,"xoff_level":900,'
        '"queue_full":false,"bulk_media":true,"media_paused":false}'
    ]
    assert cmd(m, command="STOP_MEDIA_BUFFERING", correlation_id="buf-1") == []
    played, sent = run_ticks(m, 6)
    assert [len(p) for p in played[:5] if p] == [FRAME] * 4 + [3000 - 4 * FRAME]
    assert played[5] is None
    assert sent == [
        '{"event":"MEDIA_BUFFERING_COMPLETED","channel_id":"1795212352.2","correlation_id":"buf-1"}'
    ]
    assert m.stats.error_counts == {}


def test_burst_xoff_at_900_drop_past_1000_xon_below_800() -> None:
    m = model()
    cmd(m, command="PAUSE_MEDIA")
    for _ in range(1050):
        m.receive_binary(b"\x00" * FRAME)
    notes = m.take_notes()
    assert events(m.take_outbox()) == ["MEDIA_XOFF"]
    assert [n.queue_length for n in notes if n.name == "MEDIA_XOFF"] == [900]
    assert m.queue_length == 1000
    assert m.stats.error_counts == {"queue_full_drop": 50}
    assert json.loads(cmd(m, command="GET_STATUS")[0])["queue_full"] is True
    cmd(m, command="CONTINUE_MEDIA")
    _, sent = run_ticks(m, 201)
    assert sent == []
    assert m.queue_length == 799
    _, sent = run_ticks(m, 1)
    assert events(sent) == ["MEDIA_XON"]
    assert m.queue_length == 798  # STATUS#3 right after XON in the capture
    assert (m.stats.xoff_count, m.stats.xon_count, m.stats.max_queue_depth) == (1, 1, 1000)


def test_a_multi_frame_message_is_queued_frame_by_frame_as_chan_websocket_does() -> None:
    """chan_websocket.c process_binary_message: the >= 1000 check once per message, then each
    optimal_frame_size chunk queued on its own (XOFF checked per frame), one played per tick."""
    m = model(fmt=ULAW)
    m.receive_binary(b"\xff" * 160 * 895)
    m.receive_binary(bytes(range(160)) * 10)  # frames 896..905: XOFF when the 900th goes in
    assert m.queue_length == 905
    assert events(m.take_outbox()) == ["MEDIA_XOFF"]
    assert [n.queue_length for n in m.take_notes() if n.name == "MEDIA_XOFF"] == [900]
    cmd(m, command="MARK_MEDIA", correlation_id="after")
    played, sent = run_ticks(m, 905)
    assert [len(p or b"") for p in played] == [160] * 905  # ten frames from one message, ten ticks
    assert played[-10:] == [bytes(range(160))] * 10
    assert "MEDIA_MARK_PROCESSED" not in events(sent)  # the mark waits behind the message's last frame
    _, sent = run_ticks(m, 1)
    assert events(sent) == ["MEDIA_MARK_PROCESSED"]
    assert m.stats.error_counts == {}


def test_one_big_message_can_overshoot_1000() -> None:
    m = model(fmt=ULAW)
    m.receive_binary(b"\xff" * 160 * 990)
    m.receive_binary(b"\xff" * 160 * 50)  # accepted: the check is at message start only
    assert m.queue_length == 1040
    assert events(m.take_outbox()) == ["MEDIA_XOFF"]
    m.receive_binary(b"\xff" * 160)
    assert m.stats.error_counts == {"queue_full_drop": 1}


def test_marks_fire_in_order_at_the_head_and_flushed_marks_never_fire() -> None:
    m = model()
    cmd(m, command="PAUSE_MEDIA")
    for cid in ("m1", "m2"):
        m.receive_binary(b"\x00" * FRAME * 3)
        cmd(m, command="MARK_MEDIA", correlation_id=cid)
    m.receive_binary(b"\x00" * FRAME * 2)
    cmd(m, command="MARK_MEDIA", correlation_id="m3")
    cmd(m, command="CONTINUE_MEDIA")
    played, sent = run_ticks(m, 4)
    assert sum(p is not None for p in played) == 4
    assert sent == ['{"event":"MEDIA_MARK_PROCESSED","channel_id":"1795212352.2","correlation_id":"m1"}']
    cmd(m, command="PAUSE_MEDIA")
    assert cmd(m, command="FLUSH_MEDIA") == []
    cmd(m, command="MARK_MEDIA", correlation_id="m4")
    played, sent = run_ticks(m, 3)
    assert played == [None] * 3
    assert sent == []
    cmd(m, command="CONTINUE_MEDIA")
    _, sent = run_ticks(m, 3)
    assert [json.loads(s)["correlation_id"] for s in sent] == ["m4"]
    assert m.stats.marks_processed == ["m1", "m4"]
    assert m.stats.marks_flushed == ["m2", "m3"]
    assert (m.stats.flushes, m.stats.barge_ins, m.stats.frames_flushed) == (1, 1, 4)


def test_flush_leaves_buffering_and_drops_leftover_and_a_full_queue_gets_xon_next_tick() -> None:
    m = model()
    cmd(m, command="START_MEDIA_BUFFERING")
    m.receive_binary(b"\x00" * (FRAME * 950 + 100))
    assert events(m.take_outbox()) == ["MEDIA_XOFF"]
    cmd(m, command="FLUSH_MEDIA")
    m.receive_binary(b"\x00" * 100)  # not buffering any more: dropped, not joined
    assert m.queue_length == 0
    assert m.stats.error_counts == {"partial_frame_dropped": 1}
    _, sent = run_ticks(m, 1)
    assert events(sent) == ["MEDIA_XON"]


def test_queue_drained_is_one_shot_and_waits_for_an_empty_tick() -> None:
    m = model()
    m.receive_binary(b"\x00" * FRAME * 2)
    cmd(m, command="REPORT_QUEUE_DRAINED")
    _, sent = run_ticks(m, 2)
    assert sent == []
    _, sent = run_ticks(m, 3)
    assert sent == ['{"event":"QUEUE_DRAINED","channel_id":"1795212352.2"}']


def test_text_rules_long_empty_unknown_and_bad_json() -> None:
    m = model()
    long = json.dumps({"command": "GET_STATUS", "correlation_id": "x" * 150}).encode()
    m.receive_text(long)
    m.receive_text(b"")
    assert cmd(m, command="BOGUS_COMMAND") == []
    assert plain(m, "{not json") == [
        '{"event":"ERROR","channel_id":"1795212352.2","error_text":"Unable to parse JSON command"}'
    ]
    assert plain(m, "GET_STATUS") == [  # plain text on a JSON channel is just bad JSON
        '{"event":"ERROR","channel_id":"1795212352.2","error_text":"Unable to parse JSON command"}'
    ]
    assert m.take_outbox() == []
    assert m.stats.error_counts == {
        "text_too_long": 1,
        "empty_text": 1,
        "unknown_command": 1,
        "invalid_json": 2,
    }
    assert plain(m, '  {"command": "GET_STATUS"}  ') != []  # whitespace is stripped; 128 bytes is fine


def test_set_media_direction_json_and_plain() -> None:
    m = model()
    assert cmd(m, command="SET_MEDIA_DIRECTION", direction="sideways") == [
        '{"event":"ERROR","channel_id":"1795212352.2",'
        '"error_text":"\'sideways\' is not a valid direction for SET_MEDIA_DIRECTION.\\n"}'
    ]
    cmd(m, command="SET_MEDIA_DIRECTION", direction="out")
    assert not m.sends_caller_audio
    cmd(m, command="SET_MEDIA_DIRECTION", direction="in")
    m.receive_binary(b"\x00" * FRAME)
    assert m.queue_length == 0
    assert m.stats.error_counts["media_direction_in"] == 1
    assert events(cmd(m, command="MARK_MEDIA", correlation_id="x")) == ["ERROR"]
    p = model("plain", "22.10")
    assert plain(p, "SET_MEDIA_DIRECTION both")[0].startswith("ERROR channel_id:1795212352.2 error_text:")
    old = model("plain", "22.6")
    assert plain(old, "SET_MEDIA_DIRECTION both") == []
    assert old.stats.error_counts == {"unknown_command": 1}


def test_plain_22_7_has_no_marks_and_22_6_pads_short_frames() -> None:
    m = model("plain", "22.7")
    m.receive_binary(b"\x01" * FRAME)
    assert plain(m, "MARK_MEDIA m1") == []
    _, sent = run_ticks(m, 3)
    assert sent == []
    # Ignored with a log line in Asterisk, so a warning here: bridges may probe for marks this way.
    assert m.stats.error_counts == {}
    assert m.stats.warnings == ["unknown command 'MARK_MEDIA' ignored (Asterisk 22.7)"]
    old = model("plain", "22.6")
    plain(old, "START_MEDIA_BUFFERING")
    old.receive_binary(b"\x01" * 100)
    plain(old, "STOP_MEDIA_BUFFERING")
    played, sent = run_ticks(old, 2)
    assert played[0] == b"\x01" * 100 + b"\x00" * (FRAME - 100)
    assert sent == ["MEDIA_BUFFERING_COMPLETED"]
    new = model("plain", "22.10")
    plain(new, "START_MEDIA_BUFFERING")
    new.receive_binary(b"\x01" * 100)
    plain(new, "STOP_MEDIA_BUFFERING b1")
    played, sent = run_ticks(new, 2)
    assert played[0] == b"\x01" * 100
    assert sent == ["MEDIA_BUFFERING_COMPLETED b1"]


def test_plain_text_event_forms_match_the_capture() -> None:
    cap_id = "1795212381.5"
    d10 = Dialect.of("plain", "22.10")
    m = ChannelModel(SLIN16, d10, EventFormatter(d10, cap_id))
    m.receive_binary(b"\x00" * FRAME)
    assert plain(m, "GET_STATUS") == [
        "STATUS channel_id:1795212381.5 queue_length:1 xon_level:800 xoff_level:900 "
        "queue_full:false bulk_media:false media_paused:false"
    ]
    plain(m, "MARK_MEDIA mark-1")
    _, sent = run_ticks(m, 2)
    assert sent == ["MEDIA_MARK_PROCESSED mark-1"]
    start = EventFormatter(d10, cap_id).media_start(
        connection_id="bridge_media",
        channel="WebSocket/bridge_media/0x7f39fc007310",
        format_name="slin16",
        optimal_frame_size=640,
        ptime=20,
        channel_variables={},
    )
    assert start == (
        "MEDIA_START connection_id:bridge_media channel:WebSocket/bridge_media/0x7f39fc007310 "
        "channel_id:1795212381.5 format:slin16 optimal_frame_size:640 ptime:20"
    )
    d6 = Dialect.of("plain", "22.6")
    f6 = EventFormatter(d6, cap_id)
    assert "channel_id" not in f6.media_start(
        connection_id="c",
        channel="WebSocket/c/0x1",
        format_name="ulaw",
        optimal_frame_size=160,
        ptime=20,
        channel_variables={},
    )
    assert f6.status(0, False, False, True).startswith("STATUS queue_length:0 ")
    assert f6.dtmf_end("5") == "DTMF_END digit:5"
    assert EventFormatter(d10, cap_id).dtmf_end("#") == "DTMF_END digit:# channel_id:1795212381.5"


def test_json_media_start_matches_the_capture() -> None:
    d = Dialect.of("json")
    text = EventFormatter(d, CHAN_ID).media_start(
        connection_id="bridge_media",
        channel="WebSocket/bridge_media/0x7f3a2400d7c0",
        format_name="slin16",
        optimal_frame_size=640,
        ptime=20,
        channel_variables={
            "MEDIA_WEBSOCKET_CONNECTION_ID": "bridge_media",
            "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "640",
        },
    )
    assert text == (
        '{"event":"MEDIA_START","connection_id":"bridge_media","channel":"WebSocket/bridge_media/0x7f3a2400d7c0",'
        '"channel_id":"1795212352.2","format":"slin16","optimal_frame_size":640,"ptime":20,"channel_variables":'
        '{"MEDIA_WEBSOCKET_CONNECTION_ID":"bridge_media","MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE":"640"}}'
    )
    assert (
        EventFormatter(d, CHAN_ID).dtmf_end("5")
        == '{"event":"DTMF_END","channel_id":"1795212352.2","digit":"5"}'
    )


def test_hangup_and_answer_and_command_sent_as_binary() -> None:
    m = model()
    cmd(m, command="ANSWER")
    assert m.answered
    assert not m.hangup_requested
    m.receive_binary(b'{"command":"HANGUP"}' + b"\x00" * 620)
    assert m.stats.error_counts == {"command_as_binary": 1}
    assert not m.hangup_requested
    cmd(m, command="HANGUP")
    assert m.hangup_requested
    assert m.discard_on_hangup() == 1


@pytest.mark.parametrize(
    ("payload", "too_big"), [(125, False), (126, False), (65531, False), (65532, True), (70000, True)]
)
def test_frame_size_limit_counts_the_header(payload: int, too_big: bool) -> None:
    assert frame_too_big(payload) is too_big
