"""The load generator process: N simulated Asterisk calls against a running bridge, with per-frame timing.

Run by `python -m bench` as `python -m bench.loadgen SPEC.json OUT.json`. It reuses `bridge.simulate`'s
peers (the independent fake Asterisk) for everything on the wire and adds only observation:
- the caller's frames come from a `CallerAudio` subclass that notes the monotonic time each frame is
  handed to the peer for sending (both peers call `audio.frame(k)` right before writing frame k);
- arriving bridge audio is seen through a `ChannelModel` subclass (chan_websocket) or an `_audio`
  override (AudioSocket) that notes the arrival time and the sequence marks inside.
`time.monotonic()` is CLOCK_MONOTONIC, shared by every process on the machine, so the orchestrator can
line up its /proc samples with the window reported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection

from bench import seqmark
from bench.callaudio import marked_frames
from bench.stats import arrival_pacing, tick_gaps
from bridge.audio.formats import AudioFormat
from bridge.simulate.audio_source import silence_frame
from bridge.simulate.audiosocket_peer import AudioSocketCall
from bridge.simulate.chan_model import ChannelModel
from bridge.simulate.options import SimulatedCallOptions
from bridge.simulate.runtime import CallerAudio, SimulationConnectError, post_webhook
from bridge.simulate.summary import CallSummary
from bridge.simulate.ws_peer import WebSocketCall, open_media_socket

ECHO_DELAY_FRAMES = 10  # EchoProvider(delay_ms=200): frame k leaves when frame k + 10 has arrived
SETUP_ALLOWANCE_S = 4.0  # calls last `seconds` plus this, so the steady window is about `seconds` long
WINDOW_LEAD_S = 0.5  # the window opens this long after the last call got its first audio
WINDOW_TAIL_S = 0.5  # and closes this long before the first caller hangs up
DROP_CODES = ("queue_full_drop", "partial_frame_dropped", "media_direction_in")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What one generator process does (written as JSON by the orchestrator)."""

    url: str
    connector_key: str
    called: str
    calls: int
    seconds: float
    transport: Literal["chan_websocket", "audiosocket"] = "chan_websocket"
    format: Literal["ulaw", "slin16", "slin24"] = "slin16"
    audiosocket_port: int = 9092
    start_at: float = 0.0  # monotonic time to place the first call (lines up several generators)
    launch_rate: float = 0.0  # calls per second; 0 = all at once
    connect_timeout: float = 0.5  # Asterisk's chan_websocket connection_timeout
    match_frames: bool = True  # per-frame matching (only when the provider passes the audio through)
    index_base: int = 0  # distinct caller numbers across generator processes
    seed: int = 1
    allowance_s: float = SETUP_ALLOWANCE_S  # added to `seconds`: time for every call to be set up

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(slots=True)
class Probe:
    """Per-call observations, appended in the event loop (one list append per frame)."""

    marks_table: seqmark.MarkTable | None
    sent: list[float] = field(default_factory=list)  # frame k handed to the peer at sent[k]
    rx_times: list[float] = field(default_factory=list)  # every audio message's arrival
    rx_bytes: list[int] = field(default_factory=list)
    marks: list[tuple[int, float]] = field(default_factory=list)  # (sequence, arrival)

    def on_audio(self, data: bytes) -> None:
        t = time.monotonic()
        self.rx_times.append(t)
        self.rx_bytes.append(len(data))
        if self.marks_table is not None:
            for seq in self.marks_table.find(data):
                self.marks.append((seq, t))


@dataclass(frozen=True, slots=True)
class StampedAudio(CallerAudio):
    """Shared marked frames, read from `offset` on (calls say different things), noting each send."""

    probe: Probe = field(default_factory=lambda: Probe(None))
    offset: int = 0

    def frame(self, n: int) -> bytes:
        self.probe.sent.append(time.monotonic())
        return self.frames[(n + self.offset) % len(self.frames)]


class _ObservedModel(ChannelModel):
    def __init__(self, base: ChannelModel, probe: Probe) -> None:
        super().__init__(base.fmt, base.dialect, base.events)
        self._probe = probe

    def receive_binary(self, data: bytes) -> None:
        self._probe.on_audio(data)
        super().receive_binary(data)


class ObservedWebSocketCall(WebSocketCall):
    def __init__(
        self, opts: SimulatedCallOptions, ws: ClientConnection, audio: CallerAudio, probe: Probe
    ) -> None:
        super().__init__(opts, ws, audio)
        self.model = _ObservedModel(self.model, probe)


