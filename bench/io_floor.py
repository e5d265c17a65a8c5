"""What one relayed call costs at the least, on this machine: `python -m bench.io_floor`.

    python -m bench.io_floor [--calls 200] [--seconds 20] [--work none,minimal,aiohttp] [--repeat 1]

A relay as bare as a Python relay can be runs in a child process pinned to core 0, on uvloop as
`bridge serve` runs. For each of `--calls` caller connections it opens one to a sink that plays the
model. Each caller sends a 20 ms frame every 20 ms on its own grid at a random phase: a masked
WebSocket binary frame of 160 bytes of µ-law, as Asterisk's chan_websocket sends them. The sink sends
each connection a 100 ms audio delta every 250 ms: an unmasked text frame holding a
`response.output_audio.delta` (the bench's fake model speaks about that share of the time). The relay
carries both ways:

- `none`: the bytes read are written on unchanged, from `data_received`. One `recv` and one `send` per
  message and the callback around them: the floor of any relay that sends a message per caller frame.
- `minimal`: the least a relay to the OpenAI protocol must do, from `data_received`, each step in C
  where a C helper exists. Up: parse the frame's header, unmask the payload (`websockets.speedups`),
  base64 it, wrap it in an `input_audio_buffer.append`, frame it with a fresh mask, write it. Down:
  parse the frame, `json.loads` it, base64-decode the delta, write it as one binary frame.
- `aiohttp`: the same work on aiohttp's WebSocket server and client with a task per direction per call,
  as the bridge's legs are built; the callers and the sink do the HTTP upgrade first.

The callers and the sink run in this process, pinned to core 1. Reported: the relay's CPU (from /proc)
over the steady window, per call and per caller frame. `python -m bench` measures the bridge itself;
`minimal` less `none` is the protocol work, `aiohttp` less `minimal` is the framework's share.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import os
import random
import shutil
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from subprocess import PIPE
from typing import cast

import aiohttp
from aiohttp import web
from websockets.speedups import apply_mask

from bridge.asterisk.ws_frames import OP_BINARY, OP_TEXT, server_frame

FRAME_MS = 20
PAYLOAD = 160  # 20 ms of 8 kHz µ-law
DELTA_MS, DELTA_EVERY_MS = 100, 250
APPEND_PREFIX = b'{"type":"input_audio_buffer.append","audio":"'
APPEND_SUFFIX = b'"}'
WORKS = ("none", "minimal", "aiohttp")
UPGRADE = (
    b"GET /media HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """A final frame masked with `mask`, as a WebSocket client must send it (RFC 6455 5.3)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + mask + apply_mask(payload, mask)


def append_message(audio: bytes) -> bytes:
    return APPEND_PREFIX + binascii.b2a_base64(audio, newline=False) + APPEND_SUFFIX


def delta_message(audio: bytes) -> bytes:
    event = {
        "type": "response.output_audio.delta",
        "response_id": "resp_1",
        "item_id": "item_1",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(audio).decode(),
    }
    return json.dumps(event, separators=(",", ":")).encode()


def split_frames(buf: bytearray) -> list[bytes]:
    """The payloads of the whole frames at the head of `buf` (unmasked), removed from it."""
    payloads = []
    while len(buf) >= 2:
        n, start = buf[1] & 0x7F, 2
        if n == 126:
            if len(buf) < 4:
                break
            n, start = (buf[2] << 8) | buf[3], 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, start = int.from_bytes(buf[2:10], "big"), 10
        masked = buf[1] & 0x80
        end = start + (4 if masked else 0) + n
        if len(buf) < end:
            break
        if masked:
            payloads.append(apply_mask(bytes(buf[start + 4 : end]), bytes(buf[start : start + 4])))
        else:
            payloads.append(bytes(buf[start:end]))
        del buf[:end]
    return payloads


def fresh_mask() -> bytes:
    return random.getrandbits(32).to_bytes(4, "big")


# -- the relay (child process) ---------------------------------------------------------------------------


