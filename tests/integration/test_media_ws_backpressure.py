"""An Asterisk that stops reading: the chan_websocket leg's frames wait for aiohttp's drain instead of piling
up in the transport's buffer, and reach Asterisk whole and in order once it reads again.

The leg writes its frames straight onto the transport (bridge/asterisk/ws_frames.py). Its model of
Asterisk's queue assumes playout goes on, so without the drain a stalled reader would make the buffer grow
by 1.5x real time for as long as it stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import websockets
from aiohttp import web
from websockets.asyncio.client import connect

from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.media_ws import ChanWebsocketMediaLeg, UpgradedConnection
from bridge.session.leg import AudioIn
from tests.integration.media_ws_support import media_route, media_start

SLIN16_FRAME = 640
HIGH_WATER = 2048
STALL_S = 1.5
# What may sit in the buffer at most: the high-water mark, plus what one write step sends once a drain
# ends (the leg's rate budget holds at most its burst, 10 frames), plus its control messages.
BUFFER_BOUND = HIGH_WATER + 10 * SLIN16_FRAME + 2048
GUARD_S = 10.0


async def test_a_peer_that_stops_reading_holds_the_writes_back_and_then_gets_every_frame() -> None:
    loop = asyncio.get_running_loop()
    started: asyncio.Future[tuple[ChanWebsocketMediaLeg, asyncio.Transport]] = loop.create_future()
    done = asyncio.Event()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("media",), compress=False)
        writer = await ws.prepare(request)
        connection = UpgradedConnection.of(request, writer)
        connection.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        connection.transport.set_write_buffer_limits(high=HIGH_WATER)
        leg = ChanWebsocketMediaLeg(ws, connection, ChanWebsocketLeg())
        run = asyncio.ensure_future(leg.run())
        async for item in leg.inbound():  # MEDIA_START and a caller frame: the call is up
            assert isinstance(item, AudioIn)
            break
        started.set_result((leg, connection.transport))
        await done.wait()
        await ws.close()
        await asyncio.wait_for(run, GUARD_S)
        return ws

    async with media_route(handle) as url:
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
        sock.connect((host, int(port)))
        sock.setblocking(False)
        async with connect(
            url, sock=sock, subprotocols=[websockets.Subprotocol("media")], compression=None, max_queue=4
        ) as ws:
            await ws.send(media_start("slin16", SLIN16_FRAME))
            await ws.send(b"\x00" * SLIN16_FRAME)
            leg, transport = await asyncio.wait_for(started, GUARD_S)
            # A 10 s reply, every frame saying its number; the client reads nothing meanwhile.
            reply = b"".join(bytes([n % 256]) * SLIN16_FRAME for n in range(500))
            try:
                leg.play(reply)
                leg.end_response()
                buffered, sent = [], []
                for _ in range(round(STALL_S / 0.01)):
                    await asyncio.sleep(0.01)
                    buffered.append(transport.get_write_buffer_size())
                    sent.append(leg.stats().frames_out)
                assert max(buffered) > 0  # the peer really stalled the writes
                assert max(buffered) <= BUFFER_BOUND
                # Held, not paced on: over the stall's second half, nothing more went out.
                assert sent[len(sent) // 2] == sent[-1]

                frames: list[int] = []
                while len(frames) < sent[-1]:
                    message = await asyncio.wait_for(ws.recv(), GUARD_S)
                    if isinstance(message, bytes):
                        assert len(message) % SLIN16_FRAME == 0  # whole frames only
                        frames += [message[i] for i in range(0, len(message), SLIN16_FRAME)]
                assert frames == [n % 256 for n in range(len(frames))]  # in order, none lost
            finally:
                leg.interrupt()  # the rest of the reply is not wanted
                done.set()  # the bridge closes the socket
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                while True:  # what is still in flight, up to the bridge's close frame
                    await asyncio.wait_for(ws.recv(), GUARD_S)
