"""ChanWebsocketLeg against strict fakes of Asterisk's playout queue, on a simulated clock.

Two fakes: `FakeAsterisk` here, and `ModelAsterisk`, which wraps `bridge.simulate`'s independent
ChannelModel (the simulated Asterisk the integration tests and `bridge simulate-call` use). Both follow
asterisk-chan-websocket.md §8-§11, chan_websocket.c and the 22.10.1 captures: a binary message is cut
into optimal_frame_size frames, each queued on its own (a trailing partial is dropped outside buffering
mode), one frame is played per 20 ms tick, marks and buffering markers fire when they reach the head,
FLUSH_MEDIA drops everything including marks, XOFF at 900 and a whole message dropped at >= 1000. Both
record every violation.
"""

from __future__ import annotations

import itertools
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.asterisk import chan_websocket as cw
from bridge.asterisk.chan_websocket import ControlFormat
from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.leg_events import (
    BinaryMessage,
    Drained,
    LegEvent,
    Outgoing,
    PlayedUpTo,
    TextMessage,
)
from bridge.audio.formats import SLIN16, SLIN24, ULAW, AudioFormat
from bridge.simulate.chan_model import ChannelModel
from bridge.simulate.wire import Dialect, EventFormatter

TICK = 0.02


@dataclass
class FakeAsterisk:
    fmt: ControlFormat = ControlFormat.JSON
    frame: int = 640
    marks: bool = True  # False: a 22.7 on plain text, which ignores MARK_MEDIA (logging a warning)
    ignored_marks: int = 0
    flushes: int = 0
    queue: deque[tuple[str, bytes | str]] = field(default_factory=deque)
    buffering: bool = False
    leftover: bytes = b""
    paused: bool = False
    full: bool = False
    drain_asked: bool = False
    hung_up_at: float | None = None
    played: bytearray = field(default_factory=bytearray)
    played_at: list[tuple[float, int]] = field(default_factory=list)  # (time, total bytes played)
    outbox: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    log: list[Outgoing] = field(default_factory=list)
    max_queue: int = 0
    levels: tuple[int, int, int] = (800, 900, 1000)  # XON below, XOFF at, drop at (Asterisk's)

    def media_start(self) -> str:
        start = cw.MediaStart(
            "bridge_media", "WebSocket/bridge_media/0x1", "1.2", "slin16", self.frame, 20, {}, self.fmt
        )
        return cw.encode_event(start, self.fmt)

    @property
    def frames_queued(self) -> int:
        return sum(1 for kind, _ in self.queue if kind == "frame")

    def send(self, event: cw.Event) -> None:
        self.outbox.append(cw.encode_event(event, self.fmt))

    def take_outbox(self) -> list[str]:
        out, self.outbox = self.outbox, []
        return out

    def handle(self, msg: Outgoing, now: float) -> None:
        self.log.append(msg)
        if self.hung_up_at is not None:
            self.violations.append(f"{msg!r} after HANGUP")
        if isinstance(msg, TextMessage):
            self._command(msg.text, now)
        elif isinstance(msg, BinaryMessage):
            self._binary(msg.data)

    def _command(self, text: str, now: float) -> None:
        if text.startswith("{") != (self.fmt is ControlFormat.JSON):
            self.violations.append(f"wrong control format: {text}")
        cmd = cw.parse_command(text)
        match cmd:
            case cw.ProtocolError():
                self.violations.append(f"bad command {text!r}: {cmd.reason}")
            case cw.StartMediaBuffering():
                self.buffering = True
            case cw.StopMediaBuffering(cid):
                if self.leftover:
                    self.queue.append(("frame", self.leftover))
                self.leftover, self.buffering = b"", False
                self.queue.append(("done", cid or ""))
            case cw.MarkMedia(cid):
                if self.marks:
                    self.queue.append(("mark", cid or ""))
                    return
                self.ignored_marks += 1  # a probe is fine; asking again without a flush between is noise
                if self.ignored_marks > self.flushes + 1:
                    self.violations.append("MARK_MEDIA again to an Asterisk that ignored it")
            case cw.FlushMedia():
                self.flushes += 1
                self.queue.clear()
                self.leftover, self.buffering = b"", False
            case cw.PauseMedia():
                self.paused = True
            case cw.ContinueMedia():
                self.paused = False
            case cw.ReportQueueDrained():
                self.drain_asked = True
            case cw.Hangup():
                self.hung_up_at = now
            case cw.GetStatus():
                self.send(
                    cw.Status(
                        self.frames_queued,
                        self.levels[0],
                        self.levels[1],
                        self.full,
                        self.buffering,
                        self.paused,
                        "1.2",
                    )
                )
            case _:
                pass

    def _binary(self, data: bytes) -> None:
        if len(data) > 8000:
            self.violations.append(f"binary message of {len(data)} bytes")
        if self.frames_queued >= self.levels[2]:
            self.violations.append("message dropped: queue full")
            return
        data = self.leftover + data
        self.leftover = b""
        whole = len(data) - len(data) % self.frame
        for i in range(0, whole, self.frame):
            self.queue.append(("frame", data[i : i + self.frame]))
        if whole < len(data):
            if self.buffering:
                self.leftover = data[whole:]
            else:
                self.violations.append(f"partial frame of {len(data) - whole} bytes discarded")
        self.max_queue = max(self.max_queue, self.frames_queued)
        if self.frames_queued >= self.levels[1] and not self.full:
            self.full = True
            self.send(cw.MediaXoff("1.2"))

    def tick(self, now: float) -> None:
        if self.paused or self.hung_up_at is not None:
            return
        while self.queue and self.queue[0][0] != "frame":
            kind, cid = self.queue.popleft()
            assert isinstance(cid, str)
            done = cw.MediaMarkProcessed(cid, "1.2") if kind == "mark" else cw.MediaBufferingCompleted(cid)
            self.send(done)
        if self.queue:
            _, frame = self.queue.popleft()
            assert isinstance(frame, bytes)
            self.played += frame
            self.played_at.append((now, len(self.played)))
            if self.full and self.frames_queued < self.levels[0]:
                self.full = False
                self.send(cw.MediaXon("1.2"))
        elif self.drain_asked:
            self.drain_asked = False
            self.send(cw.QueueDrained())


