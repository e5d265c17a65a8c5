"""Shared by the ARI controller tests: credentials, numbers, and a factory of started controllers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
from pydantic import SecretStr

from bridge.asterisk.ari import AriController
from bridge.session.control import ControllerHealth
from bridge.settings import AriSettings, OriginateSettings
from tests.fakes.ari_server import FakeAriServer

PASSWORD = "ari-secret-value"
CALLER = "+34987654321"
CALLEE = "+34911222333"
AUTH = {"Authorization": aiohttp.encode_basic_auth("bridge", PASSWORD)}
Factory = Callable[..., Awaitable[AriController]]


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


@contextlib.asynccontextmanager
async def controllers(fake: FakeAriServer) -> AsyncIterator[Factory]:
    """Start controllers against `fake` (AriSettings fields such as media_transport as keywords)."""
    started: list[AriController] = []

    async def start(
        *, password: str = PASSWORD, wait_ok: bool = True, ari: dict[str, Any] | None = None, **options: Any
    ) -> AriController:
        settings = AriSettings(
            url=fake.url + "/", username="bridge", password=SecretStr(password), app="bridge", **(ari or {})
        )
        originate = OriginateSettings(endpoint="PJSIP/{to}@trunk", timeout_seconds=20)
        options = {"action_timeout": 2.0, "reconnect_initial": 0.02, "reconnect_max": 0.2, **options}
        controller = AriController(settings, originate, "bridge-transfer", **options)
        started.append(controller)
        await controller.start()
        if wait_ok:
            await wait_until(lambda: controller.health is ControllerHealth.OK, "events socket up")
        return controller

    try:
        yield start
    finally:
        for controller in started:
            await controller.close()
