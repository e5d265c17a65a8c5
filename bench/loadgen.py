"""The load generator process: N simulated Asterisk calls against a running bridge, with per-frame timing.

Run by `python -m bench` as `python -m bench.loadgen SPEC.json OUT.json`. It reuses `bridge.simulate`'s
peers (the independent fake Asterisk) for everything on the wire and adds only observation:
- the caller's frames come from a `CallerAudio` subclass that notes the monotonic time each frame is
  handed to the peer for sending (both peers call `audio.frame(k)` right before writing frame k);
- arriving bridge audio is seen through a `ChannelModel` subclass (chan_websocket) or an `_audio`
  override (AudioSocket) that notes the arrival time and the sequence marks inside; the channel model's
  reply brackets and dry playout ticks go to a `ReplyTracker` (bench/underrun.py);
- setup is timed in two parts: the webhook (POST until the status line) and the media-socket upgrade
  (connect until the 101), against Asterisk's `connection_timeout` (an upgrade over it is abandoned).
`time.monotonic()` is CLOCK_MONOTONIC, shared by every process on the machine, so the orchestrator can
line up its /proc samples with the window reported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
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

import aiohttp
from websockets.asyncio.client import ClientConnection

from bench import seqmark
from bench.analysis import CallOutcome, Probe, analyse, frames_total
from bench.burst import failure_kind
from bench.callaudio import marked_frames
from bench.kernelstamps import KernelStampedMessages
from bench.limits import raise_nofile_limit
from bridge.audio.formats import AudioFormat
from bridge.simulate.audio_source import silence_frame
from bridge.simulate.audiosocket_peer import AudioSocketCall
from bridge.simulate.chan_model import ChannelModel
from bridge.simulate.options import WEBHOOK_PATH, SimulatedCallOptions
from bridge.simulate.runtime import CallerAudio, SimulationConnectError
from bridge.simulate.summary import HangupBy
from bridge.simulate.ws_peer import WebSocketCall, open_media_socket

SETUP_ALLOWANCE_S = 4.0  # calls last `seconds` plus this, so the steady window is about `seconds` long
WEBHOOK_TIMEOUT_S = 10.0
_TRACKED_COMMANDS = ("START_MEDIA_BUFFERING", "FLUSH_MEDIA", "PAUSE_MEDIA", "CONTINUE_MEDIA")


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
    # Fleet: call i posts its webhook to routes[i % n][0] and opens its media socket on routes[i % n][1]
    # (base URLs of two nodes); empty: both on `url`.
    routes: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, text: str) -> LoadSpec:
        data = json.loads(text)
        data["routes"] = tuple((str(w), str(m)) for w, m in data.get("routes", ()))
        return cls(**data)

    def route(self, index: int) -> tuple[str, str]:
        """(webhook base URL, media base URL) of this generator's call `index`."""
        if not self.routes:
            return self.url, self.url
        return self.routes[index % len(self.routes)]

    def to_json(self) -> str:
        return json.dumps(asdict(self))


@dataclass(frozen=True, slots=True)
class StampedAudio(CallerAudio):
    """Shared marked frames, read from `offset` on (calls say different things), noting each send."""

    probe: Probe = field(default_factory=lambda: Probe(None))
    offset: int = 0

    def frame(self, n: int) -> bytes:
        self.probe.sent.append(time.monotonic())
        return self.frames[(n + self.offset) % len(self.frames)]


class ObservedChannelModel(ChannelModel):
    """The simulated chan_websocket, plus what the benchmark needs to see: arrivals (with marks), reply
    brackets and dry ticks. Reads only the model's public stats, so the model stays the one under test."""

    def __init__(self, base: ChannelModel, probe: Probe) -> None:
        super().__init__(base.fmt, base.dialect, base.events)
        self._probe = probe
        self._replies = probe.replies

    def receive_binary(self, data: bytes) -> None:
        self._probe.on_audio(data, time.monotonic())
        super().receive_binary(data)

    def receive_text(self, raw: bytes) -> None:
        commands = self.stats.commands
        before = [commands[name] for name in _TRACKED_COMMANDS]
        super().receive_text(raw)
        for name, count in zip(_TRACKED_COMMANDS, before, strict=True):
            if commands[name] != count:
                self._replies.command(name)
                if name == "FLUSH_MEDIA":
                    self._probe.flushes.append(time.monotonic())

    def tick(self) -> bytes | None:
        completed = len(self.stats.buffering_completed)
        frame = super().tick()
        replies = self._replies
        if len(self.stats.buffering_completed) != completed:
            replies.completed(len(self.stats.buffering_completed) - completed)
        if frame is not None:
            replies.played()
        elif self.queue_length == 0 and self.direction != "in":
            replies.dry_tick(time.monotonic())
        return frame


