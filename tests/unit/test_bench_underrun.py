"""Underruns told apart from natural silence (bench/underrun.py), also as the load generator's observed
channel model feeds it (the real simulated chan_websocket, driven without sockets)."""

from __future__ import annotations

import json

from bench.analysis import ECHO_DELAY_FRAMES, Probe, dry_ticks, match
from bench.loadgen import LoadSpec, ObservedChannelModel
from bench.underrun import (
    DryTicks,
    ReplyTracker,
    classify_by_reply,
    classify_marked,
    dry_slots,
    late_intervals,
    merge_intervals,
)
from bridge.audio.formats import format_by_name
from bridge.simulate.chan_model import ChannelModel
from bridge.simulate.summary import CallSummary, PlayedFrame
from bridge.simulate.wire import Dialect, EventFormatter


def test_reply_tracker_counts_dry_ticks_inside_a_playing_reply_only() -> None:
    r = ReplyTracker()
    r.dry_tick(0.0)  # before any reply: silence
    r.command("START_MEDIA_BUFFERING")
    r.dry_tick(1.0)  # the reply is announced but has not played yet: its first audio may be late
    r.played()
    r.dry_tick(2.0)  # inside the reply: underrun
    r.played()
    r.completed()
    r.dry_tick(3.0)  # after MEDIA_BUFFERING_COMPLETED: the pause between replies
    r.command("START_MEDIA_BUFFERING")
    r.played()
    r.command("FLUSH_MEDIA")  # a barge-in cuts the reply on purpose
    r.dry_tick(4.0)
    assert r.dry == [(0.0, False), (1.0, False), (2.0, True), (3.0, False), (4.0, False)]
    assert classify_by_reply(r.dry) == DryTicks(underruns=1, silence=4)


def test_reply_tracker_follows_queued_replies_and_pauses() -> None:
    r = ReplyTracker()
    r.command("START_MEDIA_BUFFERING")
    r.command("START_MEDIA_BUFFERING")  # the second reply is queued behind the first
    r.played()
    r.completed()  # the first ends; the second has not played yet
    r.dry_tick(1.0)
    r.played()
    r.dry_tick(2.0)
    r.command("PAUSE_MEDIA")
    r.dry_tick(3.0)  # paused on purpose: not a dry tick at all
    r.command("CONTINUE_MEDIA")
    r.completed(3)  # more completions than open replies (a STOP after a flush) stays at zero
    assert r.open_replies == 0
    r.played()  # audio outside any bracket does not open a reply
    r.dry_tick(4.0)
    assert r.dry == [(1.0, False), (2.0, True), (4.0, False)]


def test_late_intervals_from_echo_delay() -> None:
    sent = [float(k) for k in range(20)]  # frame k sent at k s
    # frame 0 is due when frame 10 was sent (10.0): arrived 10.5, late; frame 1 due 11.0 arrived 10.9: early
    arrivals = {0: 10.5, 1: 10.9, 2: 13.0, 15: 40.0}  # frame 15 is due after the last send: unknown
    assert late_intervals(sent, arrivals, 10) == [(10.0, 10.5), (12.0, 13.0)]


def test_classify_marked_is_strictly_inside_due_to_arrival() -> None:
    late = [(10.0, 10.5), (12.0, 13.0), (12.5, 13.5)]
    assert merge_intervals(late) == [(10.0, 10.5), (12.0, 13.5)]
    dry = [9.0, 10.0, 10.2, 10.5, 11.0, 12.7, 13.4, 14.0]
    # 10.0: the frame became due at that very instant; 10.5: it arrived then
    assert classify_marked(dry, late) == DryTicks(underruns=3, silence=5)
    assert classify_marked([], late) == DryTicks(0, 0)
    assert classify_marked([1.0], []) == DryTicks(0, 1)


def test_dry_slots_between_multi_frame_messages() -> None:
    assert dry_slots([]) == []
    assert dry_slots([(0, 1), (1, 1), (2, 1)]) == []
    assert dry_slots([(0, 1), (3, 1)]) == [1, 2]
    # a 3-frame message at slot 5 covers 5..7; the next at 8 leaves no hole, the one at 10 leaves 9
    assert dry_slots([(5, 3), (8, 1), (10, 2), (12, 1)]) == [9]


def _model(probe: Probe) -> ObservedChannelModel:
    fmt = format_by_name("ulaw")
    assert fmt is not None
    dialect = Dialect.of("json")
    return ObservedChannelModel(ChannelModel(fmt, dialect, EventFormatter(dialect, "1.1")), probe)


