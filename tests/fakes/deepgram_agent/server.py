"""FakeDeepgramAgent: the upgrade (path, `Authorization: Token`), refusals on command, the registry."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from .connection import FakeAgentConnection
from .script import ConnectionRecord, Script

PATH = "/v1/agent/converse"
_SECRET_HEADERS = frozenset({"authorization", "cookie", "sec-websocket-protocol"})


class FakeDeepgramAgent:
    """A strict Deepgram Voice Agent (v1) server on loopback.

    async with FakeDeepgramAgent(script=Script(...)) as fake:
        ... connect to fake.url with {"Authorization": f"Token {fake.api_key}"} ...
    fake.assert_clean()
    """

    def __init__(
        self,
        *,
        api_key: str = "dg-test-key",
        script: Script | Callable[[int], Script] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self._script = script if script is not None else Script()
        self.host = host
        self._port = port
        self.connections: list[ConnectionRecord] = []
        self.failures: list[str] = []
        self.rejected: list[dict[str, Any]] = []  # refused upgrades: status, reason
        self.refuse_connections = 0  # refuse this many next upgrades with HTTP 503 (then accept again)
        self._live: set[FakeAgentConnection] = set()
        self._runner: web.AppRunner | None = None

    # --- public API ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("server not started")
        return int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATH}"

    @property
    def last(self) -> ConnectionRecord:
        return self.connections[-1]

    def assert_clean(self) -> None:
        if self.failures:
            listing = "\n  ".join(self.failures)
            raise AssertionError(f"fake Deepgram agent saw {len(self.failures)} problem(s):\n  {listing}")

    def drop_all(self) -> None:
        """Vanish from every open connection (no close frame), as a network failure would."""
        for conn in list(self._live):
            conn.record.closed_by = "drop"
            transport = conn.request.transport
            if transport is not None:
                transport.abort()

    def stats(self) -> dict[str, Any]:
        replies = [r for c in self.connections for r in c.replies]
        return {
            "connections": len(self.connections),
            "active_connections": len(self._live),
            "rejected_upgrades": len(self.rejected),
            "replies": len(replies),
            "replies_cut": sum(r.cut for r in replies),
            "audio_ms_sent": round(sum(r.audio_ms_sent for r in replies)),
            "input_audio_ms": round(sum(c.input_audio_ms for c in self.connections)),
            "barge_ins": sum(c.barge_ins for c in self.connections),
            "keepalives": sum(c.keepalives for c in self.connections),
            "failures": len(self.failures),
            "failure_samples": self.failures[:5],
        }

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self._port).start()

    async def close(self) -> None:
        for conn in list(self._live):
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDeepgramAgent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- upgrade ------------------------------------------------------------------------------------

    def _refuse(self, status: int, reason: str, *, failure: bool) -> web.Response:
        self.rejected.append({"status": status, "reason": reason})
        if failure:
            self.failures.append(f"upgrade refused ({status}): {reason}")
        return web.json_response(
            {"err_code": "INVALID_AUTH" if status == 401 else "UNAVAILABLE", "err_msg": reason}, status=status
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            return self._refuse(503, "refused on command", failure=False)
        if request.headers.get("Authorization") != f"Token {self.api_key}":
            return self._refuse(401, "Invalid credentials: send 'Authorization: Token <key>'", failure=True)
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        index = len(self.connections) + 1
        script = self._script(index) if callable(self._script) else self._script
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower() not in _SECRET_HEADERS}
        record = ConnectionRecord(index, request.path, headers, opened_t=time.monotonic())
        self.connections.append(record)
        conn = FakeAgentConnection(ws, request, record, script, self.failures.append)
        self._live.add(conn)
        try:
            await conn.run()
        finally:
            self._live.discard(conn)
        return ws
