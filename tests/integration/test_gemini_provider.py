"""The fake Gemini Live's socket rules, and GeminiProvider against it (say, goAway rotation, refusals)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.audio.formats import SLIN16
from bridge.providers.base import (
    AudioOut,
    ModelReconnected,
    ModelReconnecting,
    ProviderEvent,
    ProviderUnavailable,
    ResponseDone,
    SayFinished,
)
from bridge.providers.brief import AgentBrief
from bridge.providers.gemini.client import GeminiProvider
from bridge.settings_agents import GeminiSettings
from tests.fakes.gemini_live import FakeGeminiLive, Script

KEY = "gemini-test-key"
SETUP = {"setup": {"model": "models/gemini-live-test"}}


@pytest.fixture
async def fake() -> AsyncIterator[FakeGeminiLive]:
    async with FakeGeminiLive(api_key=KEY, script=Script(greeting_ms=300, text_reply_ms=200)) as server:
        yield server


async def open_ws(
    http: aiohttp.ClientSession, fake: FakeGeminiLive, key: str = KEY
) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(fake.url, headers={"x-goog-api-key": key})


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    while True:
        msg = await asyncio.wait_for(ws.receive(), 5)
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
            return ws.close_code, str(msg.extra or "")


async def test_the_first_message_must_be_setup(fake: FakeGeminiLive) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(http, fake)
        await ws.send_str(json.dumps({"realtimeInput": {"text": "hi"}}))
        code, reason = await closed_with(ws)
    assert code == 1007
    assert "setup" in reason
    assert fake.failures
    assert fake.last.closed_by == "violation"


async def test_a_bad_key_is_closed_1007(fake: FakeGeminiLive) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(http, fake, key="nope")
        code, reason = await closed_with(ws)
    assert (code, reason) == (1007, "API key not valid. Please pass a valid API key.")


async def test_a_malformed_message_mid_session_is_closed_1007(fake: FakeGeminiLive) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(http, fake)
        await ws.send_str(json.dumps(SETUP))
        assert "setupComplete" in (await ws.receive_json(timeout=5))
        await ws.send_str(
            json.dumps({"toolResponse": {"functionResponses": [{"name": "f", "response": {}}]}})
        )
        code, reason = await closed_with(ws)
    assert code == 1007
    assert "id" in reason
    assert len(fake.failures) == 1


async def test_resumption_accepts_a_handle_it_gave_and_refuses_others(fake: FakeGeminiLive) -> None:
    resume = {"setup": {"model": "models/gemini-live-test", "sessionResumption": {}}}
    async with aiohttp.ClientSession() as http:
        ws = await open_ws(http, fake)
        await ws.send_str(json.dumps(resume))
        assert "setupComplete" in (await ws.receive_json(timeout=5))
        update = (await ws.receive_json(timeout=5))["sessionResumptionUpdate"]
        assert update["resumable"] is True
        await ws.close()
        again = await open_ws(http, fake)
        resume["setup"]["sessionResumption"] = {"handle": update["newHandle"]}
        await again.send_str(json.dumps(resume))
        assert "setupComplete" in (await again.receive_json(timeout=5))
        await again.close()
        assert fake.last.resumed_from == update["newHandle"]
        fake.assert_clean()
        bogus = await open_ws(http, fake)
        resume["setup"]["sessionResumption"] = {"handle": "made-up"}
        await bogus.send_str(json.dumps(resume))
        code, _ = await closed_with(bogus)
    assert code == 1008


def provider(fake: FakeGeminiLive, http: aiohttp.ClientSession, **settings: Any) -> GeminiProvider:
    section = GeminiSettings(api_key=KEY, url=fake.url, model="gemini-live-test", **settings)
    brief = AgentBrief(instructions="Be brief.", greeting="Hello, Acme here.")
    return GeminiProvider(settings=section, brief=brief, http=http)


async def collect(events: AsyncIterator[ProviderEvent], until: type, count: int = 1) -> list[ProviderEvent]:
    seen: list[ProviderEvent] = []

    async def run() -> None:
        async for event in events:
            seen.append(event)
            if sum(isinstance(e, until) for e in seen) >= count:
                return

    await asyncio.wait_for(run(), 10)
    return seen


async def test_say_speaks_a_given_text_and_reports_it(fake: FakeGeminiLive) -> None:
    async with aiohttp.ClientSession() as http:
        model = provider(fake, http)
        await model.connect()
        await model.start(model.negotiate(SLIN16))
        events = model.events()
        greeting = await collect(events, ResponseDone)
        assert any(isinstance(e, AudioOut) for e in greeting)
        say_id = await model.say("Your code is 1234.", interrupt=False)
        said = await collect(events, SayFinished)
        await model.close()
    assert said[-1] == SayFinished(say_id, "completed")
    assert [t.kind for t in fake.last.turns] == ["greeting", "say"]
    assert "Your code is 1234." in fake.last.client_texts[-1]
    fake.assert_clean()


async def test_go_away_is_a_planned_rotation(fake: FakeGeminiLive) -> None:
    fake.script = Script(greeting_ms=200, go_away_after_s=0.5, go_away_close_s=5.0)
    async with aiohttp.ClientSession() as http:
        model = provider(fake, http)
        await model.connect()
        await model.start(model.negotiate(SLIN16))
        seen = await collect(model.events(), ModelReconnected)
        await model.close()
    assert ModelReconnecting(1) in seen
    assert seen[-1] == ModelReconnected(attempts=1, rotated=True)
    first, second = fake.connections
    assert second.resumed_from == first.handles_sent[-1]
    fake.assert_clean()


async def test_a_refused_connection_is_provider_unavailable(fake: FakeGeminiLive) -> None:
    fake.script = Script(refuse_connections=(1,))
    async with aiohttp.ClientSession() as http:
        with pytest.raises(ProviderUnavailable) as info:
            await provider(fake, http).connect()
    assert info.value.code == "provider_disconnected"
