"""Model audio that comes while Asterisk's socket is closing: written nowhere, and no error left behind.

The caller hangs up (Asterisk closes the TCP connection) while the model is still talking. Until the
read loop sees the close, `play` still runs a write step, which finds the transport closing. That is
the end of the call, not a failure: nothing may be logged as an unretrieved exception later, and the
leg's run ends as for any hangup.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import websockets
from aiohttp import web
from websockets.asyncio.client import connect

from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.media_ws import ChanWebsocketMediaLeg, UpgradedConnection
from bridge.session.leg import AudioIn
from tests.integration.media_ws_support import ULAW_FRAME, media_route, ulaw_media_start

GUARD_S = 10.0


async def test_audio_played_while_the_socket_closes_leaves_no_unretrieved_error() -> None:
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    outcome: asyncio.Future[BaseException | None] = loop.create_future()

    async def handle(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("media",), compress=False)
        writer = await ws.prepare(request)
        leg = ChanWebsocketMediaLeg(ws, UpgradedConnection.of(request, writer), ChanWebsocketLeg())
        run = asyncio.ensure_future(leg.run())
        async for item in leg.inbound():  # MEDIA_START and one caller frame: the call is up
            assert isinstance(item, AudioIn)
            break
        await asyncio.sleep(0.05)  # the write loop has nothing to send: it is parked
        transport = request.transport
        assert transport is not None
        transport.close()  # the connection goes; the read loop has not seen it yet
        for _ in range(3):  # the model keeps talking meanwhile
            leg.play(b"\x01" * ULAW_FRAME * 5)
        try:
            await asyncio.wait_for(run, GUARD_S)
        except BaseException as exc:  # reported to the test below
            outcome.set_result(exc)
        else:
            outcome.set_result(None)
        return ws

    try:
        async with (
            media_route(handle) as url,
            connect(url, subprotocols=[websockets.Subprotocol("media")], compression=None) as ws,
        ):
            await ws.send(ulaw_media_start())
            await ws.send(b"\xff" * ULAW_FRAME)
            assert await asyncio.wait_for(outcome, GUARD_S) is None  # the run ended as a hangup
        gc.collect()  # an exception nobody retrieved is reported when its future is collected
        await asyncio.sleep(0)
        assert [c.get("message") for c in unhandled] == []
    finally:
        loop.set_exception_handler(previous)
