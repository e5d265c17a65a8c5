"""The Ultravox provider against the fake directly: latency hooks and time reported on a quiet call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import aiohttp
import pytest

from bridge.audio.formats import SLIN16
from bridge.providers.base import AudioOut, ModelFormats, ProviderEvent, ProviderUnavailable, Usage
from bridge.providers.brief import AgentBrief
from bridge.providers.factory import provider_for
from bridge.providers.ultravox.client import UltravoxProvider
from bridge.settings import build_settings
from bridge.settings_agents import UltravoxSettings
from tests.fakes.ultravox import FakeUltravoxServer, Script
from tests.helpers import raw_config

KEY = "uv-key"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def first(events: AsyncIterator[ProviderEvent], kind: type[ProviderEvent]) -> ProviderEvent:
    async with asyncio.timeout(10):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"no {kind.__name__}")


async def test_latency_hooks_and_audio_read_times(http: aiohttp.ClientSession) -> None:
    async with FakeUltravoxServer(api_key=KEY, script=Script(greeting_ms=200, speed=0)) as fake:
        settings = UltravoxSettings(api_key=KEY, url=fake.url)
        provider = UltravoxProvider(settings=settings, brief=AgentBrief(greeting="Hi"), http=http)
        sent: list[float] = []
        provider.on_uplink_sent = sent.append
        await provider.start(ModelFormats(SLIN16, SLIN16))
        events = cast(AsyncGenerator[ProviderEvent, None], provider.events())
        audio = await first(events, AudioOut)
        assert isinstance(audio, AudioOut)
        assert audio.received_at is not None
        assert audio.received_at <= asyncio.get_running_loop().time()
        assert len(audio.data) == 640  # 20 ms at 16 kHz, untouched
        await provider.send_audio(b"\x00" * 640, received_at=12.5)
        await provider.send_audio(b"\x00" * 640)  # an unknown read time is not reported
        assert sent == [12.5]
        await provider.close()
        await events.aclose()
        for _ in range(200):
            if fake.last.closed_t is not None:
                break
            await asyncio.sleep(0.01)
        assert fake.last.input_audio_bytes == 1280
        assert fake.last.closed_by == "hang_up"
        fake.assert_clean()


async def test_a_quiet_call_still_reports_its_time(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bridge.providers.ultravox.events.USAGE_EVERY_SECONDS", 0.3)
    async with FakeUltravoxServer(api_key=KEY, script=Script(speed=0)) as fake:
        settings = UltravoxSettings(api_key=KEY, url=fake.url)
        # No greeting: nothing is said, so only the heartbeat's pongs wake the reader.
        provider = UltravoxProvider(settings=settings, brief=AgentBrief(), http=http, heartbeat_seconds=0.3)
        await provider.start(ModelFormats(SLIN16, SLIN16))
        events = cast(AsyncGenerator[ProviderEvent, None], provider.events())
        usage = await first(events, Usage)
        assert isinstance(usage, Usage)
        assert usage.model_seconds >= 0.3
        await provider.close()
        await events.aclose()
        fake.assert_clean()


async def test_the_factory_builds_it_only_with_a_key(http: aiohttp.ClientSession) -> None:
    raw = raw_config()
    settings = build_settings(raw)
    agent = settings.companies[0].agent
    with pytest.raises(ProviderUnavailable) as refused:
        provider_for(agent, settings, name="ultravox", http=http)
    assert refused.value.code == "provider_not_configured"
    raw["providers"] = {"ultravox": {"api_key": KEY}}
    provider = provider_for(agent, build_settings(raw), name="ultravox", http=http)
    assert isinstance(provider, UltravoxProvider)
    assert provider.speaks_text
