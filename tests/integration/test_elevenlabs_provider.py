"""The ElevenLabs provider on its own against the strict fake: formats, hooks, local barge-in, errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from bridge.audio.formats import SLIN16, ULAW
from bridge.providers.base import (
    AudioOut,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
    ResponseAudioDone,
    ResponseDone,
    ToolSpec,
    TranscriptLine,
)
from bridge.providers.brief import AgentBrief
from bridge.providers.elevenlabs.client import ElevenLabsProvider, signed_url_endpoint, with_query
from bridge.settings_agents import ElevenLabsSettings
from tests.fakes.elevenlabs_agents import FakeElevenLabsServer, Script, Turn

KEY = "xi-test-key"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def fake_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[FakeElevenLabsServer] = []

    async def start(**kwargs: Any) -> FakeElevenLabsServer:
        server = FakeElevenLabsServer(api_key=KEY, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def provider(
    fake: FakeElevenLabsServer, http: aiohttp.ClientSession, key: str = KEY, **brief: Any
) -> ElevenLabsProvider:
    settings = ElevenLabsSettings(
        api_key=SecretStr(key), url=fake.url, model=fake.agent_id, connect_timeout_seconds=5
    )
    return ElevenLabsProvider(settings=settings, brief=AgentBrief(**brief), http=http)


async def collect(
    model: ElevenLabsProvider, until: Callable[[list[ProviderEvent]], bool], timeout: float = 10.0
) -> list[ProviderEvent]:
    events: list[ProviderEvent] = []

    async def run() -> None:
        async for event in model.events():
            events.append(event)
            if until(events):
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run(), timeout)
    return events


def test_urls() -> None:
    assert signed_url_endpoint("wss://api.elevenlabs.io/v1/convai/conversation") == (
        "https://api.elevenlabs.io/v1/convai/conversation/get-signed-url"
    )
    assert with_query("ws://h/p?x=1", agent_id="a b") == "ws://h/p?x=1&agent_id=a+b"


async def test_formats_come_from_the_agent_and_hooks_fire(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    fake = await fake_factory(
        script=Script(input_format="pcm_16000", output_format="ulaw_8000", greeting_ms=300)
    )
    model = provider(fake, http, greeting="Hi.")
    sent: list[float] = []
    model.on_uplink_sent = sent.append
    await model.connect()
    formats = model.negotiate(SLIN16)
    assert (formats.input, formats.output) == (SLIN16, ULAW)  # the agent's, whatever the leg
    await model.start(formats)
    await model.send_audio(bytes(640), received_at=123.0)
    assert sent == [123.0]
    events = await collect(model, lambda seen: any(isinstance(e, AudioOut) for e in seen))
    audio = next(e for e in events if isinstance(e, AudioOut))
    assert audio.received_at is not None
    await model.close()
    deadline = time.monotonic() + 5
    while fake.last.closed_t is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert fake.last.input_audio_ms == pytest.approx(20)
    fake.assert_clean()


async def test_no_greeting_wanted_mutes_the_agents_first_message(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=400, ping_interval_s=0.1))
    model = provider(fake, http, greeting="Hi.")
    await model.connect()
    await model.start(model.negotiate(ULAW), greet=False)
    # The greeting is sent at once; pings go on: after several, none of its audio came out.
    events = await collect(model, lambda _: len(fake.last.pongs) >= 5)
    assert not any(isinstance(e, AudioOut) for e in events)
    await model.close()
    fake.assert_clean()


async def test_keys_without_a_reply_go_as_a_contextual_update(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=0, turns=(Turn(),)))
    model = provider(fake, http)
    await model.connect()
    await model.start(model.negotiate(ULAW))
    await model.send_dtmf("DTMF: 1234", respond=False)
    deadline = time.monotonic() + 5
    while not fake.last.contextual_updates and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert fake.last.contextual_updates == ["DTMF: 1234"]
    assert fake.last.responses == []  # the agent was only informed
    await model.close()
    fake.assert_clean()


async def test_the_tools_the_agent_must_define_are_named(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=0))
    tools = (ToolSpec("end_call", "Hang up", {}), ToolSpec("lookup_order", "Find", {}))
    model = provider(fake, http, tools=tools)
    await model.connect()
    await model.close()
    assert "bridge_end_call" in capsys.readouterr().out


@pytest.mark.parametrize(("status", "code"), [(None, "provider_unavailable"), ("bad-key", "invalid_api_key")])
async def test_refusals_raise_with_a_code(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession, status: str | None, code: str
) -> None:
    fake = await fake_factory()
    if status is None:
        fake.refuse_connections = 1
    model = provider(fake, http, key="xi-wrong" if status else KEY)
    with pytest.raises(ProviderUnavailable) as refused:
        await model.connect()
    assert refused.value.code == code
    with pytest.raises(ProviderUnavailable):
        model.negotiate(ULAW)


async def test_a_drop_on_command_ends_events_with_a_fatal_error(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=0))
    model = provider(fake, http)
    await model.connect()
    await model.start(model.negotiate(ULAW))
    fake.drop()
    events = await collect(model, lambda _: False)  # runs until events() ends
    error = events[-1]
    assert isinstance(error, ProviderError)
    assert (error.code, error.fatal) == ("provider_disconnected", True)
    assert fake.last.closed_by == "drop"
    await model.close()


async def test_a_reply_ends_when_its_audio_stops(
    fake_factory: Callable[..., Any], http: aiohttp.ClientSession
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=300, ping_interval_s=5.0))
    model = provider(fake, http, greeting="Hi.")
    await model.connect()
    await model.start(model.negotiate(ULAW))
    # No caller turn and no other message: the reply still ends (the bridge knows the bot went quiet).
    events = await collect(model, lambda seen: any(isinstance(e, ResponseDone) for e in seen))
    assert [type(e) for e in events if not isinstance(e, AudioOut | TranscriptLine)] == [
        ResponseAudioDone,
        ResponseDone,
    ]
    await model.close()
    fake.assert_clean()