class ObservedAudioSocketCall(AudioSocketCall):
    def __init__(self, opts: SimulatedCallOptions, audio: CallerAudio, probe: Probe) -> None:
        super().__init__(opts, audio)
        self._probe = probe

    def _audio(self, kind: int, payload: bytes) -> None:
        self._probe.on_audio(payload)
        super()._audio(kind, payload)


@dataclass(slots=True)
class CallOutcome:
    index: int
    launched: float
    probe: Probe
    offset: int
    webhook_done: float | None = None
    summary: CallSummary | None = None
    failure: str | None = None


async def place_call(
    spec: LoadSpec,
    index: int,
    frames: tuple[bytes, ...],
    fmt: AudioFormat,
    table: seqmark.MarkTable | None,
    launch_at: float,
) -> CallOutcome:
    delay = launch_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    probe = Probe(table)
    offset = random.Random(spec.seed * 100003 + index).randrange(len(frames))
    out = CallOutcome(index, time.monotonic(), probe, offset)
    seconds = spec.seconds + spec.allowance_s
    opts = SimulatedCallOptions(
        url=spec.url,
        connector_key=spec.connector_key,
        transport=spec.transport,
        format=spec.format,
        call_id=str(uuid.uuid4()),
        caller=f"+1555{spec.index_base + index:07d}",
        called=spec.called,
        seconds=seconds,
        tail_seconds=0.0,
        audiosocket_port=spec.audiosocket_port,
        connect_timeout=spec.connect_timeout,
        max_seconds=seconds + 30.0,
    )
    audio = StampedAudio(frames, silence_frame(fmt), seconds, probe, offset)
    try:
        await post_webhook(opts, "connect")
        out.webhook_done = time.monotonic()
        if spec.transport == "audiosocket":
            out.summary = await ObservedAudioSocketCall(opts, audio, probe).run()
        else:
            ws = await open_media_socket(opts)
            try:
                out.summary = await ObservedWebSocketCall(opts, ws, audio, probe).run()
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
    except SimulationConnectError as exc:
        out.failure = f"setup: {exc}"
    except Exception as exc:  # a crash of one call must not lose the others' results
        out.failure = f"{type(exc).__name__}: {exc}"
        traceback.print_exc(file=sys.stderr)
    if out.failure is None and out.summary is not None and out.summary.error_counts:
        out.failure = "errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(out.summary.error_counts.items()))
    return out


