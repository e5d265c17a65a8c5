"""What the whole-call tests of every model provider share: placing a simulated call, waiting for its
record, reading it through the API, and starting fakes that are closed after the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import aiohttp
from aiohttp import web

from bridge.app import Services
from bridge.session.state import CallState
from bridge.simulate import AudioSource, CallSummary, SimulatedCallOptions, run_simulated_call
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, utterances


class FakeServer(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


Fake = TypeVar("Fake", bound=FakeServer)


@asynccontextmanager
async def fake_servers(make: Callable[..., Fake]) -> AsyncIterator[Callable[..., Awaitable[Fake]]]:
    """A factory of started fakes (`make(**kwargs)`), each closed when the block ends."""
    servers: list[Fake] = []

    async def start(**kwargs: Any) -> Fake:
        server = make(**kwargs)
        await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.close()


def call_options(services: Services, **overrides: Any) -> SimulatedCallOptions:
    """A simulated Asterisk call to Acme's number (µ-law unless `format` says otherwise)."""
    base: dict[str, Any] = {
        "url": f"http://127.0.0.1:{services.http_port}",
        "connector_key": CONNECTOR_KEY,
        "called": ACME_PHONE,
        "format": "ulaw",
    }
    base.update(overrides)
    return SimulatedCallOptions(**base)


async def final_record(services: Services, call_id: str) -> Any:
    """The call's record once the bridge has finished it (the peer may return first)."""
    session = services.manager.get(call_id)
    if session is not None:
        await asyncio.wait_for(session.ended.wait(), 10)
    async with asyncio.timeout(10):  # the store may be written a moment after the session ends
        while (record := await services.calls.record("acme", call_id)).status in ("pending", "active"):
            await asyncio.sleep(0.02)
    return record


async def api_record(services: Services, call_id: str) -> dict[str, Any]:
    """GET /api/calls/{id} once the call is over, as the company's application sees it."""
    await final_record(services, call_id)
    url = f"http://127.0.0.1:{services.http_port}/api/calls/{call_id}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"X-API-Key": ACME_KEY}) as reply,
    ):
        assert reply.status == 200
        body: dict[str, Any] = (await reply.json())["data"]["call"]
        return body


async def wait_active(services: Services, call_id: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            session = services.manager.get(call_id)
            if session is not None and session.state is CallState.ACTIVE:
                return
            await asyncio.sleep(0.01)


@dataclass
class OrderLookup:
    """A CRM endpoint that answers `{"status": "shipped"}` and records each request it gets, and the
    agent's `lookup_order` HTTP tool pointed at it."""

    tool: dict[str, Any]
    bodies: list[Any] = field(default_factory=list)
    auth: list[str | None] = field(default_factory=list)  # each request's Authorization header


@asynccontextmanager
async def order_lookup(
    *, headers: Mapping[str, str] | None = None, required: bool = False
) -> AsyncIterator[OrderLookup]:
    """The endpoint on a loopback port for the block's length, and the tool (sending `headers`; with
    `required`, its `order` parameter is declared required)."""
    parameters: dict[str, Any] = {"type": "object", "properties": {"order": {"type": "string"}}}
    if required:
        parameters["required"] = ["order"]
    crm = OrderLookup({"name": "lookup_order", "description": "Find an order", "parameters": parameters})

    async def lookup(request: web.Request) -> web.Response:
        crm.bodies.append(await request.json())
        crm.auth.append(request.headers.get("Authorization"))
        return web.json_response({"status": "shipped"})

    app = web.Application()
    app.router.add_post("/lookup", lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    crm.tool["url"] = f"http://127.0.0.1:{runner.addresses[0][1]}/lookup"
    if headers:
        crm.tool["headers"] = dict(headers)
    try:
        yield crm
    finally:
        await runner.cleanup()


async def speaking_call(
    services: Services, spans: Sequence[tuple[float, float]], seconds: float
) -> CallSummary:
    """A simulated 8 kHz caller speaking during `spans` (start, end seconds), on the line `seconds`."""
    speech = utterances(8000, list(spans))
    return await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=seconds)
    )
