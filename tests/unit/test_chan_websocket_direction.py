"""What the dialplan says about a chan_websocket call (dial options, direction, variables, the AMD
verdict) and how the leg honours a one-way direction, checked against the simulated Asterisk's own
model of chan_websocket (an independent implementation that records every command it would refuse)."""

from __future__ import annotations

import pytest

from bridge.asterisk import chan_websocket as cw
from bridge.asterisk.call_metadata import (
    announced_call_id,
    call_variables,
    dial_options,
    media_direction,
)
from bridge.asterisk.chan_websocket import ControlFormat, MediaDirection
from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.leg_events import BinaryMessage, Outgoing, Started, TextMessage
from bridge.audio.formats import SLIN16
from bridge.simulate.chan_model import ChannelModel
from bridge.simulate.wire import Dialect, EventFormatter

JSON, PLAIN = ControlFormat.JSON, ControlFormat.PLAIN
FRAME = SLIN16.frame_bytes
# DIALEDPEERNUMBER as Asterisk 22.10.1 reported it (captures ws_dtmf_json.jsonl), plus `d()`.
DIALED = "bridge_media/c(slin16)f(json)v(callId=71c182c2-69c3-40cf-a0a6-518afacc6f0f)"


# ------------------------------------------------------------------ reading the dialplan's metadata


def test_dial_options_of_the_captured_dial_string() -> None:
    assert dial_options(DIALED) == {
        "c": "slin16",
        "f": "json",
        "v": "callId=71c182c2-69c3-40cf-a0a6-518afacc6f0f",
    }
    assert dial_options("bridge_media/c(ulaw)nd(out)p") == {"c": "ulaw", "n": "", "d": "out", "p": ""}
    assert dial_options("bridge_media/v(a=(b),c=d)d(in)") == {"v": "a=(b),c=d", "d": "in"}  # parentheses nest
    assert dial_options("bridge_media") == {}
    assert dial_options("bridge_media/c(ulaw") == {"c": "ulaw"}  # unclosed: the rest is the argument


@pytest.mark.parametrize(
    ("variables", "direction"),
    [
        ({}, MediaDirection.BOTH),
        ({"DIALEDPEERNUMBER": DIALED}, MediaDirection.BOTH),
        ({"DIALEDPEERNUMBER": DIALED + "d(out)"}, MediaDirection.OUT),
        ({"DIALEDPEERNUMBER": "bridge_media/d(in)c(ulaw)"}, MediaDirection.IN),
        ({"DIALEDPEERNUMBER": "bridge_media/d(sideways)"}, MediaDirection.BOTH),
        ({"BRIDGE_MEDIA_DIRECTION": "out"}, MediaDirection.OUT),  # ARI externalMedia has no dial string
        ({"__BRIDGE_MEDIA_DIRECTION": "IN"}, MediaDirection.IN),
    ],
)
def test_media_direction_comes_from_the_dial_options(
    variables: dict[str, str], direction: MediaDirection
) -> None:
    assert media_direction(variables) is direction


def test_call_variables_prefer_the_channel_over_the_shared_query() -> None:
    query = {"callId": "c-1", "aNumberE164": "34600111555", "amd": "NOTSURE"}
    channel = {
        "__BRIDGE_CALL_ID": "c-1",
        "BRIDGE_AMD_STATUS": "MACHINE",
        "__CUSTOMER": "acme",
        "CUSTOMER": "x",
    }
    merged = call_variables(query, channel)
    assert merged["amd"] == "MACHINE"  # the channel's own variable beats v()
    assert merged["BRIDGE_CALL_ID"] == "c-1"  # `__X` keeps its prefix in MEDIA_START: read as X
    assert merged["CUSTOMER"] == "x"  # unless X itself is there
    assert merged["aNumberE164"] == "34600111555"
    assert announced_call_id(channel) == "c-1"


def test_amd_from_the_query_alone_and_an_empty_one_is_no_verdict() -> None:
    assert call_variables({"callId": "c", "amd": "HUMAN"}, {})["amd"] == "HUMAN"  # plain text: no variables
    assert "amd" not in call_variables({"callId": "c", "amd": ""}, {})  # AMD did not run
    assert announced_call_id({"DIALEDPEERNUMBER": DIALED}) == ""


# ------------------------------------------------------------------ a one-way leg