class ObservedWebSocketCall(WebSocketCall):
    def __init__(
        self, opts: SimulatedCallOptions, ws: ClientConnection, audio: CallerAudio, probe: Probe
    ) -> None:
        super().__init__(opts, ws, audio)
        self.model = ObservedChannelModel(self.model, probe)


class ObservedAudioSocketCall(AudioSocketCall):
    """Arrival times are the kernel's (bench/kernelstamps.py): AudioSocket is played as it arrives, so
    how evenly frames arrive is what the caller hears, and this loop's own delays must not count."""

    def __init__(self, opts: SimulatedCallOptions, audio: CallerAudio, probe: Probe) -> None:
        super().__init__(opts, audio)
        self._probe = probe
        self._stamped: KernelStampedMessages | None = None

    async def _receiver(self, reader: asyncio.StreamReader) -> HangupBy:
        self._stamped = KernelStampedMessages(reader)
        try:
            return await super()._receiver(reader)
        finally:
            self._stamped.close()

    async def _read_message(self, reader: asyncio.StreamReader) -> tuple[int, bytes, float | None]:
        assert self._stamped is not None
        return await self._stamped.read()

    def _audio(self, kind: int, payload: bytes, arrived_at: float | None = None) -> None:
        self._probe.on_audio(payload, time.monotonic() if arrived_at is None else arrived_at)
        super()._audio(kind, payload, arrived_at)


class SetupFailed(Exception):
    """A call that never got its media going; the message starts with its kind (`kind: detail`)."""


def webhook_session() -> aiohttp.ClientSession:
    """One session for every call's webhook: no pool limit (aiohttp's default of 100 would queue a burst
    of 200 here, in the generator) and a new connection per POST, as separate PBX requests make."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S))


async def post_connect(
    http: aiohttp.ClientSession, opts: SimulatedCallOptions, webhook_base: str | None = None
) -> None:
    """The PBX's `connect` webhook, as `bridge.simulate.runtime.post_webhook` sends it; returns when the
    status line is in (the body is read after, outside the timing). `webhook_base`: another node's
    URL than the media socket's (the fleet path)."""
    body = {
        "callId": opts.call_id,
        "callerPhone": opts.caller,
        "b_number": opts.called,
        "event": "connect",
        "websocketUrl": opts.websocket_url,
    }
    headers = {"x-connector-api-key": opts.connector_key} if opts.connector_key else {}
    try:
        base = (webhook_base or opts.http_base).rstrip("/")
        async with http.post(base + WEBHOOK_PATH, json=body, headers=headers) as resp:
            if resp.status // 100 != 2:
                text = await resp.text()
                raise SetupFailed(f"webhook: HTTP {resp.status}: {text[:200]}")
            await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SetupFailed(f"webhook: {type(exc).__name__}: {exc}") from exc


async def open_upgrade(opts: SimulatedCallOptions, out: CallOutcome) -> ClientConnection:
    """The media socket, timed; over Asterisk's connection_timeout the call is abandoned, as Asterisk
    abandons it (the socket is closed, the call counts as failed)."""
    started = time.monotonic()
    try:
        ws = await open_media_socket(opts)
    except SimulationConnectError as exc:
        out.upgrade_ms = (time.monotonic() - started) * 1000
        kind = "upgrade_timeout" if isinstance(exc.__cause__, TimeoutError) else "upgrade"
        raise SetupFailed(f"{kind}: {exc}") from exc
    out.upgrade_ms = (time.monotonic() - started) * 1000
    if out.upgrade_ms > opts.connect_timeout * 1000:
        with contextlib.suppress(Exception):
            await ws.close()
        raise SetupFailed(f"upgrade_late: {out.upgrade_ms:.0f} ms > {opts.connect_timeout * 1000:.0f} ms")
    return ws


