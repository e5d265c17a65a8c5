"""The fake Ultravox service on loopback: the REST create-call endpoint and each call's join socket.

    async with FakeUltravoxServer(api_key="uv-key", script=Script(...)) as fake:
        ... POST fake.url (X-API-Key) -> {"callId", "joinUrl"} -> open the joinUrl socket ...
    fake.assert_clean()

Refusals follow the real API where known: a wrong or missing key is 401 and a body the schema refuses
is 400 (Django REST framework's `{"detail": ...}` shape; the exact texts are the fake's own). A client
data message the protocol does not define closes the socket with 1007 (UNVERIFIED: the real service's
reaction is not documented) and is recorded as a violation, as is any refusal the bridge provoked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

from aiohttp import web

from .connection import CallConnection
from .script import CallRecord, ConnectionRecord, Script
from .validation import Invalid, check_start_call


class FakeUltravoxServer:
    def __init__(
        self,
        *,
        api_key: str = "uv-test-key",
        script: Script | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.script = script or Script()
        self.host, self.port = host, port
        self.calls: dict[str, CallRecord] = {}
        self.connections: list[ConnectionRecord] = []
        self.violations: list[str] = []
        self.refusals: list[int] = []  # HTTP statuses the REST endpoint answered with other than 201
        self.refuse_all = False  # every create-call is answered 503 (set at any time)
        self._ids = itertools.count(1)
        self._creates = 0
        self._dropped = False
        self._live: set[CallConnection] = set()
        self._runner: web.AppRunner | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/api/calls", self._create_call)
        app.router.add_get("/calls/{call_id}/join", self._join)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        for conn in list(self._live):
            await conn.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUltravoxServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """The create-call endpoint ([providers.ultravox] url)."""
        return f"http://{self.host}:{self.port}/api/calls"

    @property
    def last(self) -> ConnectionRecord:
        return self.connections[-1]

    def assert_clean(self) -> None:
        assert not self.violations, f"the client sent what Ultravox refuses: {self.violations}"

    def stats(self) -> dict[str, Any]:
        return {
            "calls": len(self.calls),
            "connections": len(self.connections),
            "input_audio_ms": round(sum(c.input_audio_ms for c in self.connections)),
            "barge_ins": sum(len(c.barge_ins) for c in self.connections),
            "failures": list(self.violations),
        }

    def drop_now(self) -> None:
        """Drop every live socket at once (no close frame)."""
        for conn in list(self._live):
            conn.drop()

    # ------------------------------------------------------------------ REST

    async def _create_call(self, request: web.Request) -> web.Response:
        if request.headers.get("X-API-Key") != self.api_key:
            return self._refuse(401, "Invalid API key.")
        self._creates += 1
        if self.refuse_all or 1 < self._creates <= 1 + self.script.refuse_calls:
            return self._refuse(503, "Service unavailable.", violation=False)
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._refuse(400, "JSON parse error.")
        try:
            check_start_call(body)
        except Invalid as exc:
            return self._refuse(400, str(exc))
        prior = request.query.get("priorCallId")
        unknown = set(request.query) - {"priorCallId", "enableGreetingPrompt"}
        if unknown:
            return self._refuse(400, f"unknown query parameters {sorted(unknown)}")
        if prior is not None and prior not in self.calls:
            return self._refuse(404, "Prior call not found.")
        call_id = f"call-{next(self._ids)}"
        self.calls[call_id] = CallRecord(call_id, body, prior)
        join = f"ws://{self.host}:{self.port}/calls/{call_id}/join"
        return web.json_response({"callId": call_id, "joinUrl": join, "created": time.time()}, status=201)

    def _refuse(self, status: int, detail: str, *, violation: bool = True) -> web.Response:
        self.refusals.append(status)
        if violation:
            self.violations.append(f"HTTP {status}: {detail}")
        return web.json_response({"detail": detail}, status=status)

    # ------------------------------------------------------------------ the call's socket

    async def _join(self, request: web.Request) -> web.StreamResponse:
        record = self.calls.get(request.match_info["call_id"])
        if record is None:
            self.violations.append("joined an unknown call")
            raise web.HTTPNotFound()
        if record.joined:
            self.violations.append(f"joined {record.call_id} twice")
            raise web.HTTPConflict()
        record.joined = True
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        medium = record.body["medium"]["serverWebSocket"]
        conn_record = ConnectionRecord(
            call_id=record.call_id,
            input_rate=medium["inputSampleRate"],
            output_rate=medium.get("outputSampleRate") or medium["inputSampleRate"],
            opened_t=time.monotonic(),
        )
        self.connections.append(conn_record)
        drop_after = None
        if self.script.drop_after_s is not None and not self._dropped:
            self._dropped = True
            drop_after = self.script.drop_after_s
        conn = CallConnection(
            ws,
            record,
            conn_record,
            self.script,
            self.violations,
            drop_after=drop_after,
        )
        conn.transport = request.transport
        self._live.add(conn)
        try:
            await conn.run()
        finally:
            self._live.discard(conn)
            conn_record.closed_t = time.monotonic()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        return ws