class ModelAsterisk:
    """`bridge.simulate.chan_model.ChannelModel` (JSON control, Asterisk 22.10) as a `Sim` peer."""

    def __init__(self, fmt: AudioFormat) -> None:
        dialect = Dialect.of("json")
        self.fmt = fmt
        self.model = ChannelModel(fmt, dialect, EventFormatter(dialect, "1.2"))
        self.played = bytearray()
        self.played_at: list[tuple[float, int]] = []  # (tick time, total bytes played)
        self.log: list[tuple[float, Outgoing]] = []
        self.hung_up_at: float | None = None

    def media_start(self) -> str:
        return self.model.events.media_start(
            connection_id="bridge_media",
            channel="WebSocket/bridge_media/0x1",
            format_name=self.fmt.name,
            optimal_frame_size=self.fmt.frame_bytes,
            ptime=20,
            channel_variables={},
        )

    def handle(self, msg: Outgoing, now: float) -> None:
        self.log.append((now, msg))
        if isinstance(msg, TextMessage):
            self.model.receive_text(msg.text.encode())
            if self.model.hangup_requested and self.hung_up_at is None:
                self.hung_up_at = now
        elif isinstance(msg, BinaryMessage):
            self.model.receive_binary(msg.data)

    def tick(self, now: float) -> None:
        frame = self.model.tick()
        if frame is not None:
            self.played += frame
            self.played_at.append((now, len(self.played)))

    def take_outbox(self) -> list[str]:
        return self.model.take_outbox()

    def heard_before(self, t: float) -> int:
        """Bytes played by the ticks before time t."""
        return max((n for at, n in self.played_at if at < t - 1e-9), default=0)

    def binaries(self) -> list[tuple[float, bytes]]:
        return [(t, m.data) for t, m in self.log if isinstance(m, BinaryMessage)]


class SimAsterisk(Protocol):
    def handle(self, msg: Outgoing, now: float) -> None: ...
    def tick(self, now: float) -> None: ...
    def take_outbox(self) -> list[str]: ...


A = TypeVar("A", bound=SimAsterisk)
Action = Callable[[ChanWebsocketLeg, float], None]


