"""ChanWebsocketLeg driven by hand with a simulated clock: one behaviour per test."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.asterisk import chan_websocket as cw
from bridge.asterisk.chan_websocket import ControlFormat
from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.leg_events import (
    AsteriskErrorSeen,
    AudioReceived,
    BinaryMessage,
    CloseSocket,
    Drained,
    DtmfReceived,
    Outgoing,
    PlayedUpTo,
    ProtocolErrorSeen,
    Started,
    StatusReceived,
    TextMessage,
    Xoff,
    Xon,
)

JSON, PLAIN = ControlFormat.JSON, ControlFormat.PLAIN


def start_text(
    fmt: ControlFormat = JSON, fmt_name: str = "slin16", frame: int = 640, channel_id: str | None = "1.2"
) -> str:
    start = cw.MediaStart("ai", "WebSocket/ai/0x1", channel_id, fmt_name, frame, 20, {}, fmt)
    return cw.encode_event(start, fmt)


def started_leg(
    fmt: ControlFormat = JSON,
    fmt_name: str = "slin16",
    frame: int = 640,
    channel_id: str | None = "1.2",
    **kw: Any,
) -> ChanWebsocketLeg:
    leg = ChanWebsocketLeg(**kw)
    assert isinstance(leg.receive_text(start_text(fmt, fmt_name, frame, channel_id), 0.0)[0], Started)
    return leg


def texts(out: list[Outgoing]) -> list[str]:
    return [m.text for m in out if isinstance(m, TextMessage)]


def binaries(out: list[Outgoing]) -> list[bytes]:
    return [m.data for m in out if isinstance(m, BinaryMessage)]


def event(fmt: ControlFormat, ev: cw.Event) -> str:
    return cw.encode_event(ev, fmt)


# ------------------------------------------------------------------ inbound


def test_audio_before_media_start_is_delivered_after_it_in_order() -> None:
    leg = ChanWebsocketLeg()
    frames = [bytes([i]) * 640 for i in range(5)]
    for i, f in enumerate(frames):
        assert leg.receive_binary(f, i * 0.02) == []
    events = leg.receive_text(start_text(), 0.1)
    assert isinstance(events[0], Started)
    # each keeps the time it was read: the uplink latency counts from there
    assert events[1:] == [AudioReceived(f, i * 0.02) for i, f in enumerate(frames)]
    assert leg.receive_binary(b"\x09" * 640, 0.2) == [AudioReceived(b"\x09" * 640, 0.2)]
    assert leg.counters.frames_in == 6
    assert leg.counters.drops_prestart == 0


def test_audio_before_media_start_is_bounded() -> None:
    leg = ChanWebsocketLeg(prestart_buffer_ms=100)
    for _ in range(1000):  # the format is unknown: the bound assumes the widest (slin192, 7680 B/20 ms)
        leg.receive_binary(b"\x00" * 7680, 0.0)
    assert leg.counters.drops_prestart == 1000 - 5
    events = leg.receive_text(start_text(), 0.1)  # slin16: 100 ms is 3200 bytes, i.e. nothing fits
    assert events == [events[0]]
    assert leg.counters.drops_prestart == 1000


def test_prestart_release_trims_to_the_real_format() -> None:
    leg = ChanWebsocketLeg(prestart_buffer_ms=100)
    for i in range(10):
        leg.receive_binary(bytes([i]) * 640, 0.0)
    events = leg.receive_text(start_text(), 0.1)
    assert [e for e in events if isinstance(e, AudioReceived)] == [
        AudioReceived(bytes([i]) * 640, 0.0) for i in range(5)
    ]
    assert leg.counters.drops_prestart == 5


def test_started_once_and_malformed_control_does_not_end_the_call() -> None:
    leg = started_leg()
    assert leg.receive_text(start_text(), 1.0) == [ProtocolErrorSeen("duplicate MEDIA_START ignored")]
    bad = leg.receive_text('{"event":"NOPE"}', 1.0)
    assert len(bad) == 1
    assert isinstance(bad[0], ProtocolErrorSeen)
    assert "unknown event" in bad[0].reason
    assert leg.counters.protocol_errors == 2
    assert leg.receive_text(event(JSON, cw.DtmfEnd("5", "1.2")), 1.0) == [DtmfReceived("5")]
    error = event(JSON, cw.AsteriskError("oops\n", "1.2"))
    assert leg.receive_text(error, 1.0) == [AsteriskErrorSeen("oops")]
    status = cw.Status(3, 800, 900, False, False, False, "1.2")
    assert leg.receive_text(event(JSON, status), 1.0) == [StatusReceived(status)]
    assert leg.receive_text(event(JSON, cw.QueueDrained("1.2")), 1.0) == [Drained()]


def test_plain_text_media_start_sets_plain_control_and_estimated_playout() -> None:
    leg = started_leg(PLAIN)
    assert leg.control_format is PLAIN
    assert leg.played_ms_estimated
    assert not started_leg(JSON).played_ms_estimated


# ------------------------------------------------------------------ outbound framing


@pytest.mark.parametrize(
    ("fmt_name", "frame", "per_message"),
    [("ulaw", 160, 10), ("slin16", 640, 10), ("slin24", 960, 8), ("slin48", 1920, 4)],
)
def test_messages_are_whole_frames_within_the_size_cap(fmt_name: str, frame: int, per_message: int) -> None:
    leg = started_leg(JSON, fmt_name, frame)
    assert leg.queue_audio(b"\x01" * frame * 100)
    out, _ = leg.poll(0.0)
    sizes = [len(b) for b in binaries(out)]
    assert sizes
    assert all(s % frame == 0 and s <= 8000 for s in sizes)
    assert max(sizes) == per_message * frame
    assert texts(out)[0] == '{"command":"START_MEDIA_BUFFERING"}'


def test_small_max_message_bytes_means_one_frame_per_message() -> None:
    leg = started_leg(max_message_bytes=1000)
    leg.queue_audio(b"\x01" * 640 * 20)
    out, _ = leg.poll(0.0)
    assert {len(b) for b in binaries(out)} == {640}


def test_a_partial_frame_waits_until_the_response_ends() -> None:
    leg = started_leg()
    leg.queue_audio(b"\x01" * 700)
    out, wake = leg.poll(0.0)
    assert binaries(out) == [b"\x01" * 640]
    assert wake is None  # nothing to do until more audio or end_response
    leg.end_response()
    out, _ = leg.poll(0.01)
    assert binaries(out) == [b"\x01" * 60]
    assert texts(out) == ['{"command":"STOP_MEDIA_BUFFERING","correlation_id":"r1"}']


def test_the_initial_burst_then_the_rate_cap() -> None:
    leg = started_leg(initial_burst_frames=10, rate=1.5)
    leg.queue_audio(b"\x01" * 640 * 1000)
    out, wake = leg.poll(0.0)
    assert sum(map(len, binaries(out))) == 640 * 10
    assert wake is not None
    assert wake > 0.0
    sent_frames, now, at_5s = 10, wake, 0
    while now < 10.0:
        out, wake = leg.poll(now)
        sent_frames += sum(map(len, binaries(out))) // 640
        assert sent_frames <= 10 + 1.5 * now / 0.02 + 1e-6  # never faster than 1.5x after the burst
        assert leg.modelled_depth(now) <= 200
        if now <= 5.0:
            at_5s = sent_frames
        assert wake is not None
        now = wake
    assert at_5s >= 10 + 1.5 * 5.0 / 0.02 - 20  # and close to it while the cap is far
    assert leg.modelled_depth(now) >= 190  # by 10 s the depth cap, not the rate, is what limits


def test_the_modelled_queue_never_exceeds_max_ahead() -> None:
    leg = started_leg(max_ahead_frames=30, initial_burst_frames=10, rate=3.0)
    leg.queue_audio(b"\x01" * 640 * 1000)
    now, depths = 0.0, []
    for _ in range(500):
        _, wake = leg.poll(now)
        depths.append(leg.modelled_depth(now))
        now = wake if wake is not None else now + 0.02
    assert max(depths) <= 30
    assert max(depths) >= 25  # and the cap is actually reached, so the test means something


def test_local_queue_is_bounded_and_takes_chunks_whole() -> None:
    leg = started_leg(local_queue_limit_ms=100)  # 3200 bytes of slin16
    assert leg.queue_audio(b"\x01" * 3000)
    assert not leg.queue_audio(b"\x01" * 640)
    assert leg.counters.drops_local_overflow == 640
    assert leg.local_queued_bytes() == 3000


# ------------------------------------------------------------------ flow control


def test_xoff_stops_output_until_xon() -> None:
    leg = started_leg()
    leg.queue_audio(b"\x01" * 640 * 300)
    out, _ = leg.poll(0.0)
    assert binaries(out)
    assert leg.receive_text(event(JSON, cw.MediaXoff("1.2")), 0.01) == [Xoff()]
    for i in range(200):
        out, wake = leg.poll(0.01 + i * 0.05)
        assert binaries(out) == []
        assert wake is None
    assert leg.counters.xoff_count == 1
    assert leg.receive_text(event(JSON, cw.MediaXon("1.2")), 10.0) == [Xon()]
    out, _ = leg.poll(10.0)  # ask for the true depth before sending more
    assert texts(out) == ['{"command":"GET_STATUS"}']
    assert binaries(out) == []
    # STATUS says Asterisk still holds 799 frames: far over our cap, so we wait for it to play down
    leg.receive_text(event(JSON, cw.Status(799, 800, 900, False, False, False, "1.2")), 10.0)
    out, wake = leg.poll(10.0)
    assert binaries(out) == []
    assert wake == pytest.approx(10.0 + (799 - 190) * 0.02, abs=0.05)  # room for a whole message
    assert wake is not None
    out, _ = leg.poll(wake)
    assert binaries(out)
    # another XOFF/XON, and this time STATUS says the queue is empty: sending resumes at once
    leg.receive_text(event(JSON, cw.MediaXoff("1.2")), 30.0)
    leg.receive_text(event(JSON, cw.MediaXon("1.2")), 30.0)
    leg.receive_text(event(JSON, cw.Status(0, 800, 900, False, False, False, "1.2")), 30.0)
    assert binaries(leg.poll(30.0)[0])


def test_interrupt_during_xoff_resumes_sending_after_the_flush() -> None:
    leg = started_leg()
    leg.queue_audio(b"\x01" * 640 * 300)
    leg.poll(0.0)
    leg.receive_text(event(JSON, cw.MediaXoff("1.2")), 0.01)
    leg.interrupt(0.02)
    leg.queue_audio(b"\x02" * 640 * 10)
    out, _ = leg.poll(0.02)
    assert texts(out)[0] == '{"command":"FLUSH_MEDIA"}'
    assert binaries(out) == [b"\x02" * 640 * 10]


# ------------------------------------------------------------------ barge-in


def test_interrupt_sends_flush_before_anything_else_and_continue_if_paused() -> None:
    leg = started_leg()
    leg.queue_audio(b"\x01" * 640 * 50)
    leg.poll(0.0)
    leg.pause(0.05)
    leg.request_status()
    leg.interrupt(0.1)
    out, _ = leg.poll(0.1)
    assert texts(out)[0] == '{"command":"FLUSH_MEDIA"}'
    assert texts(out)[-1] == '{"command":"CONTINUE_MEDIA"}'
    assert binaries(out) == []  # the local queue went with it
    assert leg.local_queued_bytes() == 0


def test_interrupt_drops_pending_marks_and_stale_audio() -> None:
    leg = started_leg()
    leg.queue_audio(b"\x01" * 640 * 40)
    out, _ = leg.poll(0.0)
    marks = [cw.parse_command(t) for t in texts(out)]
    mark_ids = [m.correlation_id for m in marks if isinstance(m, cw.MarkMedia)]
    assert mark_ids
    gen = leg.generation
    leg.interrupt(0.05)
    assert leg.generation == gen + 1
    for cid in mark_ids:  # a mark flushed with the queue never fires; if one races in, it is ignored
        assert leg.receive_text(event(JSON, cw.MediaMarkProcessed(cid or "", "1.2")), 0.06) == []
    assert not leg.queue_audio(b"\x01" * 640, generation=gen)
    assert leg.queue_audio(b"\x02" * 640, generation=gen + 1)
    leg.end_response()
    out, _ = leg.poll(0.1)
    assert texts(out)[1] == '{"command":"START_MEDIA_BUFFERING"}'  # a new bracket after the flush
    assert binaries(out) == [b"\x02" * 640]


def test_played_ms_from_marks() -> None:
    leg = started_leg()
    leg.queue_audio(b"\x01" * 640 * 30)
    leg.end_response()
    sent: list[str] = []

    def run_until(t: float, now: float) -> float:
        while now < t:  # keep sending as the queue plays down
            out, wake = leg.poll(now)
            sent.extend(texts(out))
            assert wake is not None
            now = wake
        return now

    now = run_until(0.2, 0.0)
    first = next(c for c in map(cw.parse_command, sent) if isinstance(c, cw.MarkMedia))
    assert first.correlation_id is not None
    assert len(first.correlation_id) <= 8
    assert leg.receive_text(event(JSON, cw.MediaMarkProcessed(first.correlation_id, "1.2")), now) == [
        PlayedUpTo(1, 200.0, 200.0)
    ]
    assert leg.played_ms(now) == pytest.approx(now * 1000, abs=1.0)  # the mark, plus the clock since
    assert leg.played_ms(now) >= 200.0
    now = run_until(0.25, now)
    assert leg.interrupt(now) == pytest.approx(now * 1000, abs=20)


def test_plain_text_played_ms_is_estimated_from_the_clock() -> None:
    leg = started_leg(PLAIN, channel_id=None)  # 22.6: no channel_id, no marks, nothing to probe
    leg.queue_audio(b"\x01" * 640 * 10)  # 200 ms, all sent at once
    out, _ = leg.poll(0.0)
    assert not any("MARK_MEDIA" in t for t in texts(out))
    assert leg.played_ms(0.0) == 0.0
    assert leg.played_ms(0.1) == pytest.approx(100.0)
    assert leg.played_ms(5.0) == pytest.approx(200.0)  # never more than was sent


def marks_sent(out: list[Outgoing]) -> list[str]:
    return [c.correlation_id or "" for c in map(cw.parse_command, texts(out)) if isinstance(c, cw.MarkMedia)]


def stop_ids(out: list[Outgoing]) -> list[str]:
    cmds = map(cw.parse_command, texts(out))
    return [c.correlation_id or "" for c in cmds if isinstance(c, cw.StopMediaBuffering)]


def drive(leg: ChanWebsocketLeg, now: float, until: float) -> list[Outgoing]:
    """Poll as the driver would, waking when asked, from `now` to `until`."""
    out: list[Outgoing] = []
    while now <= until:
        sent, wake = leg.poll(now)
        out.extend(sent)
        if wake is None:
            break
        now = wake
    return out


def test_plain_text_22_8_marks_are_found_by_one_probe() -> None:
    leg = started_leg(PLAIN)  # channel_id: 22.7 or later, marks unknown
    assert leg.played_ms_estimated
    leg.queue_audio(b"\x01" * 640 * 30)  # 600 ms
    [probe] = marks_sent(drive(leg, 0.0, 0.3))  # one probe, not one mark per 200 ms
    assert leg.played_ms(0.3) == pytest.approx(300.0)  # an unanswered probe does not hold playout back
    done = leg.receive_text(event(PLAIN, cw.MediaMarkProcessed(probe, "1.2")), 0.3)
    assert done == [PlayedUpTo(1, 200.0, 200.0)]
    assert not leg.played_ms_estimated
    leg.queue_audio(b"\x01" * 640 * 30)
    leg.end_response()
    assert len(marks_sent(drive(leg, 0.3, 1.5))) >= 3  # from now on, marks as on JSON
    leg.begin_hangup(1.0)
    drain = [cw.parse_command(t) for t in texts(leg.poll(1.0)[0])]
    assert [type(c) for c in drain] == [cw.MarkMedia, cw.ReportQueueDrained]


def test_plain_text_22_7_probe_passed_over_means_no_marks() -> None:
    leg = started_leg(PLAIN)
    leg.queue_audio(b"\x01" * 640 * 15)
    leg.end_response()
    out = drive(leg, 0.0, 0.5)
    assert len(marks_sent(out)) == 1
    # 22.7 ignores MARK_MEDIA, so the response's marker is reached with the probe unanswered.
    [stop] = stop_ids(out)
    leg.receive_text(event(PLAIN, cw.MediaBufferingCompleted(stop, "1.2")), 0.5)
    assert leg.played_ms_estimated
    leg.queue_audio(b"\x01" * 640 * 30)
    assert marks_sent(drive(leg, 0.5, 1.5)) == []  # no more probing
    leg.begin_hangup(1.5)
    assert not marks_sent(leg.poll(1.5)[0])


def test_plain_text_22_6_is_never_probed() -> None:
    leg = started_leg(PLAIN, channel_id=None)
    leg.queue_audio(b"\x01" * 640 * 30)
    assert marks_sent(drive(leg, 0.0, 1.0)) == []


def test_a_flushed_probe_is_sent_again() -> None:
    leg = started_leg(PLAIN)
    leg.queue_audio(b"\x01" * 640 * 15)
    assert len(marks_sent(drive(leg, 0.0, 0.1))) == 1
    leg.interrupt(0.1)  # FLUSH_MEDIA drops the probe: nothing learnt
    leg.queue_audio(b"\x01" * 640 * 15, leg.generation)
    [again] = marks_sent(drive(leg, 0.1, 0.5))
    leg.receive_text(event(PLAIN, cw.MediaMarkProcessed(again, "1.2")), 0.5)
    assert not leg.played_ms_estimated


# ------------------------------------------------------------------ hangup


@pytest.mark.parametrize("fmt", [JSON, PLAIN])
def test_begin_hangup_drains_then_hangs_up(fmt: ControlFormat) -> None:
    leg = started_leg(fmt)
    leg.queue_audio(b"\x01" * 640 * 10)
    leg.begin_hangup(0.0)
    assert not leg.queue_audio(b"\x01" * 640)
    out, wake = leg.poll(0.0)
    cmds = [cw.parse_command(t) for t in texts(out)]
    # JSON: a correlated drain mark; every format: REPORT_QUEUE_DRAINED (whichever answers first).
    drain_cmds = cmds[-2:] if fmt is JSON else cmds[-1:]
    assert isinstance(cmds[-len(drain_cmds) - 1], cw.StopMediaBuffering)
    assert [type(c) for c in drain_cmds] == ([cw.MarkMedia] if fmt is JSON else []) + [cw.ReportQueueDrained]
    assert not any(isinstance(c, cw.Hangup) for c in cmds)
    assert wake == pytest.approx(0.2 + 1.5)
    assert leg.poll(0.5)[0] == []  # no HANGUP before the drain event or the deadline
    last = drain_cmds[0]
    drained = (
        cw.MediaMarkProcessed(last.correlation_id or "", "1.2")
        if isinstance(last, cw.MarkMedia)
        else cw.QueueDrained()
    )
    assert Drained() in leg.receive_text(event(fmt, drained), 0.6)
    out, wake = leg.poll(0.6)
    assert texts(out) == [cw.encode_command(cw.Hangup(), fmt)]
    assert wake is None
    assert leg.hangup_sent
    assert leg.poll(0.7) == ([], None)


def test_hangup_before_media_start_closes_the_socket() -> None:
    leg = ChanWebsocketLeg()
    leg.begin_hangup(0.0)
    assert leg.poll(0.0) == ([CloseSocket()], None)
    assert leg.poll(0.1) == ([], None)


def test_answer_and_pause_resume() -> None:
    leg = started_leg()
    leg.answer()
    assert texts(leg.poll(0.0)[0]) == ['{"command":"ANSWER"}']
    leg.queue_audio(b"\x01" * 640 * 100)
    leg.pause(0.0)
    out, wake = leg.poll(0.0)
    assert texts(out) == ['{"command":"PAUSE_MEDIA"}', '{"command":"START_MEDIA_BUFFERING"}']
    assert binaries(out) == []
    assert wake is None
    leg.resume(1.0)
    out, _ = leg.poll(1.0)
    assert texts(out)[0] == '{"command":"CONTINUE_MEDIA"}'
    assert binaries(out)


@pytest.mark.parametrize(
    "kw",
    [
        {"max_ahead_frames": 900},
        {"initial_burst_frames": 0},
        {"rate": 0.5},
        {"max_message_bytes": 0},
        {"marks_every_ms": 0},
    ],
)
def test_bad_settings_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ChanWebsocketLeg(**kw)  # type: ignore[arg-type]
