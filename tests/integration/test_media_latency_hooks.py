"""The latency hooks of both media drivers, on loopback sockets.

Uplink: every caller frame reaches the session as `AudioIn` stamped with the loop time it was read.
Downlink: `on_downlink_sent` gets a `play` chunk's `received_at` once, when the message or frame that
carries the chunk's first byte is written to Asterisk (not when it was queued).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator

import pytest
import websockets
from aiohttp import web
from websockets.asyncio.client import connect

from bridge.asterisk.audiosocket import AudioSocketParser, Kind, Uuid, encode_audio, encode_uuid
from bridge.asterisk.audiosocket_server import AudioSocketMediaLeg
from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.media_ws import ChanWebsocketMediaLeg, UpgradedConnection
from bridge.session.leg import AudioIn
from tests.integration.media_ws_support import ULAW_FRAME, media_route, ulaw_media_start

SLIN_FRAME = 320  # AudioSocket 8 kHz slin, 20 ms
GUARD_S = 10.0
CALL = uuid.UUID("6a1d4b52-0d3c-4f7e-9a43-5d2b7a0c9e11")


class HookLog:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.calls: list[tuple[float, float]] = []  # (received_at passed, loop time of the call)

    def __call__(self, received_at: float) -> None:
        self.calls.append((received_at, self.loop.time()))


async def read_frames(leg: ChanWebsocketMediaLeg | AudioSocketMediaLeg, count: int) -> list[AudioIn]:
    got: list[AudioIn] = []
    async for item in leg.inbound():
        assert isinstance(item, AudioIn)
        got.append(item)
        if len(got) == count:
            break
    return got


@contextlib.asynccontextmanager
async def chan_websocket_leg() -> AsyncIterator[tuple[asyncio.Future[ChanWebsocketMediaLeg], str]]:
    """An aiohttp server whose one route runs the real driver; yields the leg (once connected) and
    the URL for the `websockets` client that plays Asterisk."""
    ready: asyncio.Future[ChanWebsocketMediaLeg] = asyncio.get_running_loop().create_future()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("media",), compress=False)
        writer = await ws.prepare(request)
        leg = ChanWebsocketMediaLeg(ws, UpgradedConnection.of(request, writer), ChanWebsocketLeg())
        ready.set_result(leg)
        await leg.run()
        return ws

    async with media_route(handle) as url:
        yield ready, url


async def test_chan_websocket_stamps_caller_frames_and_reports_model_chunks_when_written() -> None:
    loop = asyncio.get_running_loop()
    async with (
        chan_websocket_leg() as (ready, url),
        connect(url, subprotocols=[websockets.Subprotocol("media")], compression=None) as ws,
    ):
        leg = await asyncio.wait_for(ready, GUARD_S)
        hook = HookLog()
        leg.on_downlink_sent = hook
        await ws.send(ulaw_media_start())
        sent_at = []
        for k in range(5):
            sent_at.append(loop.time())
            await ws.send(bytes([k]) * ULAW_FRAME)
            await asyncio.sleep(0.02)
        frames = await asyncio.wait_for(read_frames(leg, 5), GUARD_S)
        assert [f.data for f in frames] == [bytes([k]) * ULAW_FRAME for k in range(5)]
        for frame, t in zip(frames, sent_at, strict=True):
            assert frame.received_at is not None
            assert t <= frame.received_at <= t + 0.02  # read right after it was sent

        # Two chunks from the model: the first is whole frames, the second starts mid-frame.
        model_read = loop.time() - 0.004
        played_at = loop.time()
        leg.play(b"\x01" * (3 * ULAW_FRAME), received_at=model_read)
        leg.play(b"\x02" * 100, received_at=model_read + 0.001)
        leg.play(b"\x03" * (ULAW_FRAME - 100), received_at=None)  # an unstamped chunk: no report
        leg.end_response()
        audio, arrived = b"", []
        while len(audio) < 4 * ULAW_FRAME:
            message = await asyncio.wait_for(ws.recv(), GUARD_S)
            if isinstance(message, bytes):
                audio += message
                arrived.append((len(audio), loop.time()))
        assert audio == b"\x01" * 480 + b"\x02" * 100 + b"\x03" * 60
        # Each chunk is written as it is played (the write loop was idle): the first went to an empty
        # queue and is timed; the second waited behind it, which is not heard sooner, so it is not.
        assert [r for r, _ in hook.calls] == [model_read]
        assert played_at <= hook.calls[0][1] <= arrived[0][1]  # reported as written, before it arrived
        assert arrived[0][0] == 3 * ULAW_FRAME  # the first chunk left alone, before the others were played


async def test_audiosocket_stamps_caller_frames_and_reports_model_chunks_when_written() -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[AudioSocketMediaLeg] = loop.create_future()
    runs: list[asyncio.Task[None]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = AudioSocketParser()
        assert parser.feed(await reader.readexactly(19)) == [Uuid(CALL)]  # as the endpoint reads it
        leg = AudioSocketMediaLeg(reader, writer, parser, [])
        ready.set_result(leg)
        runs.append(asyncio.current_task())  # type: ignore[arg-type]
        try:
            await leg.run()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode_uuid(CALL))
    try:
        sent_at = []
        for k in range(5):
            sent_at.append(loop.time())
            writer.write(encode_audio(bytes([k]) * SLIN_FRAME, Kind.SLIN))
            await writer.drain()
            await asyncio.sleep(0.02)
        leg = await asyncio.wait_for(ready, GUARD_S)
        hook = HookLog()
        leg.on_downlink_sent = hook
        frames = await asyncio.wait_for(read_frames(leg, 5), GUARD_S)
        for frame, t in zip(frames, sent_at, strict=True):
            assert frame.received_at is not None
            assert t <= frame.received_at <= t + 0.02

        model_read = loop.time() - 0.004
        played_at = loop.time()
        leg.play(b"\x01" * (2 * SLIN_FRAME), received_at=model_read)
        leg.play(b"\x02" * 200, received_at=model_read + 0.001)  # lands in frame 3, with the next
        leg.play(b"\x03" * (SLIN_FRAME - 200 + SLIN_FRAME), received_at=model_read + 0.002)
        arrived = []
        for _ in range(4):
            header = await asyncio.wait_for(reader.readexactly(3), GUARD_S)
            await reader.readexactly(int.from_bytes(header[1:], "big"))
            arrived.append(loop.time())
        # Only the chunk with nothing queued ahead is timed: the later ones wait behind it on purpose.
        assert [r for r, _ in hook.calls] == [model_read]
        assert played_at <= hook.calls[0][1] <= arrived[0]
        # one drift-free grid: the four frames went 20 ms apart
        gaps = [b - a for a, b in itertools.pairwise(arrived)]
        assert gaps == pytest.approx([0.02] * 3, abs=0.008)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        server.close()
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        await server.wait_closed()