@dataclass
class Sim(Generic[A]):
    leg: ChanWebsocketLeg
    ast: A
    now: float = 0.0
    events: list[tuple[float, LegEvent]] = field(default_factory=list)
    depth_seen: int = 0

    def pump(self) -> float | None:
        while True:
            out, wake = self.leg.poll(self.now)
            for msg in out:
                self.ast.handle(msg, self.now)
            self.depth_seen = max(self.depth_seen, self.leg.modelled_depth(self.now))
            replies = self.ast.take_outbox()
            for text in replies:
                self.events += [(self.now, e) for e in self.leg.receive_text(text, self.now)]
            if not replies:
                return wake

    def run(self, until: float, actions: list[tuple[float, Action]] = ()) -> None:  # type: ignore[assignment]
        pending = sorted(actions, key=lambda a: a[0])
        next_tick = (int(self.now / TICK) + 1) * TICK
        wake = self.pump()
        while self.now < until:
            t = min([next_tick, until] + ([wake] if wake is not None else []) + [a[0] for a in pending[:1]])
            self.now = max(self.now, t)
            while pending and pending[0][0] <= self.now:
                pending.pop(0)[1](self.leg, self.now)
            if self.now >= next_tick - 1e-12:
                self.ast.tick(self.now)
                next_tick += TICK
            wake = self.pump()
            if wake is not None and wake <= self.now:
                raise AssertionError(f"poll asked to be woken in the past: {wake} <= {self.now}")


# (control format, marks answered): JSON (22.8+), plain text on 22.8+, plain text on 22.7.
ASTERISKS = [(ControlFormat.JSON, True), (ControlFormat.PLAIN, True), (ControlFormat.PLAIN, False)]
asterisks = pytest.mark.parametrize(("fmt", "marks"), ASTERISKS, ids=["json", "plain", "plain-22.7"])


def started(
    fmt: ControlFormat = ControlFormat.JSON, frame: int = 640, marks: bool = True, **kw: int
) -> Sim[FakeAsterisk]:
    sim = Sim(ChanWebsocketLeg(**kw), FakeAsterisk(fmt=fmt, frame=frame, marks=marks))
    sim.events += [(0.0, e) for e in sim.leg.receive_text(sim.ast.media_start(), 0.0)]
    return sim


def pattern(n: int, start: int = 0) -> bytes:
    return bytes((start + i) % 251 for i in range(n))


def feed(audio: bytes, chunk: int, every: float, t0: float, end: bool = True) -> list[tuple[float, Action]]:
    """Model audio arriving in `chunk`-byte pieces every `every` seconds from t0, then end_response."""
    acts: list[tuple[float, Action]] = []
    for k, i in enumerate(range(0, len(audio), chunk)):
        piece = audio[i : i + chunk]
        acts.append((t0 + k * every, lambda leg, now, p=piece: leg.queue_audio(p) or None))  # type: ignore[misc]
    if end:
        acts.append((t0 + len(acts) * every, lambda leg, now: leg.end_response()))
    return acts


@asterisks
def test_a_fast_response_plays_whole_in_order_without_violations(fmt: ControlFormat, marks: bool) -> None:
    sim = started(fmt, marks=marks)
    audio = pattern(640 * 500 + 333)  # 10 s and a short tail, delivered in 1 s
    sim.run(15.0, feed(audio, 6400, 0.02, 0.1))
    assert sim.ast.violations == []
    assert bytes(sim.ast.played) == audio
    assert sim.ast.max_queue <= 200
    assert sim.depth_seen <= 200
    for msg in sim.ast.log:
        if isinstance(msg, BinaryMessage):
            assert len(msg.data) <= 8000
    # once playout began it never starved: one frame per tick until the end
    times = [t for t, _ in sim.ast.played_at]
    assert max(b - a for a, b in itertools.pairwise(times)) == pytest.approx(TICK)
    assert times[0] < 0.1 + 0.03