def _command(model: ChannelModel, name: str, cid: str = "") -> None:
    body: dict[str, str] = {"command": name}
    if cid:
        body["correlation_id"] = cid
    model.receive_text(json.dumps(body).encode())


def test_observed_channel_model_classifies_a_late_frame_inside_a_reply() -> None:
    probe = Probe(None)
    model = _model(probe)
    frame = b"\xff" * model.frame_size
    assert model.tick() is None  # before any reply: silence
    _command(model, "START_MEDIA_BUFFERING")
    model.receive_binary(frame * 2)  # two frames, then the bot's audio is late
    assert model.tick() == frame
    assert model.tick() == frame
    assert model.tick() is None  # underrun: the reply is playing and the queue ran dry
    model.receive_binary(frame)
    _command(model, "STOP_MEDIA_BUFFERING", "r1")
    assert model.tick() == frame
    assert model.tick() is None  # the bracket's end fires here: the reply is over
    assert model.stats.buffering_completed == ["r1"]
    assert model.tick() is None  # silence between replies
    assert [inside for _, inside in probe.replies.dry] == [False, True, False, False]
    assert classify_by_reply(probe.replies.dry) == DryTicks(underruns=1, silence=3)
    assert probe.rx_bytes == [2 * model.frame_size, model.frame_size]


def test_observed_channel_model_ignores_ticks_without_playout() -> None:
    probe = Probe(None)
    model = _model(probe)
    _command(model, "PAUSE_MEDIA")
    assert model.tick() is None
    _command(model, "CONTINUE_MEDIA")
    model.receive_text(json.dumps({"command": "SET_MEDIA_DIRECTION", "direction": "in"}).encode())
    assert model.tick() is None
    assert probe.replies.dry == []  # neither a paused tick nor one with playout off is a dry tick


def test_audiosocket_dry_slots_classified_by_marks() -> None:
    spec = LoadSpec(
        url="http://127.0.0.1:1",
        connector_key="k",
        called="+1",
        calls=1,
        seconds=1.0,
        transport="audiosocket",
    )
    probe = Probe(None)
    probe.sent = [k * 0.020 for k in range(40)]
    arrivals = {j: probe.sent[j + 10] + 0.001 for j in range(25) if j not in (5, 20)}
    arrivals[5] = probe.sent[15] + 0.015  # 15 ms late: slot 15 stays empty, the frame plays in 16
    # frame 20 never comes (an echo barge-in drops it): slot 30 is empty on purpose
    played = [PlayedFrame(0.0, slot, 640) for slot in range(10, 35) if slot not in (15, 30)]
    summary = CallSummary(
        transport="audiosocket", format="slin16", control="-", call_id="c", sample_rate=16000, played=played
    )
    assert dry_ticks(spec, summary, probe, arrivals, 0.0, 10.0) == {"underruns": 1, "silence": 1}
    # a window that ends before slot 30 sees only the underrun
    assert dry_ticks(spec, summary, probe, arrivals, 0.0, probe.sent[20]) == {"underruns": 1, "silence": 0}
    # openai-fake over AudioSocket: no marks, no brackets, nothing to tell
    assert dry_ticks(spec, summary, probe, None, 0.0, 10.0) == {}


def test_frames_a_barge_in_dropped_are_flushed_not_lost() -> None:
    probe = Probe(None)
    model = _model(probe)
    _command(model, "FLUSH_MEDIA")
    assert len(probe.flushes) == 1  # the observed channel notes when each flush came
    # Frame k is sent at k * 20 ms and released (echoed) when frame k + 10 is sent.
    probe.sent = [k * 0.020 for k in range(40)]
    probe.flushes = [0.300]  # the echo's barge-in: the frames it still held are gone
    heard = {k: probe.sent[k + ECHO_DELAY_FRAMES] + 0.002 for k in range(30)}
    held = range(6, 16)  # sent by 0.300 s, released (k + 10 sent) after 0.200 s
    for k in held:
        del heard[k]
    del heard[25]  # released at 0.700 s, long after the flush: lost
    latencies, lost, flushed = match(probe, heard, 0.0, 10.0)
    assert (lost, flushed) == (1, len(held))
    assert len(latencies) == 30 - len(held) - 1
    probe.flushes = []
    assert match(probe, heard, 0.0, 10.0)[1:] == (len(held) + 1, 0)  # without the flush: all lost