class ModelSide(asyncio.Protocol):
    """The relay's connection to the sink: deltas go back to the caller."""

    def __init__(self, caller: asyncio.Transport, minimal: bool) -> None:
        self.caller, self.minimal, self.pending = caller, minimal, bytearray()

    def data_received(self, data: bytes) -> None:
        if not self.minimal:
            self.caller.write(data)
            return
        self.pending += data
        for payload in split_frames(self.pending):
            audio = binascii.a2b_base64(json.loads(payload)["delta"])
            self.caller.write(server_frame(OP_BINARY, audio))


class CallerSide(asyncio.Protocol):
    """One caller's connection; frames go out to the sink as they are read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sink_port: int, minimal: bool) -> None:
        self.loop, self.sink_port, self.minimal = loop, sink_port, minimal
        self.sink: asyncio.Transport | None = None
        self.pending = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop.create_task(self._open_sink(cast(asyncio.Transport, transport)))

    async def _open_sink(self, caller: asyncio.Transport) -> None:
        transport, _ = await self.loop.create_connection(
            lambda: ModelSide(caller, self.minimal), "127.0.0.1", self.sink_port
        )
        self.sink = transport

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is None:
            return
        if not self.minimal:
            sink.write(data)
            return
        self.pending += data
        for payload in split_frames(self.pending):
            sink.write(client_frame(OP_TEXT, append_message(payload), fresh_mask()))


async def aiohttp_relay(request: web.Request) -> web.WebSocketResponse:
    session: aiohttp.ClientSession = request.app["session"]
    caller = web.WebSocketResponse()
    await caller.prepare(request)
    async with session.ws_connect(request.app["sink_url"]) as model:

        async def downlink() -> None:
            async for message in model:
                await caller.send_bytes(binascii.a2b_base64(json.loads(message.data)["delta"]))

        down = asyncio.create_task(downlink())
        async for message in caller:
            await model.send_frame(append_message(message.data), aiohttp.WSMsgType.TEXT)
        down.cancel()
    return caller


async def serve_app(app: web.Application) -> tuple[web.AppRunner, int]:
    """`app` on a free loopback port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, runner.addresses[0][1]