def test_binary_messages_are_whole_frames_except_the_bracketed_tail() -> None:
    sim = started()
    audio = pattern(640 * 37 + 100)
    sim.run(3.0, feed(audio, 999, 0.01, 0.0))
    texts = [m.text for m in sim.ast.log if isinstance(m, TextMessage)]
    binaries = [m for m in sim.ast.log if isinstance(m, BinaryMessage)]
    assert [len(b.data) % 640 for b in binaries[:-1]] == [0] * (len(binaries) - 1)
    assert len(binaries[-1].data) % 640 == 100  # the short tail ends the last message
    tail_at = sim.ast.log.index(binaries[-1])
    # The bracket closes right after the tail (a mark may come due with it and go first).
    after = [m.text for m in sim.ast.log[tail_at + 1 : tail_at + 3] if isinstance(m, TextMessage)]
    assert any("STOP_MEDIA_BUFFERING" in text for text in after), after
    assert texts[0] == '{"command":"START_MEDIA_BUFFERING"}'
    assert sim.ast.violations == []


def test_marks_report_exactly_what_was_played() -> None:
    sim = started()
    audio = pattern(640 * 100)
    sim.run(4.0, feed(audio, 640 * 25, 0.05, 0.0))
    played = [e for _, e in sim.events if isinstance(e, PlayedUpTo)]
    assert len(played) >= 5
    for t, e in sim.events:
        if isinstance(e, PlayedUpTo):
            heard = max((n for at, n in sim.ast.played_at if at < t - 1e-9), default=0)  # before this tick
            assert e.total_ms == pytest.approx(heard / 32)  # slin16: 32 bytes per ms
            assert e.response == 1
    assert played[-1].ms == pytest.approx(2000)
    assert sim.leg.played_ms(sim.now) == pytest.approx(2000)


def test_back_to_back_responses_are_bracketed_and_marked_separately() -> None:
    sim = started()
    first, second = pattern(640 * 30 + 10), pattern(640 * 20 + 30, 99)
    sim.run(2.0, [*feed(first, len(first), 0.0, 0.0), *feed(second, len(second), 0.0, 0.0)])
    assert sim.ast.violations == []
    assert bytes(sim.ast.played) == first + second
    texts = [m.text for m in sim.ast.log if isinstance(m, TextMessage)]
    assert sum("START_MEDIA_BUFFERING" in t for t in texts) == 2
    assert sum("STOP_MEDIA_BUFFERING" in t for t in texts) == 2
    played = [e for _, e in sim.events if isinstance(e, PlayedUpTo)]
    ends = {e.response: e.ms for e in played}
    assert ends == {1: pytest.approx(len(first) / 32), 2: pytest.approx(len(second) / 32)}
    assert [e.total_ms for e in played] == sorted(e.total_ms for e in played)
    assert played[-1].total_ms == pytest.approx((len(first) + len(second)) / 32)


@asterisks
def test_barge_in_flushes_first_and_reports_what_was_heard(fmt: ControlFormat, marks: bool) -> None:
    sim = started(fmt, marks=marks)
    sim.run(3.01, feed(pattern(640 * 400), 6400, 0.02, 0.0, end=False))
    assert sim.leg.local_queued_bytes() > 0  # audio is still waiting here, and more in Asterisk
    heard = sim.leg.interrupt(sim.now)
    n_before = len(sim.ast.log)
    out, _ = sim.leg.poll(sim.now)
    assert out
    assert out[0] == TextMessage(cw.encode_command(cw.FlushMedia(), fmt))
    for msg in out:
        sim.ast.handle(msg, sim.now)
    assert sim.ast.log[n_before] == out[0]
    truly = len(sim.ast.played) / 32
    assert heard == pytest.approx(truly, abs=40.0)
    # stale audio (the old generation) is refused; new audio opens a new bracket
    assert not sim.leg.queue_audio(pattern(640), generation=sim.leg.generation - 1)
    assert sim.leg.counters.drops_stale == 640
    sim.run(3.5, feed(pattern(640 * 10, 7), 640 * 10, 0.01, 3.2))
    assert sim.ast.violations == []
    assert len(sim.ast.played) == pytest.approx(truly * 32 + 6400, abs=640)


