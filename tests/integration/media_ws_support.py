"""The chan_websocket driver on loopback for tests that drive it directly: an aiohttp server with one
media route, and the MEDIA_START Asterisk sends first (µ-law unless said, 20 ms)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from tests.helpers import serving

ULAW_FRAME = 160


def media_start(format_name: str, frame_size: int) -> str:
    """MEDIA_START for a channel dialed with c(`format_name`), 20 ms frames of `frame_size` bytes."""
    return json.dumps(
        {
            "event": "MEDIA_START",
            "connection_id": "bridge_media",
            "channel": "WebSocket/bridge_media/0x1",
            "channel_id": "1767225600.1",
            "format": format_name,
            "optimal_frame_size": frame_size,
            "ptime": 20,
            "channel_variables": {},
        },
        separators=(",", ":"),
    )


def ulaw_media_start() -> str:
    return media_start("ulaw", ULAW_FRAME)


@contextlib.asynccontextmanager
async def media_route(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """Serve `handle` at /media on a free loopback port; yields the URL a `websockets` client (playing
    Asterisk) connects to."""
    app = web.Application()
    app.router.add_get("/media", handle)
    async with serving(app) as port:
        yield f"ws://127.0.0.1:{port}/media"