async def relay_main(sink_port: int, work: str) -> None:
    loop = asyncio.get_running_loop()
    if work == "aiohttp":
        app = web.Application()
        app["sink_url"] = f"http://127.0.0.1:{sink_port}/model"
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        app.router.add_get("/media", aiohttp_relay)
        _, port = await serve_app(app)
    else:
        server = await loop.create_server(
            lambda: CallerSide(loop, sink_port, work == "minimal"), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    await asyncio.Event().wait()


# -- callers and sink (this process) --------------------------------------------------------------------


@dataclass
class Peers:
    """What the callers and the sink hold: their transports, and the bytes that came back."""

    sent: int = 0
    returned: int = 0
    to_sink: int = 0
    transports: list[asyncio.BaseTransport] = field(default_factory=list)
    deltas: list[asyncio.Task[None]] = field(default_factory=list)


class Caller(asyncio.Protocol):
    def __init__(self, peers: Peers) -> None:
        self.peers, self.upgraded = peers, asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.upgraded.set()  # the first bytes back are the 101 (or, on the raw relays, a delta)
        self.peers.returned += len(data)


async def caller(port: int, peers: Peers, stop_at: float, upgrade: bool) -> None:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_connection(lambda: Caller(peers), "127.0.0.1", port)
    peers.transports.append(transport)
    if upgrade:
        transport.write(UPGRADE)
        await protocol.upgraded.wait()
    message = client_frame(OP_BINARY, random.randbytes(PAYLOAD), os.urandom(4))
    due = loop.time() + random.random() * FRAME_MS / 1000
    while due < stop_at:
        await asyncio.sleep(max(0.0, due - loop.time()))
        transport.write(message)
        peers.sent += 1
        due += FRAME_MS / 1000


async def send_deltas(write: Callable[[bytes], object], stop_at: float) -> None:
    """Every DELTA_EVERY_MS, one DELTA_MS delta, starting at a random phase."""
    loop = asyncio.get_running_loop()
    delta = delta_message(random.randbytes(8 * DELTA_MS))
    due = loop.time() + random.random() * DELTA_EVERY_MS / 1000
    while due < stop_at:
        await asyncio.sleep(max(0.0, due - loop.time()))
        result = write(delta)
        if asyncio.iscoroutine(result):  # aiohttp's send_frame
            await result
        due += DELTA_EVERY_MS / 1000


class RawSink(asyncio.Protocol):
    def __init__(self, peers: Peers, stop_at: float) -> None:
        self.peers, self.stop_at = peers, stop_at

    def data_received(self, data: bytes) -> None:
        self.peers.to_sink += len(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.peers.transports.append(transport)
        write = cast(asyncio.Transport, transport).write
        self.peers.deltas.append(
            asyncio.get_running_loop().create_task(
                send_deltas(lambda d: write(server_frame(OP_TEXT, d)), self.stop_at)
            )
        )


async def start_sink(
    work: str, peers: Peers, stop_at: float
) -> tuple[int, asyncio.AbstractServer | web.AppRunner]:
    loop = asyncio.get_running_loop()
    if work != "aiohttp":
        server = await loop.create_server(lambda: RawSink(peers, stop_at), "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1], server

    async def model(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        task = asyncio.create_task(send_deltas(lambda d: ws.send_frame(d, aiohttp.WSMsgType.TEXT), stop_at))
        async for message in ws:
            peers.to_sink += len(message.data)
        task.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/model", model)
    runner, port = await serve_app(app)
    return port, runner


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def snapshot(pid: int, peers: Peers) -> tuple[float, float, int, int, int]:
    """The relay's CPU seconds, the wall clock, frames sent, bytes back to callers, bytes to the sink."""
    return cpu_seconds(pid), time.monotonic(), peers.sent, peers.returned, peers.to_sink


async def measure(calls: int, seconds: float, work: str, warm: float = 3.0) -> dict[str, float | int | str]:
    """One run: `warm` seconds for every call to start sending, then `seconds` measured."""
    loop = asyncio.get_running_loop()
    peers = Peers()
    sink_port, sink = await start_sink(work, peers, stop_at=float("inf"))  # until its connection ends
    relay = await asyncio.create_subprocess_exec(
        *pinned(0), sys.executable, "-m", "bench.io_floor", "relay", str(sink_port), work, stdout=PIPE
    )
    try:
        assert relay.stdout is not None
        line = await relay.stdout.readline()
        if not line.strip():
            raise RuntimeError(f"the {work} relay exited before it listened")
        port = int(line)
        stop_at = loop.time() + warm + seconds + 1.0
        tasks = [asyncio.create_task(caller(port, peers, stop_at, work == "aiohttp")) for _ in range(calls)]
        await asyncio.sleep(warm)
        cpu0, wall0, sent0, back0, up0 = snapshot(relay.pid, peers)
        await asyncio.sleep(seconds)
        cpu1, wall1, sent1, back1, up1 = snapshot(relay.pid, peers)
        await asyncio.gather(*tasks)
    finally:
        relay.kill()
        await relay.wait()
        for transport in peers.transports:
            transport.close()
        for task in peers.deltas:
            task.cancel()
        if isinstance(sink, web.AppRunner):
            await sink.cleanup()
        else:
            sink.close()
    percent = 100 * (cpu1 - cpu0) / (wall1 - wall0)
    frames = sent1 - sent0
    return {
        "work": work,
        "calls": calls,
        "relay_cpu_percent": round(percent, 2),
        "cpu_per_call": round(percent / calls, 4),
        "us_per_caller_frame": round(1e6 * (cpu1 - cpu0) / max(1, frames), 2),
        "caller_frames": frames,
        "bytes_up_per_caller_frame": round((up1 - up0) / max(1, frames)),
        "bytes_back_per_call_s": round((back1 - back0) / calls / (wall1 - wall0)),
    }


def pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if (os.cpu_count() or 1) > core and shutil.which("taskset") else []


def use_uvloop() -> None:
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    use_uvloop()
    if args[:1] == ["relay"]:
        asyncio.run(relay_main(int(args[1]), args[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.io_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--work", default=",".join(WORKS), help="comma-separated: none, minimal, aiohttp")
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args(args)
    works = options.work.split(",")
    if unknown := set(works) - set(WORKS):
        parser.error(f"unknown --work {sorted(unknown)}")
    if (os.cpu_count() or 1) > 1 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})
    for _ in range(options.repeat):
        for work in works:
            print(json.dumps(asyncio.run(measure(options.calls, options.seconds, work))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