@asterisks
def test_hangup_waits_for_the_drain_then_hangs_up(fmt: ControlFormat, marks: bool) -> None:
    sim = started(fmt, marks=marks)
    audio = pattern(640 * 150 + 64)
    acts = [*feed(audio, 640 * 50, 0.05, 0.0, end=False), (0.2, lambda leg, now: leg.begin_hangup(now))]
    sim.run(6.0, acts)
    assert sim.ast.violations == []
    assert bytes(sim.ast.played) == audio  # nothing clipped
    assert sim.ast.hung_up_at is not None
    drained_at = [t for t, e in sim.events if isinstance(e, Drained)]
    assert drained_at == [sim.ast.hung_up_at]
    assert sim.ast.hung_up_at >= sim.ast.played_at[-1][0]
    texts = [m.text for m in sim.ast.log if isinstance(m, TextMessage)]
    stop = next(i for i, t in enumerate(texts) if "STOP_MEDIA_BUFFERING" in t)
    drain = "MARK_MEDIA" if marks else "REPORT_QUEUE_DRAINED"  # plain 22.8+: learnt from the probe
    assert drain in texts[stop + 1]
    assert "HANGUP" in texts[-1]


def test_xoff_from_an_asterisk_with_a_smaller_queue_loses_nothing() -> None:
    sim = started()
    sim.ast.levels = (40, 50, 80)  # our model allows 200 frames; this Asterisk says XOFF at 50
    audio = pattern(640 * 600)
    sim.run(14.0, feed(audio, 640 * 100, 0.05, 0.0))
    assert sim.ast.violations == []
    assert bytes(sim.ast.played) == audio
    assert sim.leg.counters.xoff_count >= 1
    assert sim.ast.max_queue < 80
    times = [t for t, _ in sim.ast.played_at]
    assert max(b - a for a, b in itertools.pairwise(times)) == pytest.approx(TICK)  # and no gaps


def test_hangup_goes_at_the_deadline_when_no_drain_event_comes() -> None:
    sim = started(ControlFormat.PLAIN)
    sim.ast.tick = lambda now: None  # type: ignore[method-assign]  # a wedged Asterisk: nothing plays
    sim.run(0.5, [*feed(pattern(640 * 20), 6400, 0.0, 0.0), (0.1, lambda leg, now: leg.begin_hangup(now))])
    assert sim.ast.hung_up_at is None
    sim.run(3.0)
    assert sim.ast.hung_up_at is not None
    assert sim.ast.hung_up_at == pytest.approx(0.4 + 1.5, abs=0.03)  # audio sent at 0 plays by 0.4; + margin


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 9000), st.floats(0.0, 0.3)), min_size=1, max_size=30),
    st.sampled_from([160, 640, 960]),
    st.sampled_from(ASTERISKS),
)
def test_any_delivery_pattern_keeps_the_invariants(
    pieces: list[tuple[int, float]], frame: int, asterisk: tuple[ControlFormat, bool]
) -> None:
    sim = started(asterisk[0], frame=frame, marks=asterisk[1])
    acts: list[tuple[float, Action]] = []
    t, sent = 0.0, b""
    for size, gap in pieces:
        t += gap
        piece = pattern(size - size % 2, len(sent))
        sent += piece
        acts.append((t, lambda leg, now, p=piece: leg.queue_audio(p) or None))  # type: ignore[misc]
    acts.append((t, lambda leg, now: leg.end_response()))
    sim.run(t + len(sent) / (frame * 50) + 1.0, acts)
    assert sim.ast.violations == []
    assert bytes(sim.ast.played) == sent
    assert sim.depth_seen <= 200
    assert sim.ast.max_queue <= 200


operations = st.lists(
    st.one_of(
        st.tuples(st.just("audio"), st.integers(1, 4000)),
        st.tuples(st.just("end"), st.just(0)),
        st.tuples(st.just("interrupt"), st.just(0)),
        st.tuples(st.just("pause"), st.just(0)),
        st.tuples(st.just("resume"), st.just(0)),
        st.tuples(st.just("status"), st.just(0)),
        st.tuples(st.just("wait"), st.integers(1, 500)),
    ),
    max_size=40,
)


