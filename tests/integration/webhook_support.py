"""A webhook receiver for the tests: a real aiohttp server on loopback that verifies each request with
the README's recipe, can be down (503) for a while, and remembers what it accepted."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.helpers import free_port


# Copied from README.md "### Webhooks": the receiver's check, exactly as documented.
def verify_bridge_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """True when X-Bridge-Signature `header` signs the raw `body` and is at most `tolerance` s old."""
    fields = dict(part.strip().split("=", 1) for part in header.split(",") if "=" in part)
    timestamp, signature = fields.get("t", ""), fields.get("v1", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


@dataclass
class Hit:
    delivery_id: str
    body: dict[str, Any]
    raw: bytes
    signature: str
    status: int


@dataclass
class Receiver:
    secret: str
    down_for: int = 0  # answer 503 to this many requests first
    path: str = "/hooks"
    hits: list[Hit] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def accepted(self) -> list[Hit]:
        return [hit for hit in self.hits if hit.status == 200]

    def types(self, call_id: str) -> list[str]:
        return [hit.body["type"] for hit in self.accepted if hit.body["call_id"] == call_id]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        signature = request.headers.get("X-Bridge-Signature", "")
        status = 200
        if self.down_for > 0:
            self.down_for -= 1
            status = 503
        elif not verify_bridge_signature(self.secret, signature, raw):
            status = 401
        hit = Hit(request.headers.get("X-Bridge-Delivery", ""), json.loads(raw), raw, signature, status)
        self.hits.append(hit)
        return web.Response(status=status)

    async def start(self, port: int | None = None) -> None:
        app = web.Application()
        app.router.add_post(self.path, self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = port or free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