async def _lag_monitor(out: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Oversleep of a 10 ms timer: how late this loop runs anything (the error bar on every timing)."""
    while not stop.is_set():
        t = time.monotonic()
        await asyncio.sleep(0.010)
        now = time.monotonic()
        out.append((now, (now - t - 0.010) * 1000))


async def _cpu_monitor(out: list[tuple[float, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        times = os.times()
        out.append((time.monotonic(), times.user + times.system))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.25)
    times = os.times()
    out.append((time.monotonic(), times.user + times.system))


def _window(outcomes: list[CallOutcome]) -> tuple[float, float]:
    """Steady state: every call has been answered with audio, no caller has hung up yet."""
    live = [o for o in outcomes if o.failure is None and o.probe.rx_times and o.probe.sent]
    if not live:
        return (0.0, 0.0)
    start = max(o.probe.rx_times[0] for o in live) + WINDOW_LEAD_S
    end = min(o.probe.sent[-1] for o in live) - WINDOW_TAIL_S
    return (start, max(start, end))


def analyse(spec: LoadSpec, outcomes: list[CallOutcome]) -> dict[str, Any]:
    """Everything the orchestrator needs, with raw latencies so several generators can be merged."""
    w0, w1 = _window(outcomes)
    latencies: list[float] = []
    calls: list[dict[str, Any]] = []
    for o in outcomes:
        s, p = o.summary, o.probe
        rec: dict[str, Any] = {"index": o.index, "failure": o.failure, "launched": o.launched}
        if o.webhook_done is not None:
            rec["webhook_ms"] = round((o.webhook_done - o.launched) * 1000, 2)
        if p.sent and o.webhook_done is not None:
            rec["socket_ms"] = round((p.sent[0] - o.webhook_done) * 1000, 2)
        if p.rx_times:
            rec["first_audio_ms"] = round((p.rx_times[0] - o.launched) * 1000, 2)
        if s is not None:
            rec.update(
                xoff=s.xoff_count,
                barge_ins=s.barge_ins,
                flushes=s.flushes,
                frames_flushed=s.frames_flushed,
                drops=sum(s.error_counts.get(code, 0) for code in DROP_CODES),
                max_queue=s.max_queue_depth,
                errors=dict(s.error_counts),
            )
            rec.update(_pacing(spec, s, p, w0, w1))
        if p.marks_table is not None and p.sent:
            lat, matched, lost, dup = _match(p, o.offset, n_frames_total=_frames_total(spec), w0=w0, w1=w1)
            latencies += lat
            rec.update(matched=matched, lost=lost, duplicates=dup)
        calls.append(rec)
    return {"window": [w0, w1], "latencies_ms": [round(x, 3) for x in latencies], "calls": calls}


def _frames_total(spec: LoadSpec) -> int:
    return round((spec.seconds + spec.allowance_s + 2.0) / 0.020)


def _match(
    p: Probe, offset: int, *, n_frames_total: int, w0: float, w1: float
) -> tuple[list[float], int, int, int]:
    """Bridge-added latency (up + down) of each echoed frame whose release lies in the window.

    The echo provider releases frame k when frame k + 10 reaches it, so the time from sending frame
    k + 10 to receiving frame k is the bridge's uplink plus downlink time, whatever the echo delay is.
    Returns (latencies ms, frames matched, frames expected but never heard, duplicates).
    """
    arrivals: dict[int, float] = {}
    dup = 0
    for seq, t in p.marks:
        k = (seq - offset) % n_frames_total
        if k in arrivals:
            dup += 1
            continue
        arrivals[k] = t
    lat: list[float] = []
    lost = 0
    for k in range(len(p.sent) - ECHO_DELAY_FRAMES):
        release = p.sent[k + ECHO_DELAY_FRAMES]
        if not w0 <= release <= w1:
            continue
        heard = arrivals.get(k)
        if heard is None:
            lost += 1
        else:
            lat.append((heard - release) * 1000)
    return lat, len(lat), lost, dup


def _pacing(spec: LoadSpec, s: CallSummary, p: Probe, w0: float, w1: float) -> dict[str, Any]:
    """Playout as the Asterisk side saw it, inside the window."""
    t0 = p.sent[0] if p.sent else 0.0  # call time 0 = first caller frame
    idx = [i for i, t in enumerate(p.rx_times) if w0 <= t <= w1]
    times = [p.rx_times[i] for i in idx]
    fmt_bytes_per_s = s.sample_rate * (1 if s.format == "ulaw" else 2)
    durations = [p.rx_bytes[i] / fmt_bytes_per_s for i in idx]
    arrival = arrival_pacing(times, durations)
    out: dict[str, Any] = {
        "arrival_gaps": arrival.gaps,
        "arrival_bursts": arrival.bursts,
        "max_lead_ms": arrival.max_lead_ms,
    }
    if spec.transport == "chan_websocket":
        ticks = [f.tick for f in s.played if w0 <= t0 + f.t <= w1]
        gaps = tick_gaps(ticks)
        out.update(playout_gaps=gaps.gaps, playout_missing=gaps.missing)
    else:
        # AudioSocket has no playout queue: what arrives is what plays.
        out.update(playout_gaps=arrival.gaps, playout_missing=0)
    return out


async def run(spec: LoadSpec) -> dict[str, Any]:
    fmt = SimulatedCallOptions(format=spec.format).audio_format
    frames = marked_frames(fmt, _frames_total(spec), seed=spec.seed)
    encoding = seqmark.encoding_of(fmt.name)
    table = seqmark.MarkTable(encoding, range(len(frames))) if encoding and spec.match_frames else None
    start = max(spec.start_at, time.monotonic())
    stop = asyncio.Event()
    lags: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []
    monitors = [asyncio.create_task(_lag_monitor(lags, stop)), asyncio.create_task(_cpu_monitor(cpu, stop))]
    step = 1.0 / spec.launch_rate if spec.launch_rate > 0 else 0.0
    tasks = [
        asyncio.create_task(place_call(spec, i, frames, fmt, table, start + i * step))
        for i in range(spec.calls)
    ]
    outcomes = list(await asyncio.gather(*tasks))
    stop.set()
    await asyncio.gather(*monitors)
    result = analyse(spec, outcomes)
    w0, w1 = result["window"]
    result["launched_at"] = start
    result["loop_lag_ms"] = [round(lag, 3) for t, lag in lags if w0 <= t <= w1]
    inside = [(t, c) for t, c in cpu if w0 <= t <= w1]
    result["cpu_percent"] = (
        (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]
        else None
    )
    result["failures"] = dict(
        Counter((c["failure"] or "").split(":")[0] for c in result["calls"] if c["failure"])
    )
    return result


def run_loop(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """uvloop when installed: the generator must not be the bottleneck."""
    try:
        import uvloop  # noqa: PLC0415  (optional)
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m bench.loadgen SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = LoadSpec.from_json(Path(argv[0]).read_text())
    result = run_loop(run(spec))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