@settings(max_examples=50, deadline=None)
@given(operations, st.sampled_from(ASTERISKS))
def test_random_operations_keep_the_protocol_and_always_hang_up(
    ops: list[tuple[str, int]], asterisk: tuple[ControlFormat, bool]
) -> None:
    fmt, marks = asterisk
    sim = started(fmt, marks=marks)
    t = 0.0
    for op, arg in ops:
        leg = sim.leg
        if op == "wait":
            sim.run(t + arg / 1000)
            t += arg / 1000
            continue
        n_before = len(sim.ast.log)
        if op == "audio":
            leg.queue_audio(pattern(arg - arg % 2))
        elif op == "end":
            leg.end_response()
        elif op == "interrupt":
            leg.interrupt(t)
        elif op == "pause":
            leg.pause(t)
        elif op == "resume":
            leg.resume(t)
        else:
            leg.request_status()
        sim.run(t)
        if op == "interrupt":  # control overtakes audio: the flush is the first thing written
            assert sim.ast.log[n_before] == TextMessage(cw.encode_command(cw.FlushMedia(), fmt))
    sim.leg.resume(t)
    sim.leg.begin_hangup(t)
    sim.run(t + 60.0)
    assert sim.ast.violations == []
    assert sim.ast.hung_up_at is not None
    assert sim.depth_seen <= 200
    assert sim.ast.max_queue <= 200


# ------------------------------------------------ against bridge.simulate's ChannelModel: multi-frame
FORMATS = pytest.mark.parametrize("afmt", [ULAW, SLIN16, SLIN24], ids=lambda f: f.name)


def started_model(afmt: AudioFormat, **kw: int) -> Sim[ModelAsterisk]:
    sim = Sim(ChanWebsocketLeg(**kw), ModelAsterisk(afmt))
    sim.events += [(0.0, e) for e in sim.leg.receive_text(sim.ast.media_start(), 0.0)]
    return sim


def model_deltas(
    audio: bytes, afmt: AudioFormat, t0: float, seed: int, speed: float = 4.0
) -> list[tuple[float, Action]]:
    """A realtime model's reply: deltas of 40-200 ms (whole samples, not whole frames), generated
    `speed` times faster than real time, then the end of the response. Each delta carries its arrival
    time as `received_at`."""
    rng = random.Random(seed)
    acts: list[tuple[float, Action]] = []
    t, i = t0, 0
    while i < len(audio):
        n = afmt.bytes_for_ms(rng.randint(40, 200)) + afmt.bytes_per_sample * rng.randint(0, 7)
        piece = audio[i : i + n]
        acts.append((t, lambda leg, now, p=piece: leg.queue_audio(p, received_at=now) or None))  # type: ignore[misc]
        t += afmt.ms_for_bytes(len(piece)) / 1000 / speed
        i += n
    acts.append((t, lambda leg, now: leg.end_response()))
    return acts


def sample_pattern(n: int, afmt: AudioFormat, start: int = 0) -> bytes:
    return pattern(n - n % afmt.bytes_per_sample, start)


