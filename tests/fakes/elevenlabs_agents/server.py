"""FakeElevenLabsServer: the signed-URL REST endpoint, the conversation upgrade, and the registry."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

from aiohttp import web

from .connection import FakeConversation
from .script import ConnectionRecord, Script
from .validation import OVERRIDE_PATHS

WS_PATH = "/v1/convai/conversation"
SIGNED_URL_PATH = "/v1/convai/conversation/get-signed-url"


def _error(status: int, code: str, message: str) -> web.Response:
    # The shape ElevenLabs' REST API answers errors with.
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)


class FakeElevenLabsServer:
    """A strict ElevenLabs Agents server on loopback.

    `private`: the agent needs a signed URL (from `GET /v1/convai/conversation/get-signed-url` with the
    right `xi-api-key`); otherwise `?agent_id=` alone joins it. `refuse_connections`: that many next
    attempts (signed URL or upgrade) are answered 503.
    """

    def __init__(
        self,
        *,
        api_key: str = "xi-test-key",
        agent_id: str = "agent_test",
        private: bool = True,
        script: Script | Callable[[int], Script] | None = None,
        allowed_overrides: frozenset[str] = frozenset(OVERRIDE_PATHS.values()),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key
        self.agent_id = agent_id
        self.private = private
        self._script = script if script is not None else Script()
        self.allowed_overrides = allowed_overrides
        self.host = host
        self._port = port
        self.refuse_connections = 0
        self.failures: list[str] = []
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[dict[str, Any]] = []
        self.signed_url_requests = 0
        self._signatures: set[str] = set()
        self._live: set[FakeConversation] = set()
        self._runner: web.AppRunner | None = None
        self._bound_port = 0

    # --- public API ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError("server not started")
        return self._bound_port

    @property
    def url(self) -> str:
        """The conversation WebSocket URL (the bridge's `providers.elevenlabs.url`)."""
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    @property
    def last(self) -> ConnectionRecord:
        return self.connections[-1]

    def drop(self) -> None:
        """Abort every live conversation's connection now (no close frame), as a network failure would."""
        for conversation in list(self._live):
            conversation.drop()

    def assert_clean(self) -> None:
        if self.failures:
            listing = "\n  ".join(self.failures)
            raise AssertionError(f"fake ElevenLabs server saw {len(self.failures)} problem(s):\n  {listing}")

    def stats(self) -> dict[str, Any]:
        responses = [r for c in self.connections for r in c.responses]
        return {
            "connections": len(self.connections),
            "active_connections": len(self._live),
            "rejected": len(self.rejected),
            "signed_urls": self.signed_url_requests,
            "responses": len(responses),
            "responses_interrupted": sum(r.interrupted for r in responses),
            "audio_ms_sent": round(sum(r.audio_ms_sent for r in responses)),
            "input_audio_ms": round(sum(c.input_audio_ms for c in self.connections)),
            "pongs": sum(len(c.pongs) for c in self.connections),
            "failures": len(self.failures),
            "failure_samples": self.failures[:5],
        }

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(SIGNED_URL_PATH, self._signed_url)
        app.router.add_get(WS_PATH, self._conversation)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._bound_port = int(self._runner.addresses[0][1])

    async def close(self) -> None:
        if self._runner is not None:
            for conversation in list(self._live):
                await conversation.ws.close(code=1001, message=b"server shutting down")
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeElevenLabsServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- HTTP ----------------------------------------------------------------------------------------

    def _refuse(self, status: int, code: str, message: str, path: str) -> web.Response:
        self.rejected.append({"status": status, "code": code, "path": path})
        return _error(status, code, message)

    def _refusing(self, path: str) -> web.Response | None:
        if self.refuse_connections > 0:
            self.refuse_connections -= 1
            return self._refuse(503, "service_unavailable", "The service is temporarily unavailable.", path)
        return None

    async def _signed_url(self, request: web.Request) -> web.Response:
        self.signed_url_requests += 1
        refused = self._refusing(request.path)
        if refused is not None:
            return refused
        if request.headers.get("xi-api-key") != self.api_key:
            return self._refuse(401, "invalid_api_key", "Invalid API key", request.path)
        if request.query.get("agent_id") != self.agent_id:
            return self._refuse(404, "agent_not_found", "Agent not found", request.path)
        signature = secrets.token_urlsafe(16)
        self._signatures.add(signature)
        url = f"{self.url}?agent_id={self.agent_id}&conversation_signature={signature}"
        return web.json_response({"signed_url": url})

    async def _conversation(self, request: web.Request) -> web.StreamResponse:
        refused = self._refusing(request.path)
        if refused is not None:
            return refused
        if request.query.get("agent_id") != self.agent_id:
            return self._refuse(404, "agent_not_found", "Agent not found", request.path)
        signature = request.query.get("conversation_signature")
        signed = signature is not None and signature in self._signatures
        if self.private and not signed:
            return self._refuse(403, "unauthorized", "This agent requires a signed URL.", request.path)
        if signature is not None:
            self._signatures.discard(signature)  # one conversation per signature
        ws = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024, autoping=True)
        await ws.prepare(request)
        index = len(self.connections) + 1
        script = self._script(index) if callable(self._script) else self._script
        query = {k: v for k, v in request.query.items() if k != "conversation_signature"}
        record = ConnectionRecord(index, self.agent_id, signed, query, time.monotonic())
        self.connections.append(record)
        conversation = FakeConversation(ws, request, record, script, self.allowed_overrides, self.failures)
        self._live.add(conversation)
        try:
            await conversation.run()
        finally:
            self._live.discard(conversation)
            if not ws.closed:
                await ws.close()
        return ws
