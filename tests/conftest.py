from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from bridge.api.appkeys import DirectoryHolder
from bridge.api.factory import create_app
from bridge.app import Services, start_services
from bridge.app_planner import make_call_planner
from bridge.directory import Directory
from bridge.session.admission import Admission, AdmissionPolicy
from bridge.session.calls import CallService
from bridge.session.manager import SessionManager
from bridge.settings import Settings
from bridge.store import Store, open_store
from tests.helpers import make_settings
from tests.services_postgres import postgres_server, postgres_url, store_url  # noqa: F401
from tests.services_redis import redis_db, redis_server  # noqa: F401

ApiFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    """Tests that configure logging point it at their own streams; undo that afterwards."""
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers.clear()
    logging.getLogger("aiohttp.access").disabled = False


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_per_module() -> Iterator[None]:
    """Collect each module's garbage when it ends, then freeze what survives.

    A worker that has run a thousand tests holds millions of long-lived objects; a full collection
    then walks all of them, and one landing inside a test stalls its event loop for longer than
    Asterisk's 500 ms upgrade timeout the simulated peers keep (seen once on CI). Frozen objects
    are never walked again, so a collection costs what one module left behind. And a leaked
    socket's or coroutine's finalizer warns here, in the module that leaked it (pytest fails the
    module's last test), instead of in whichever later test the collector happened to run."""
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture
def settings() -> Settings:
    return make_settings()


@pytest.fixture
async def api_client_factory() -> AsyncIterator[ApiFactory]:
    """Start the real HTTP API on a loopback port; returns (client, manager)."""
    clients: list[TestClient[Any, Any]] = []
    stores: list[Store] = []
    http = aiohttp.ClientSession()

    async def start(
        settings: Settings | None = None, *, max_calls: int | None = None, pending_ttl: float | None = None
    ) -> tuple[TestClient[Any, Any], SessionManager]:
        settings = settings or make_settings()
        manager = SessionManager(
            max_calls=max_calls or settings.server.max_calls,
            pending_ttl_seconds=pending_ttl or settings.server.pending_ttl_seconds,
        )
        store = await open_store("sqlite://:memory:")
        stores.append(store)
        holder = DirectoryHolder(Directory.from_settings(settings))
        admission = Admission(
            manager,
            store,
            directory=lambda: holder.current,
            plan_call=make_call_planner(lambda: holder.current, settings, http),
            policy=AdmissionPolicy(
                allow_unauthenticated_media=settings.connector.allow_unauthenticated_media,
                webhookless_audiosocket_company=settings.audiosocket.webhookless_company,
            ),
        )
        calls = CallService(admission, store, None, dial_timeout_seconds=30)
        app = create_app(settings, admission, calls, holder)
        client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, manager

    yield start
    for client in clients:
        await client.close()
    for store in stores:
        await store.close()
    await http.close()


@pytest.fixture
async def bridge_factory() -> AsyncIterator[Callable[..., Any]]:
    """The whole daemon (HTTP API, media socket) on loopback ports, stopped after the test."""
    started: list[Services] = []

    async def start(
        *, audiosocket: dict[str, Any] | None = None, settings: Settings | None = None, **server: Any
    ) -> Services:
        services = await start_services(settings or make_settings(audiosocket=audiosocket, **server))
        started.append(services)
        return services

    yield start
    for services in started:
        await services.close()
