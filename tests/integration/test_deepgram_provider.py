"""DeepgramProvider against the strict fake, without a call around it: say, keys, KeepAlive, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.audio.formats import ULAW
from bridge.providers.base import AudioOut, ProviderError, ProviderEvent, ProviderUnavailable, SayFinished
from bridge.providers.brief import AgentBrief
from bridge.providers.deepgram.client import DeepgramProvider
from bridge.settings_agents import DeepgramSettings
from tests.fakes.deepgram_agent import FakeDeepgramAgent, Script

KEY = "dg-test-key"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Running:
    """A provider started on a ulaw leg, its events collected by a task (as the call's downlink would)."""

    def __init__(self, provider: DeepgramProvider) -> None:
        self.provider = provider
        self.events: list[ProviderEvent] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self, *, greet: bool = True) -> None:
        await self.provider.connect()
        await self.provider.start(self.provider.negotiate(ULAW), greet=greet)
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.provider.events():
            self.events.append(event)

    async def wait_for(self, check: Callable[[], bool], seconds: float = 10.0) -> None:
        async with asyncio.timeout(seconds):
            while not check():
                await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.provider.close()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


def make_provider(fake: FakeDeepgramAgent, http: aiohttp.ClientSession, **settings: Any) -> DeepgramProvider:
    section = DeepgramSettings(api_key=KEY, url=fake.url, **settings)
    brief = AgentBrief(instructions="You are the receptionist.", greeting="Hello, Acme here.")
    return DeepgramProvider(settings=section, brief=brief, http=http)


async def test_say_speaks_the_text_and_reports_when_done(http: aiohttp.ClientSession) -> None:
    async with FakeDeepgramAgent(api_key=KEY, script=Script(speed=0)) as fake:
        running = Running(make_provider(fake, http))
        await running.start(greet=False)
        assert running.provider.speaks_text
        say_id = await running.provider.say("Please hold the line.", interrupt=False)
        await running.wait_for(lambda: any(isinstance(e, SayFinished) for e in running.events))
        await running.stop()
        fake.assert_clean()
    assert "greeting" not in fake.last.settings["agent"]  # greet=False: the agent waits
    assert fake.last.injected_agent == [
        {"type": "InjectAgentMessage", "message": "Please hold the line.", "behavior": "queue"}
    ]
    assert SayFinished(say_id, status="completed") in running.events
    assert any(isinstance(e, AudioOut) for e in running.events)


async def test_keys_without_a_reply_go_into_the_prompt(http: aiohttp.ClientSession) -> None:
    async with FakeDeepgramAgent(api_key=KEY, script=Script(speed=0, greeting_ms=200)) as fake:
        running = Running(make_provider(fake, http))
        await running.start()
        await running.provider.send_dtmf("DTMF: 1234", respond=False)
        await running.provider.send_dtmf("DTMF: #", respond=True)
        await running.wait_for(lambda: bool(fake.last.injected_user and fake.last.prompt_updates))
        await running.stop()
        fake.assert_clean()
    assert fake.last.prompt_updates == ["The caller pressed keys on their phone: DTMF: 1234"]
    assert fake.last.injected_user == ["DTMF: #"]


async def test_a_quiet_uplink_sends_keepalive(http: aiohttp.ClientSession) -> None:
    # A one-way leg: no caller audio at all. The fake would end the session after 3 s of nothing.
    script = Script(speed=0, greeting_ms=200, client_timeout_s=3.0)
    async with FakeDeepgramAgent(api_key=KEY, script=script) as fake:
        running = Running(make_provider(fake, http, keepalive_seconds=0.3))
        await running.start()
        await running.wait_for(lambda: fake.last.keepalives >= 3)
        await running.stop()
        fake.assert_clean()
    assert not [e for e in running.events if isinstance(e, ProviderError)]


async def test_a_service_error_is_fatal_and_ends_the_events(http: aiohttp.ClientSession) -> None:
    # No KeepAlive before the service's idle limit: it sends Error CLIENT_MESSAGE_TIMEOUT and closes.
    script = Script(speed=0, greeting_ms=200, client_timeout_s=0.3)
    async with FakeDeepgramAgent(api_key=KEY, script=script) as fake:
        running = Running(make_provider(fake, http, keepalive_seconds=8.0))
        await running.start()
        assert running.task is not None
        await asyncio.wait_for(running.task, 10)  # events() ended by itself
        await running.stop()
    errors = [e for e in running.events if isinstance(e, ProviderError)]
    assert errors == [ProviderError("deepgram_client_message_timeout", "no message for 0.3 s", fatal=True)]


async def test_a_refused_connection_is_provider_unavailable(http: aiohttp.ClientSession) -> None:
    async with FakeDeepgramAgent(api_key=KEY) as fake:
        fake.refuse_connections = 1
        with pytest.raises(ProviderUnavailable) as info:
            await make_provider(fake, http).connect()
    assert info.value.code == "provider_unavailable"
