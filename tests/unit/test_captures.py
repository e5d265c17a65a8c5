"""Replay the wire transcripts recorded against a real Asterisk 22.10.1 through our codecs.

The captures live outside the repository (../shared/captures); the tests skip when it is absent.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bridge.asterisk import audiosocket as aus
from bridge.asterisk import chan_websocket as cw
from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.leg_events import (
    AudioReceived,
    Drained,
    DtmfReceived,
    ProtocolErrorSeen,
    Started,
    StatusReceived,
    Xoff,
    Xon,
)

CAPTURES = Path(__file__).resolve().parents[2].parent / "shared" / "captures" / "asterisk-22.10.1"

# Commands the capture script sent on purpose to see Asterisk refuse them: it answered the first two
# with ERROR, ignored the unknown one, and ignored the oversize ones (shown as "<N-byte GET_STATUS>").
REFUSED_BY_ASTERISK = {
    '{"command": "SET_MEDIA_DIRECTION", "direction": "sideways"}',
    "{not json",
    '{"command": "BOGUS_COMMAND"}',
    "BOGUS_COMMAND",
}
OVERSIZE_PLACEHOLDER = re.compile(r"^<\d+-byte \w+>$")


def load(name: str) -> list[dict[str, Any]]:
    if not CAPTURES.is_dir():
        pytest.skip(f"captures not available at {CAPTURES}")
    path = CAPTURES / name
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_missing_captures_skip_cleanly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys.modules[__name__], "CAPTURES", tmp_path / "absent")
    with pytest.raises(pytest.skip.Exception):
        load("ws_full_json.jsonl")


def ws_files() -> list[str]:
    if not CAPTURES.is_dir():
        return ["ws_full_json.jsonl"]  # the tests then skip
    return sorted(p.name for p in CAPTURES.glob("ws_*.jsonl"))


@pytest.mark.parametrize("name", ws_files())
def test_every_message_from_asterisk_parses(name: str) -> None:
    records = load(name)
    texts = [r["text"] for r in records if r.get("kind") == "text_rx"]
    assert texts
    for text in texts:
        ev = cw.parse_event(text)
        assert not isinstance(ev, cw.ProtocolError), (text, ev)
        if isinstance(ev, cw.MediaStart):
            assert ev.control_format is cw.detect_format(text)
            assert (ev.connection_id, ev.format, ev.optimal_frame_size, ev.ptime) == (
                "bridge_media",
                "slin16",
                640,
                20,
            )
            assert ev.channel_id  # 22.7+ carries it in both formats
        # Asterisk's own JSON is compact: our encoder reproduces it byte for byte
        if text.startswith("{") and not isinstance(ev, cw.AsteriskError):
            assert cw.encode_event(ev, cw.ControlFormat.JSON) == text


@pytest.mark.parametrize("name", ws_files())
def test_every_command_sent_parses_unless_asterisk_refused_it(name: str) -> None:
    records = load(name)
    for rec in records:
        if rec.get("kind") != "text_tx":
            continue
        text = rec["text"]
        cmd = cw.parse_command(text)
        if text in REFUSED_BY_ASTERISK or OVERSIZE_PLACEHOLDER.match(text):
            assert isinstance(cmd, cw.ProtocolError), text  # we refuse what Asterisk refused
            continue
        assert not isinstance(cmd, cw.ProtocolError), (text, cmd)
        fmt = cw.detect_format(text)
        assert cw.parse_command(cw.encode_command(cmd, fmt)) == cmd


def test_json_refusals_drew_error_events() -> None:
    records = load("ws_full_json.jsonl")
    errors = [
        cw.parse_event(r["text"]) for r in records if r.get("kind") == "text_rx" and '"ERROR"' in r["text"]
    ]
    assert errors == [
        cw.AsteriskError("'sideways' is not a valid direction for SET_MEDIA_DIRECTION.", "1795212352.2"),
        cw.AsteriskError("Unable to parse JSON command", "1795212352.2"),
    ]


def test_inherited_variables_reach_media_start() -> None:
    records = load("ws_inherited_vars.jsonl")
    start = next(cw.parse_event(r["text"]) for r in records if r.get("kind") == "text_rx")
    assert isinstance(start, cw.MediaStart)
    assert start.channel_variables["XCALLID"] == "abc123"  # _X arrives as X
    assert start.channel_variables["__XDEEP"] == "deep1"  # __X keeps its prefix
    assert start.channel_variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == "640"


def binary_sizes(rec: dict[str, Any]) -> list[int]:
    """The sizes of the binary frames one record stands for: one frame, or a summarised run."""
    if rec.get("kind") == "bin_rx":
        return [rec["size"]]
    if rec.get("kind") == "bin_rx_run":
        return [int(size) for size, count in rec["sizes"].items() for _ in range(count)]
    return []


# (ws_uri_params_stale_and_concurrent.jsonl interleaves four connections: not one leg's story)
@pytest.mark.parametrize("name", [n for n in ws_files() if "concurrent" not in n])
def test_replaying_a_call_through_the_leg(name: str) -> None:
    records = load(name)
    leg = ChanWebsocketLeg()
    events = []
    received: Counter[int] = Counter()
    for rec in records:
        if rec.get("kind") == "text_rx":
            events += leg.receive_text(rec["text"], rec["t"])
        for size in binary_sizes(rec):
            events += leg.receive_binary(b"\x00" * size, rec["t"])
            received[size] += 1
        leg.poll(rec["t"])
    kinds = Counter(type(e) for e in events)
    rx = [cw.parse_event(r["text"]) for r in records if r.get("kind") == "text_rx"]
    sizes = Counter(len(e.data) for e in events if isinstance(e, AudioReceived))
    assert isinstance(events[0], Started)
    assert kinds[Started] == 1
    assert kinds[ProtocolErrorSeen] == 0
    assert sizes == received
    if "dtmf" not in name:  # the DTMF calls play a tone, not the prompt
        assert 416 in sizes  # the short last frame of the prompt is accepted
    assert kinds[DtmfReceived] == sum(isinstance(e, cw.DtmfEnd) for e in rx)
    assert kinds[Xoff] == sum(isinstance(e, cw.MediaXoff) for e in rx)
    assert kinds[Xon] == sum(isinstance(e, cw.MediaXon) for e in rx)
    assert kinds[Drained] == sum(isinstance(e, cw.QueueDrained) for e in rx)
    assert kinds[StatusReceived] == sum(isinstance(e, cw.Status) for e in rx)
    assert leg.counters.frames_in == sum(sizes.values())


@pytest.mark.parametrize("name", ["audiosocket.jsonl", "audiosocket_asterisk_hangup.jsonl"])
def test_audiosocket_transcript_replays(name: str) -> None:
    records = load(name)
    first = next(r for r in records if r["kind"] == "first_bytes")
    stream = bytes.fromhex(first["hex"])
    lengths = [r["length"] for r in records if r["kind"] == "msg_rx" and r["type"] == "AUDIO_SLIN16"]
    stream += b"".join(aus.encode_audio(bytes(n), aus.Kind.SLIN16) for n in lengths)
    parser = aus.AudioSocketParser()
    events: list[aus.Event] = []
    for i in range(0, len(stream), 1000):  # TCP reads that cut messages anywhere
        events += parser.feed(stream[i : i + 1000])
    assert events[0] == aus.Uuid(uuid.UUID(first["uuid"]))
    assert [len(e.payload) for e in events if isinstance(e, aus.Audio)] == lengths
    assert all(e.sample_rate == 16000 for e in events if isinstance(e, aus.Audio))
    stats = next(r for r in records if r["kind"] == "stats")
    assert len(events) == sum(stats["kinds"].values())
    for rec in records:
        if rec["kind"] == "sent_hangup":  # what the bridge side sent, read as Asterisk would
            sent = bytes.fromhex(rec["bytes"])
            assert aus.AudioSocketParser(from_asterisk=False).feed(sent) == [aus.Hangup()]
            assert aus.encode_hangup() == bytes.fromhex(rec["bytes"])