async def place_call(
    spec: LoadSpec,
    index: int,
    frames: tuple[bytes, ...],
    fmt: AudioFormat,
    table: seqmark.MarkTable | None,
    launch_at: float,
    http: aiohttp.ClientSession,
) -> CallOutcome:
    delay = launch_at - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)
    probe = Probe(table)
    offset = random.Random(spec.seed * 100003 + index).randrange(len(frames))
    out = CallOutcome(index, time.monotonic(), probe, offset)
    seconds = spec.seconds + spec.allowance_s
    webhook_base, media_base = spec.route(index)
    opts = SimulatedCallOptions(
        url=media_base,
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
        await post_connect(http, opts, webhook_base)
        out.webhook_done = time.monotonic()
        if spec.transport == "audiosocket":
            out.summary = await ObservedAudioSocketCall(opts, audio, probe).run()
        else:
            ws = await open_upgrade(opts, out)
            try:
                out.summary = await ObservedWebSocketCall(opts, ws, audio, probe).run()
            finally:
                with contextlib.suppress(Exception):
                    await ws.close()
    except SetupFailed as exc:
        out.failure = str(exc)
    except SimulationConnectError as exc:  # AudioSocket's connect
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


def setup_done(outcome: CallOutcome) -> float | None:
    """When this call's setup ended (first caller frame out), or None if it never did."""
    return outcome.probe.sent[0] if outcome.probe.sent else outcome.webhook_done


def launch_times(spec: LoadSpec, start: float) -> list[float]:
    """When each call is placed: `launch_rate` a second, call i at a random (seeded) instant of its own
    slot [start + i/rate, start + (i+1)/rate); 0 = all at `start`.

    Real calls start when callers dial, so their 20 ms frame clocks have unrelated phases. On an exact
    40 ms cadence (25/s) every call's clock would start a setup time after a multiple of 20 ms, and all
    of them would tick within the same few milliseconds of every 20: a burst of work each frame for the
    bridge and for this generator that no PBX produces."""
    if spec.launch_rate <= 0:
        return [start] * spec.calls
    step = 1.0 / spec.launch_rate
    rng = random.Random(spec.seed)
    return [start + (i + rng.random()) * step for i in range(spec.calls)]


async def run(spec: LoadSpec) -> dict[str, Any]:
    fmt = SimulatedCallOptions(format=spec.format).audio_format
    frames = marked_frames(fmt, frames_total(spec), seed=spec.seed)
    encoding = seqmark.encoding_of(fmt.name)
    table = seqmark.MarkTable(encoding, range(len(frames))) if encoding and spec.match_frames else None
    start = max(spec.start_at, time.monotonic())
    stop = asyncio.Event()
    lags: list[tuple[float, float]] = []
    cpu: list[tuple[float, float]] = []
    monitors = [asyncio.create_task(_lag_monitor(lags, stop)), asyncio.create_task(_cpu_monitor(cpu, stop))]
    async with webhook_session() as http:
        tasks = [
            asyncio.create_task(place_call(spec, i, frames, fmt, table, at, http))
            for i, at in enumerate(launch_times(spec, start))
        ]
        outcomes = list(await asyncio.gather(*tasks))
    stop.set()
    await asyncio.gather(*monitors)
    result = analyse(spec, outcomes)
    w0, w1 = result["window"]
    result["launched_at"] = start
    result["loop_lag_ms"] = [round(lag, 3) for t, lag in lags if w0 <= t <= w1]
    set_up = [t for t in map(setup_done, outcomes) if t is not None]
    placing_end = max(set_up, default=start)
    result["burst_lag_ms"] = [round(lag, 3) for t, lag in lags if start <= t <= placing_end]
    inside = [(t, c) for t, c in cpu if w0 <= t <= w1]
    result["cpu_percent"] = (
        (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0]) * 100
        if len(inside) >= 2 and inside[-1][0] > inside[0][0]
        else None
    )
    result["failures"] = dict(Counter(failure_kind(c["failure"]) for c in result["calls"] if c["failure"]))
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
    raise_nofile_limit()  # hundreds of sockets; the orchestrator raised it too, but this may run alone
    spec = LoadSpec.from_json(Path(argv[0]).read_text())
    # No cyclic GC while measuring: the generator keeps every call's arrivals, so its full collections
    # grow with the run (28 -> 124 ms every ~3 s at 200 calls, measured) and a pause that long reads a
    # whole stall's audio at once, which the AudioSocket peer then fails as a burst from the bridge.
    # A bounded run's cycles are few; memory is freed when the process exits.
    gc.freeze()
    gc.disable()
    result = run_loop(run(spec))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