@FORMATS
@pytest.mark.parametrize("seed", range(3))
def test_model_deltas_go_as_multi_frame_messages_the_simulated_asterisk_accepts(
    afmt: AudioFormat, seed: int
) -> None:
    sim = started_model(afmt)
    frame = afmt.frame_bytes
    first, second = sample_pattern(frame * 400 + 37, afmt), sample_pattern(frame * 150 + 11, afmt, 5)
    sim.run(30.0, [*model_deltas(first, afmt, 0.1, seed), *model_deltas(second, afmt, 12.0, seed + 9)])
    model = sim.ast.model
    assert model.stats.error_counts == {}  # nothing Asterisk would drop, ignore or reject
    assert bytes(sim.ast.played) == first + second  # every byte, in order, once
    binaries = sim.ast.binaries()
    # Whole frames only, except each response's short tail, which ends its last message.
    tails = [i for i, (_, data) in enumerate(binaries) if len(data) % frame]
    assert [len(binaries[i][1]) % frame for i in tails] == [len(first) % frame, len(second) % frame]
    assert all(len(data) <= 8000 for _, data in binaries)
    # Several frames per message: most carry a whole 200 ms (10 frames, 8 for slin24's 8000-byte cap).
    per_message = min(10, 8000 // frame)
    frames_sent = sum(-(-len(data) // frame) for _, data in binaries)
    assert frames_sent / len(binaries) >= 0.8 * per_message
    assert max(-(-len(data) // frame) for _, data in binaries) == per_message
    # Bounded: the simulated Asterisk's queue, and our model of it, stayed within 200 frames.
    assert model.stats.max_queue_depth <= 200
    assert sim.depth_seen <= 200
    # And never starved: once a response began it played one frame per tick to its end.
    for start, stop in ((0.1, 10.0), (12.0, 14.0)):
        times = [t for t, _ in sim.ast.played_at if start <= t < stop]
        assert max(b - a for a, b in itertools.pairwise(times)) == pytest.approx(TICK)


@FORMATS
def test_marks_between_multi_frame_messages_report_exactly_what_was_played(afmt: AudioFormat) -> None:
    sim = started_model(afmt)
    audio = sample_pattern(afmt.frame_bytes * 300, afmt)
    sim.run(10.0, model_deltas(audio, afmt, 0.0, seed=4))
    played = [(t, e) for t, e in sim.events if isinstance(e, PlayedUpTo)]
    per_ms = afmt.bytes_for_ms(20) / 20
    for t, e in played:  # each says exactly what the caller had heard when Asterisk reached it
        assert e.total_ms == pytest.approx(sim.ast.heard_before(t) / per_ms)
    # A mark follows the message that completes 200 ms of unmarked audio (and the response's end).
    message_ms = 20 * min(10, 8000 // afmt.frame_bytes)
    spacing = [b.total_ms - a.total_ms for (_, a), (_, b) in itertools.pairwise(played)]
    assert all(200 - 1e-6 <= gap < 200 + message_ms for gap in spacing[:-1])
    assert played[-1][1].total_ms == pytest.approx(6000)
    assert sim.ast.model.stats.marks_flushed == []


@FORMATS
@pytest.mark.parametrize("cut_at", [0.47, 1.333, 2.9, 5.01])
def test_barge_in_between_multi_frame_messages_truncates_at_what_was_heard(
    afmt: AudioFormat, cut_at: float
) -> None:
    sim = started_model(afmt)
    audio = sample_pattern(afmt.frame_bytes * 400, afmt)
    sim.run(cut_at, model_deltas(audio, afmt, 0.0, seed=2)[:-1])  # the model is still talking
    heard = sim.leg.interrupt(sim.now)
    sim.run(cut_at + 1.0)  # the flush goes out first; nothing of that response plays after it
    per_ms = afmt.bytes_for_ms(20) / 20
    truly = len(sim.ast.played) / per_ms
    assert sim.ast.heard_before(cut_at + 1e-6) / per_ms == truly
    assert abs(heard - truly) <= 20.0  # within the frame that was playing
    assert sim.ast.model.stats.flushes == 1
    assert sim.ast.model.stats.error_counts == {}


def test_an_echo_in_20ms_pieces_is_never_held_back() -> None:
    sim = started_model(ULAW)
    frames = [pattern(160, k) for k in range(250)]
    acts: list[tuple[float, Action]] = [
        (0.2 + k * TICK + 0.0013, lambda leg, now, p=f: leg.queue_audio(p, received_at=now) or None)  # type: ignore[misc]
        for k, f in enumerate(frames)
    ]
    sim.run(6.0, acts)
    binaries = sim.ast.binaries()
    assert [data for _, data in binaries] == frames  # one frame per message: there is nothing to batch
    assert [t for t, _ in binaries] == pytest.approx([t for t, _ in acts])  # each sent as it came


def test_each_chunk_is_stamped_on_the_message_carrying_its_first_byte() -> None:
    """The downlink latency hook: `received_at` of a queued chunk comes back on the message that
    carries its first byte, once."""
    sim = started_model(ULAW)
    sizes = [800, 80, 80, 1600, 2400, 1, 159, 3200]
    acts: list[tuple[float, Action]] = []
    for k, size in enumerate(sizes):
        piece = pattern(size, k)
        acts.append((0.05 * k, lambda leg, now, p=piece: leg.queue_audio(p, received_at=now) or None))  # type: ignore[misc]
    acts.append((0.05 * len(sizes), lambda leg, now: leg.end_response()))
    sim.run(5.0, acts)
    starts = list(itertools.accumulate(sizes, initial=0))[:-1]  # each chunk's first byte in the stream
    offset, carried = 0, {}
    for _, msg in sim.ast.log:
        if isinstance(msg, BinaryMessage):
            for stamp in msg.received_at:
                carried[round(stamp, 6)] = (offset, offset + len(msg.data))
            offset += len(msg.data)
    assert sorted(carried) == [round(0.05 * k, 6) for k in range(len(sizes))]
    for k, first_byte in enumerate(starts):
        lo, hi = carried[round(0.05 * k, 6)]
        assert lo <= first_byte < hi