class Asterisk:
    """The simulated Asterisk's chan_websocket model, created with a direction, fed what the leg sends."""

    def __init__(self, direction: str) -> None:
        dialect = Dialect.of("json")
        self.model = ChannelModel(SLIN16, dialect, EventFormatter(dialect, "1.2"))
        self.model.direction = direction  # type: ignore[assignment]  # what d() would have set
        self.dialed = f"bridge_media/c(slin16)f(json)d({direction})"

    def start(self, leg: ChanWebsocketLeg) -> None:
        text = self.model.events.media_start(
            connection_id="bridge_media",
            channel="WebSocket/bridge_media/0x1",
            format_name="slin16",
            optimal_frame_size=FRAME,
            ptime=20,
            channel_variables={"DIALEDPEERNUMBER": self.dialed},
        )
        assert isinstance(leg.receive_text(text, 0.0)[0], Started)

    def feed(self, out: list[Outgoing]) -> None:
        for message in out:
            if isinstance(message, TextMessage):
                self.model.receive_text(message.text.encode())
            elif isinstance(message, BinaryMessage):
                self.model.receive_binary(message.data)


def run(leg: ChanWebsocketLeg, asterisk: Asterisk, until: float, start: float = 0.0) -> list[Outgoing]:
    sent: list[Outgoing] = []
    now = start
    while now < until:
        out, _ = leg.poll(now)
        asterisk.feed(out)
        sent += out
        asterisk.model.tick()
        for text in asterisk.model.take_outbox():
            leg.receive_text(text, now)
        now += 0.02
    return sent


def test_an_in_only_leg_sends_no_audio_and_nothing_asterisk_refuses() -> None:
    asterisk, leg = Asterisk("in"), ChanWebsocketLeg()
    asterisk.start(leg)
    assert leg.direction is MediaDirection.IN
    assert (leg.receives_audio, leg.sends_audio) == (True, False)
    assert not leg.queue_audio(b"\x01" * FRAME * 10)  # Asterisk would drop it: it is not queued
    leg.end_response()
    leg.pause(0.0)  # refused by Asterisk in `in`: not sent
    sent = run(leg, asterisk, 0.5)
    assert not [m for m in sent if isinstance(m, BinaryMessage)]
    assert leg.queued_ms(0.5) == 0
    leg.begin_hangup(0.5)  # nothing to drain: HANGUP at once, no wait for a drain report that never comes
    out, _ = leg.poll(0.5)
    assert [m.text for m in out if isinstance(m, TextMessage)] == [cw.encode_command(cw.Hangup(), JSON)]
    asterisk.feed(out)
    assert asterisk.model.hangup_requested
    assert asterisk.model.stats.errors == []


def test_an_out_only_leg_plays_as_usual_and_expects_no_caller_audio() -> None:
    asterisk, leg = Asterisk("out"), ChanWebsocketLeg()
    asterisk.start(leg)
    assert (leg.receives_audio, leg.sends_audio) == (False, True)
    assert leg.queue_audio(b"\x01" * FRAME * 25)
    leg.end_response()
    run(leg, asterisk, 1.0)
    leg.begin_hangup(1.0)
    run(leg, asterisk, 3.0, start=1.0)
    assert leg.hangup_sent
    assert asterisk.model.stats.frames_played == 25
    assert asterisk.model.stats.errors == []


def test_set_media_direction_switches_at_runtime() -> None:
    asterisk, leg = Asterisk("both"), ChanWebsocketLeg()
    asterisk.start(leg)
    assert leg.queue_audio(b"\x01" * FRAME * 50)
    run(leg, asterisk, 0.1)
    leg.set_media_direction(MediaDirection.IN, 0.1)  # queued playout is dropped first, as Asterisk would
    assert leg.queued_ms(0.1) == 0
    sent = run(leg, asterisk, 0.6, start=0.1)
    assert [m.text for m in sent if isinstance(m, TextMessage)][:2] == [
        cw.encode_command(cw.FlushMedia(), JSON),
        cw.encode_command(cw.SetMediaDirection(MediaDirection.IN), JSON),
    ]
    assert asterisk.model.direction == "in"
    assert not leg.queue_audio(b"\x01" * FRAME)
    leg.set_media_direction(MediaDirection.BOTH, 0.6)
    assert leg.queue_audio(b"\x01" * FRAME * 5)
    leg.end_response()
    run(leg, asterisk, 1.0, start=0.6)
    assert asterisk.model.stats.errors == []


def test_set_media_direction_needs_json_control() -> None:
    leg = ChanWebsocketLeg()
    start = cw.MediaStart("ai", "WebSocket/ai/0x1", "1.2", "slin16", FRAME, 20, {}, PLAIN)
    leg.receive_text(cw.encode_event(start, PLAIN), 0.0)
    with pytest.raises(ValueError, match="JSON"):
        leg.set_media_direction(MediaDirection.OUT, 0.0)
