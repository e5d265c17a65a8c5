"""FakeGeminiLive: the WebSocket endpoint (path, key) and the connection registry."""

from __future__ import annotations

import re
import time
from types import TracebackType
from typing import Any

from aiohttp import web

from .connection import FakeConnection, Shared
from .script import ConnectionRecord, Script

PATH = re.compile(
    r"^/ws/google\.ai\.generativelanguage\.(v1|v1beta|v1alpha)\.GenerativeService\."
    r"BidiGenerateContent(Constrained)?$"
)
DEFAULT_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
_SECRET_HEADERS = frozenset({"x-goog-api-key", "authorization", "cookie"})


class FakeGeminiLive:
    """A strict Gemini Live server on loopback.

    async with FakeGeminiLive(api_key="k", script=Script(...)) as fake:
        ... connect to fake.url with header x-goog-api-key ...
    fake.assert_clean()
    """

    def __init__(
        self,
        *,
        api_key: str = "gemini-test-key",
        script: Script | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.shared = Shared(script or Script(), api_key)
        self.host = host
        self._port = port
        self.connections: list[ConnectionRecord] = []
        self._runner: web.AppRunner | None = None
        self._site_port = 0

    @property
    def script(self) -> Script:
        return self.shared.script

    @script.setter
    def script(self, value: Script) -> None:
        self.shared.script = value

    @property
    def failures(self) -> list[str]:
        return self.shared.failures

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self._site_port}{DEFAULT_PATH}"

    @property
    def last(self) -> ConnectionRecord:
        return self.connections[-1]

    def assert_clean(self) -> None:
        if self.failures:
            listing = "\n  ".join(self.failures)
            raise AssertionError(f"fake Gemini Live saw {len(self.failures)} problem(s):\n  {listing}")

    def stats(self) -> dict[str, Any]:
        return {
            "connections": len(self.connections),
            "turns": sum(len(c.turns) for c in self.connections),
            "interruptions": sum(len(c.interruptions) for c in self.connections),
            "input_audio_ms": round(sum(c.input_audio_ms for c in self.connections)),
            "audio_ms_sent": round(sum(t.audio_ms_sent for c in self.connections for t in c.turns)),
            "failures": len(self.failures),
            "failure_samples": self.failures[:5],
        }

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{path:.*}", self._handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._site_port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeGeminiLive:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _handler(self, request: web.Request) -> web.StreamResponse:
        if not PATH.match(request.path):
            self.failures.append(f"unknown path {request.path!r}")
            return web.json_response({"error": {"code": 404, "status": "NOT_FOUND"}}, status=404)
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS}
        record = ConnectionRecord(len(self.connections) + 1, request.path, headers)
        record.opened_t = time.monotonic()
        self.connections.append(record)
        await FakeConnection(ws, request, record, self.shared).run(authorized=key == self.shared.api_key)
        return ws
