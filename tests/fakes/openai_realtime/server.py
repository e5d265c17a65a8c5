"""FakeRealtimeServer: the HTTP upgrade (path, model, auth, beta header) and the connection registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .audio import AudioFactory, default_audio_factory
from .connection import FakeConnection, ServerOptions
from .script import ConnectionRecord, Script

Variant = Literal["openai", "azure", "xai"]
PATHS: dict[str, str] = {"openai": "/v1/realtime", "azure": "/openai/v1/realtime", "xai": "/v1/realtime"}
_SECRET_HEADERS = frozenset({"authorization", "api-key", "cookie", "openai-organization"})


@dataclass
class _Handshake:
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    model: str
    beta: bool


def _json_response(status: HTTPStatus, code: str, message: str, param: str | None = None) -> Response:
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "code": code, "param": param}}
    ).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


class FakeRealtimeServer:
    """A strict OpenAI Realtime (GA) server on loopback; see the package docstring for usage."""

    def __init__(
        self,
        *,
        variant: Variant = "openai",
        api_key: str = "sk-test-key",
        script: Script | Callable[[int], Script] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        full_append_validation: bool = True,
        validate_outgoing: bool = True,
        audio_factory: AudioFactory | None = None,
    ) -> None:
        if variant not in PATHS:
            raise ValueError(f"unknown variant {variant!r}")
        self.variant: Variant = variant
        self.api_key = api_key
        self.refuse_new = False  # set by a test: later connections get 503 (a service that is down)
        self._script = script if script is not None else Script()
        self.host = host
        self._port = port
        self.options = ServerOptions(
            variant=variant,
            full_append_validation=full_append_validation,
            validate_outgoing=validate_outgoing,
            audio_factory=audio_factory or default_audio_factory,
        )
        self.connections: list[ConnectionRecord] = []
        self.rejected: list[dict[str, Any]] = []  # refused upgrades: status, code, path
        self._handshakes: dict[ServerConnection, _Handshake] = {}
        self._live: set[FakeConnection] = set()
        self._server: Server | None = None

    # --- public API ----------------------------------------------------------------------------------

    @property
    def failures(self) -> list[str]:
        """Everything the client did wrong (and any invalid event the fake itself produced)."""
        return self.options.failures

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        sock = next(iter(self._server.sockets))
        return int(sock.getsockname()[1])

    @property
    def base_url(self) -> str:
        """What a client puts in front of `/realtime` (e.g. the SDK's websocket_base_url)."""
        return f"ws://{self.host}:{self.port}" + PATHS[self.variant].removesuffix("/realtime")

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}{PATHS[self.variant]}"

    def url_for(self, model: str = "gpt-realtime") -> str:
        return f"{self.url}?model={model}"

    def auth_headers(self, key: str | None = None) -> dict[str, str]:
        key = self.api_key if key is None else key
        return {"api-key": key} if self.variant == "azure" else {"Authorization": f"Bearer {key}"}

    @property
    def last(self) -> ConnectionRecord:
        return self.connections[-1]

    def assert_clean(self) -> None:
        if self.failures:
            listing = "\n  ".join(self.failures)
            raise AssertionError(f"fake realtime server saw {len(self.failures)} problem(s):\n  {listing}")

    def stats(self) -> dict[str, Any]:
        responses = [r for c in self.connections for r in c.responses]
        return {
            "connections": len(self.connections),
            "active_connections": len(self._live),
            "rejected_upgrades": len(self.rejected),
            "responses": len(responses),
            "responses_cancelled": sum(r.status == "cancelled" for r in responses),
            "audio_ms_sent": round(sum(r.audio_ms_sent for r in responses)),
            "input_audio_ms": round(sum(c.input_audio_ms for c in self.connections)),
            "speech_started": sum(len(c.speech_started_at) for c in self.connections),
            "truncates": sum(len(c.truncates) for c in self.connections),
            "failures": len(self.failures),
            "failure_samples": self.failures[:5],
        }

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            self.host,
            self._port,
            process_request=self._process_request,
            compression=None,  # cheaper, and a client must not rely on it
            max_size=16 * 1024 * 1024,  # appends may be up to 15 MiB
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeRealtimeServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- handshake -----------------------------------------------------------------------------------

    def _refuse(
        self, status: HTTPStatus, code: str, message: str, path: str, param: str | None = None
    ) -> Response:
        self.rejected.append({"status": status.value, "code": code, "path": path})
        self.failures.append(f"upgrade refused ({status.value} {code}): {message}")
        return _json_response(status, code, message, param)

    def _authorized(self, headers: Headers) -> bool:
        bearer = headers.get("Authorization")
        if bearer == f"Bearer {self.api_key}":
            return True  # Azure also takes a Bearer (Entra) token
        return self.variant == "azure" and headers.get("api-key") == self.api_key

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path != PATHS[self.variant]:
            return self._refuse(
                HTTPStatus.NOT_FOUND, "not_found", f"Unknown path {parts.path!r}.", parts.path
            )
        if self.refuse_new:
            msg = "The server is temporarily unavailable."
            return self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "server_error", msg, parts.path)
        if not self._authorized(request.headers):
            how = "an 'api-key' header" if self.variant == "azure" else "'Authorization: Bearer <key>'"
            msg = f"Incorrect API key provided. Send {how}."
            return self._refuse(HTTPStatus.UNAUTHORIZED, "invalid_api_key", msg, parts.path)
        query = dict(parse_qsl(parts.query))
        if not query.get("model"):
            msg = "Missing required parameter: 'model'."
            return self._refuse(
                HTTPStatus.BAD_REQUEST, "missing_required_parameter", msg, parts.path, "model"
            )
        beta = self.variant != "xai" and "realtime=v1" in request.headers.get("OpenAI-Beta", "")
        headers = {k.lower(): v for k, v in request.headers.raw_items() if k.lower() not in _SECRET_HEADERS}
        self._handshakes[connection] = _Handshake(parts.path, query, headers, query["model"], beta)
        return None

    async def _handler(self, ws: ServerConnection) -> None:
        hs = self._handshakes.pop(ws)
        index = len(self.connections) + 1
        script = self._script(index) if callable(self._script) else self._script
        record = ConnectionRecord(index, self.variant, hs.path, hs.query, hs.headers, hs.model)
        self.connections.append(record)
        conn = FakeConnection(ws, record, script, self.options, beta=hs.beta)
        self._live.add(conn)
        try:
            await conn.run()
        finally:
            self._live.discard(conn)
