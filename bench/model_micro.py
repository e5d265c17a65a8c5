"""The model side's hot path, in CPU per event and per second of audio: `python -m bench.model_micro`.

    python -m bench.model_micro receive [--events 6000] [--mode paced|burst]
    python -m bench.model_micro uplink [--calls 50] [--seconds 10] [--batches 20,40,60,100]

`receive`: a peer in a child process (pinned to another core) sends a typical mix of server events
(`response.output_audio.delta` of 20-200 ms µ-law, transcript deltas, `rate_limits.updated` and the
other events a response brings) over a real loopback WebSocket to one `RealtimeProvider`, whose
`events()` is iterated as a call's downlink lane does; reported: this process's CPU per event. Also
`protocol`: the same messages through `RealtimeProtocol.receive` and the client's dispatch with the
socket taken out (an in-memory message source), µs per event.

`uplink`: `--calls` providers connected to the fake OpenAI server (a child process), each handed one
20 ms µ-law frame every 20 ms as a call's uplink lane does; reported per `uplink_batch_ms`: this
process's CPU per second of caller audio (the same loop without the providers subtracted), messages
per second of audio, and the uplink latency the batching adds (frame read -> append written).

Runs on uvloop when installed, as `bridge serve` does. Older trees (without `uplink_batch_ms`) are
measured at batch 20: `PYTHONPATH=/path/to/old-tree python -m bench.model_micro ...` from a directory
without its own `bridge`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bridge.audio.formats import ULAW
from bridge.logging import configure_logging
from bridge.providers.base import ModelFormats, ProviderError
from bridge.providers.brief import AgentBrief
from bridge.providers.openai.client import RealtimeProvider
from bridge.providers.openai.dialect import OPENAI
from bridge.settings_agents import OpenAISettings

FAKE_KEY = "sk-test-key"
FRAME = b"\xff" * 160  # 20 ms of µ-law silence (the fake's VAD stays quiet, so no replies come back)
END = {
    "type": "error",
    "error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "end"},
}


# -- the event mix -----------------------------------------------------------------------------------


def server_events(count: int, seed: int = 7) -> list[str]:
    """`count` server messages as a call's model sends them: whole responses, then a caller turn."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    n = 0
    while len(out) < count:
        n += 1
        rid, iid, uid = f"resp_{n:06d}", f"item_{n:06d}", f"item_u{n:06d}"
        ids = {"response_id": rid, "item_id": iid, "output_index": 0, "content_index": 0}
        item = {"id": iid, "object": "realtime.item", "type": "message", "role": "assistant"}
        out += [
            {"type": "response.created", "response": {"id": rid, "object": "realtime.response"}},
            {
                "type": "rate_limits.updated",
                "rate_limits": [{"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1.5}],
            },
            {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item},
            {"type": "conversation.item.added", "previous_item_id": None, "item": item},
            {"type": "response.content_part.added", **ids, "part": {"type": "audio", "transcript": ""}},
        ]
        words = []
        for _ in range(rng.randint(8, 30)):
            ms = rng.choice((20, 40, 60, 100, 200))
            audio = base64.b64encode(rng.randbytes(8 * ms)).decode()
            word = rng.choice(("hello", "there", "how", "can", "I", "help", "you", "today"))
            words.append(word)
            out.append({"type": "response.output_audio.delta", **ids, "delta": audio})
            out.append({"type": "response.output_audio_transcript.delta", **ids, "delta": f"{word} "})
        transcript = " ".join(words)
        out += [
            {"type": "response.output_audio.done", **ids},
            {"type": "response.output_audio_transcript.done", **ids, "transcript": transcript},
            {
                "type": "response.content_part.done",
                **ids,
                "part": {"type": "audio", "transcript": transcript},
            },
            {"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": item},
            {"type": "conversation.item.done", "previous_item_id": None, "item": item},
            {
                "type": "response.done",
                "response": {
                    "id": rid,
                    "status": "completed",
                    "usage": {
                        "input_tokens": 200,
                        "output_tokens": 100,
                        "input_token_details": {"text_tokens": 150, "audio_tokens": 50},
                        "output_token_details": {"text_tokens": 20, "audio_tokens": 80},
                    },
                },
            },
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": uid},
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 2000, "item_id": uid},
            {"type": "input_audio_buffer.committed", "item_id": uid, "previous_item_id": iid},
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": uid,
                "content_index": 0,
                "transcript": "I would like to book a table",
                "usage": {"type": "tokens", "input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
            },
        ]
    return [json.dumps({"event_id": f"event_{i:08d}", **e}) for i, e in enumerate(out[:count])]


# -- helpers -----------------------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    try:
        import uvloop  # noqa: PLC0415  (optional, as in bridge.cli)
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def settings(url: str, batch_ms: int) -> OpenAISettings:
    extra: dict[str, Any] = {}
    if "uplink_batch_ms" in OpenAISettings.model_fields:
        extra["uplink_batch_ms"] = batch_ms
    elif batch_ms != 20:
        raise SystemExit("this tree has no uplink_batch_ms: only --batches 20 can be measured")
    return OpenAISettings(api_key=FAKE_KEY, url=url, model="gpt-realtime", **extra)


def provider(url: str, http: aiohttp.ClientSession, batch_ms: int = 20) -> RealtimeProvider:
    return RealtimeProvider(dialect=OPENAI, settings=settings(url, batch_ms), brief=AgentBrief(), http=http)


def child(args: list[str], core: int) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A peer process (pinned to `core`) that prints one JSON line with its url once listening."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(proc.pid, {core})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait()
        raise SystemExit(f"{args} did not start")
    return proc, json.loads(line)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- receive -----------------------------------------------------------------------------------------


async def blaster(count: int, mode: str) -> dict[str, Any]:
    """Child process: on each connection, after session.update, send the mix, then a fatal error."""
    messages = server_events(count)
    finished = asyncio.Event()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
        await ws.prepare(request)
        async for message in ws:
            if json.loads(message.data).get("type") == "session.update":
                break
        for text in messages:
            await ws.send_str(text)
            if mode == "paced":
                await asyncio.sleep(0.0005)  # about one message per client wake-up, as in real calls
        await ws.send_str(json.dumps(END))
        async for _ in ws:
            pass
        finished.set()
        return ws

    app = web.Application()
    app.router.add_get("/v1/realtime", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"url": f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/realtime"}), flush=True)
    await asyncio.Event().wait()
    return {}


async def measure_receive(url: str, count: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        model = provider(url, http)
        await model.connect()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await model.start(ModelFormats(ULAW, ULAW))
        seen = 0
        async for event in model.events():
            if isinstance(event, ProviderError):
                break
            seen += 1
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        await model.close()
    return {"events_in": count, "events_out": seen, "cpu_us_per_event": cpu / count * 1e6, "wall_s": wall}


class MemorySocket:
    """The socket taken out: hands the provider prepared messages, as `ClientWebSocketResponse` would."""

    closed = False
    close_code = None

    def __init__(self, messages: list[str]) -> None:
        self._messages = [aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, m, None) for m in messages]
        self._messages.append(aiohttp.WSMessage(aiohttp.WSMsgType.TEXT, json.dumps(END), None))
        self._next = 0

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:  # noqa: ASYNC109  (aiohttp's)
        message = self._messages[self._next]
        self._next += 1
        return message

    async def send_str(self, data: str) -> None:
        pass

    async def close(self) -> bool:
        return True


async def measure_protocol(count: int, repeat: int = 5) -> dict[str, Any]:
    messages = server_events(count)
    best = float("inf")
    async with aiohttp.ClientSession() as http:
        for _ in range(repeat):
            model = provider("ws://127.0.0.1:1/v1/realtime", http)
            model._ws = MemorySocket(messages)  # type: ignore[assignment]
            # No rotation due while measuring (older trees keep the connection time instead).
            vars(model).update(_rotate_at=float("inf"), _connected_at=asyncio.get_running_loop().time())
            await model.start(ModelFormats(ULAW, ULAW))
            cpu0 = time.process_time()
            async for event in model.events():
                if isinstance(event, ProviderError):
                    break
            best = min(best, time.process_time() - cpu0)
    return {"protocol_us_per_event": best / count * 1e6}


def cmd_receive(args: argparse.Namespace) -> dict[str, Any]:
    pin(0)
    result = run(measure_protocol(args.events))
    runs = []
    for _ in range(args.repeat):
        proc, ready = child(
            ["-m", "bench.model_micro", "blaster", "--events", str(args.events), "--mode", args.mode], core=1
        )
        try:
            runs.append(run(measure_receive(ready["url"], args.events)))
        finally:
            stop(proc)
    best = min(runs, key=lambda r: float(r["cpu_us_per_event"]))
    audio = sum('"response.output_audio.delta"' in m for m in server_events(args.events))
    return {
        "mode": args.mode,
        "events": args.events,
        "audio_deltas": audio,
        **result,
        "socket_us_per_event": best["cpu_us_per_event"],
        "socket_us_per_event_runs": [round(r["cpu_us_per_event"], 2) for r in runs],
        "events_out": best["events_out"],
    }


# -- uplink ------------------------------------------------------------------------------------------


async def ticks(seconds: float, step: Callable[[float], Coroutine[Any, Any, None]]) -> None:
    """Call `step(now)` every 20 ms on a drift-free grid for `seconds`."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(round(seconds * 50)):
        delay = start + n * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await step(loop.time())


async def measure_uplink(url: str, calls: int, seconds: float, batch_ms: int) -> dict[str, Any]:
    latencies: list[float] = []
    sent = [0]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        models = [provider(url, http, batch_ms) for _ in range(calls)]
        await asyncio.gather(*(m.connect() for m in models))
        await asyncio.gather(*(m.start(ModelFormats(ULAW, ULAW)) for m in models))
        loop = asyncio.get_running_loop()

        def on_sent(received_at: float) -> None:
            sent[0] += 1
            latencies.append(loop.time() - received_at)

        for m in models:
            m.on_uplink_sent = on_sent

        async def idle(now: float) -> None:
            for _ in models:
                pass

        async def send(now: float) -> None:
            for m in models:
                await m.send_audio(FRAME, now)

        cpu0 = time.process_time()
        await ticks(seconds, idle)
        baseline = time.process_time() - cpu0
        cpu0 = time.process_time()
        await ticks(seconds, send)
        cpu = time.process_time() - cpu0
        drained = sum(getattr(m, "audio_dropped", 0) for m in models)
        await asyncio.gather(*(m.close() for m in models))
    audio_s = calls * seconds
    hooked = bool(latencies)
    return {
        "batch_ms": batch_ms,
        "cpu_us_per_audio_s": (cpu - baseline) / audio_s * 1e6,
        "baseline_us_per_audio_s": baseline / audio_s * 1e6,
        "messages_per_audio_s": sent[0] / audio_s if hooked else 50.0,
        "added_latency_ms_mean": statistics.fmean(latencies) * 1000 if hooked else None,
        "added_latency_ms_max": max(latencies) * 1000 if hooked else None,
        "dropped": drained,
    }


def cmd_uplink(args: argparse.Namespace) -> dict[str, Any]:
    pin(0)
    runs: dict[int, list[dict[str, Any]]] = {batch: [] for batch in args.batches}
    fake = ["-m", "tests.fakes.openai_realtime", "--port", "0", "--api-key", FAKE_KEY]
    proc, ready = child(fake, core=1)
    try:
        for _ in range(args.repeat):  # interleaved, so a noisy neighbour hits every batch size alike
            for batch in args.batches:
                runs[batch].append(run(measure_uplink(ready["url"], args.calls, args.seconds, batch)))
    finally:
        stop(proc)
    results = []
    for measured in runs.values():
        cpu = sorted(r["cpu_us_per_audio_s"] for r in measured)
        results.append(
            {
                **measured[0],
                "cpu_us_per_audio_s": statistics.median(cpu),
                "cpu_us_per_audio_s_runs": [round(c) for c in cpu],
                "added_latency_ms_mean": statistics.median(r["added_latency_ms_mean"] or 0 for r in measured),
            }
        )
    return {"calls": args.calls, "seconds": args.seconds, "results": results}


# -- command line ------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.model_micro", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    rx = sub.add_parser("receive", help="CPU per model event on the downlink")
    rx.add_argument("--events", type=int, default=6000)
    rx.add_argument("--mode", choices=("paced", "burst"), default="paced")
    rx.add_argument("--repeat", type=int, default=3)
    up = sub.add_parser("uplink", help="CPU per second of caller audio, per uplink_batch_ms")
    up.add_argument("--calls", type=int, default=50)
    up.add_argument("--seconds", type=float, default=5.0)
    up.add_argument("--repeat", type=int, default=3)
    up.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[20, 40, 60, 100])
    bl = sub.add_parser("blaster", help="(internal) the peer of `receive`")
    bl.add_argument("--events", type=int, default=6000)
    bl.add_argument("--mode", choices=("paced", "burst"), default="paced")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "blaster":
        run(blaster(args.events, args.mode))
        return 0
    configure_logging("info", "json", io.StringIO())  # as in production: debug filtered out
    result = cmd_receive(args) if args.command == "receive" else cmd_uplink(args)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
