"""What the whole-call tests of every model provider share: placing a simulated call, waiting for its
record, reading it through the API, and starting fakes that are closed after the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import aiohttp

from bridge.app import Services
from bridge.session.state import CallState
from bridge.simulate import SimulatedCallOptions
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY


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
