"""Whole calls through the Gemini Live provider: simulated Asterisk -> bridge -> strict fake Gemini.

The fake validates every client message with google-genai's models (plus the service's own rules) and
fails the test through `assert_clean()` on anything the real service would refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import aiohttp
import pytest

from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, run_simulated_call
from tests.fakes.gemini_live import FakeGeminiLive, Script, ToolCall, Turn
from tests.helpers import ACME_KEY, raw_config, utterances
from tests.integration.relay_support import (
    api_record,
    call_options,
    fake_servers,
    final_record,
    order_lookup,
    speaking_call,
    wait_active,
)

StartBridge = Callable[..., Any]
FAKE_KEY = "gemini-test-key"
MODEL = "gemini-live-test"
PRICE = {"input_text": 0.5, "input_audio": 3.0, "output_text": 2.0, "output_audio": 12.0}


def relay_settings(
    fake: FakeGeminiLive, *, key: str = FAKE_KEY, give_up: float = 5.0, **agent: Any
) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": "gemini",
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
        **agent,
    }
    raw["providers"] = {
        "gemini": {
            "api_key": key,
            "url": fake.url,
            "model": MODEL,
            "reconnect_give_up_seconds": give_up,
            "prices": {MODEL: PRICE},
        }
    }
    return build_settings(raw)


@pytest.fixture
async def fake_factory() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers(partial(FakeGeminiLive, api_key=FAKE_KEY)) as start:
        yield start


def heard_ms(summary: CallSummary, before_t: float | None = None) -> float:
    frames = [f for f in summary.played if before_t is None or f.t < before_t]
    return sum(f.size for f in frames) / summary.sample_rate * 1000 / (1 if summary.format == "ulaw" else 2)


@pytest.mark.parametrize("fmt", ["ulaw", "slin16", "slin24"])
async def test_a_conversation_with_usage_and_cost(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any], fmt: str
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=800, turns=(Turn(reply_ms=600),)))
    services = await bridge_factory(settings=relay_settings(fake))
    rate = {"ulaw": 8000, "slin16": 16000, "slin24": 24000}[fmt]
    speech = utterances(rate, [(1.5, 2.5)])
    summary = await run_simulated_call(
        call_options(services, format=fmt, audio=AudioSource(pcm=speech, sample_rate=rate), seconds=5.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    setup = conn.setup
    assert setup["model"] == f"models/{MODEL}"
    assert (
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Kore"
    )
    assert "You are the receptionist." in setup["systemInstruction"]["parts"][0]["text"]
    assert conn.realtime_input_config["activity_handling"] == "START_OF_ACTIVITY_INTERRUPTS"
    # The leg's own rate, declared (8 kHz for a µ-law leg: decoded, not resampled).
    assert conn.input_rates == {rate}
    assert conn.input_audio_ms == pytest.approx(summary.frames_sent * 20, abs=60)
    kinds = [t.kind for t in conn.turns]
    assert kinds[:2] == ["greeting", "turn"]  # the bot spoke first, then answered the caller
    assert "Hello, Acme here." in conn.client_texts[0]
    assert heard_ms(summary) >= 800 + 300
    body = await api_record(services, summary.call_id)
    assert body["status"] == "ended"
    record = await final_record(services, summary.call_id)
    lines = [(line.role, line.text) for line in record.transcript]
    assert lines[:3] == [
        ("bot", "Hello, thanks for calling. How can I help?"),
        ("caller", "Hello, I have a question."),
        ("bot", "Sure, I can help you with that."),
    ]
    usage = body["usage"]
    assert usage["responses"] == 2
    assert usage["input_audio_tokens"] == 80
    assert usage["output_audio_tokens"] == 100
    expected = 2 * (300 * 0.5 + 40 * 3.0 + 50 * 12.0) / 1_000_000
    assert body["cost_usd"] == pytest.approx(expected, abs=1e-6)


async def test_barge_in_flushes_and_cuts_the_bot_line(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # A 3 s greeting generated in real time: the caller talks over it after ~1.2 s.
    fake = await fake_factory(script=Script(greeting_ms=3000, speed=1.0, turns=(Turn(reply_ms=400),)))
    services = await bridge_factory(settings=relay_settings(fake))
    speech = utterances(8000, [(1.2, 2.2)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    assert len(conn.interruptions) == 1
    assert conn.turns[0].status == "interrupted"
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1
    record = await final_record(services, summary.call_id)
    assert record.barge_ins == 1
    greeting = record.transcript[0]
    assert greeting.role == "bot"
    assert greeting.truncated
    # What was heard of the 9-word greeting: some of it, not all (no truncate exists in the protocol).
    assert 0 < len(greeting.text.split()) < 9


async def test_end_call_tool_hangs_up_after_the_goodbye(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    script = Script(
        greeting_ms=400,
        turns=(
            Turn(reply_ms=1000, transcript="Goodbye!", tool_call=ToolCall("end_call", {"reason": "done"})),
        ),
    )
    fake = await fake_factory(script=script)
    services = await bridge_factory(settings=relay_settings(fake))
    speech = utterances(8000, [(0.8, 1.6)])
    summary = await run_simulated_call(
        call_options(
            services,
            audio=AudioSource(pcm=speech, sample_rate=8000),
            seconds=10.0,
            wait_for_bridge_hangup=True,
        )
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert summary.hangup_by == "bridge"
    assert summary.frames_queued_at_hangup == 0, "the goodbye was clipped"
    decls = fake.last.setup["tools"][0]["functionDeclarations"]
    end_call = next(d for d in decls if d["name"] == "end_call")
    assert end_call["parametersJsonSchema"]["type"] == "object"  # JSON Schema, not Gemini's Schema
    (response,) = fake.last.tool_responses
    assert (response["id"], response["name"], response["response"]) == ("fc-1", "end_call", {"ok": True})
    # The goodbye was heard; what the model said after the result (the call ending) was not.
    assert heard_ms(summary) < 400 + 1000 + 300
    record = await final_record(services, summary.call_id)
    assert record.disconnected_by == "bot"


async def test_http_tool_round_trip(bridge_factory: StartBridge, fake_factory: Callable[..., Any]) -> None:
    async with order_lookup() as crm:
        script = Script(
            greeting_ms=300,
            turns=(Turn(reply_ms=200, tool_call=ToolCall("lookup_order", {"order": "A-17"})),),
        )
        fake = await fake_factory(script=script)
        services = await bridge_factory(settings=relay_settings(fake, tools=[crm.tool]))
        summary = await speaking_call(services, [(0.6, 1.4)], seconds=4.0)
    seen = crm.bodies
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert seen == [{"order": "A-17"}]
    (response,) = fake.last.tool_responses
    assert response["name"] == "lookup_order"
    assert response["response"] == {"status": "shipped"}
    assert fake.last.turns[-1].status == "completed"  # the model went on after the result
    # The continuation after the result was played: greeting + reply + continuation.
    assert heard_ms(summary) >= 300 + 200 + 300


async def test_dtmf_reaches_the_model_as_a_user_turn(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=300))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(
        call_options(
            services, audio=AudioSource(pcm=bytes(16000), sample_rate=8000), seconds=2.5, dtmf=[(0.8, "4")]
        )
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert fake.last.client_texts[1:] == ["DTMF: 4"]
    assert [t.kind for t in fake.last.turns] == ["greeting", "text"]


async def test_a_dropped_socket_resumes_the_session(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=400, turns=(Turn(reply_ms=500),), drop_after_s=1.0))
    services = await bridge_factory(settings=relay_settings(fake))
    speech = utterances(8000, [(0.4, 0.9), (2.5, 3.3)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=5.0)
    )
    assert summary.ok, summary.errors
    assert summary.hangup_by == "caller"  # the caller heard silence, never a hangup
    fake.assert_clean()
    first, second = fake.connections
    assert first.closed_by == "drop"
    # The new connection resumed the session with the latest handle the first one gave.
    assert second.resumed_from == first.handles_sent[-1]
    assert second.setup["sessionResumption"] == {"handle": first.handles_sent[-1]}
    assert any(t.kind == "turn" for t in second.turns)  # and the conversation went on
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"


async def test_go_away_rotates_to_a_resumed_connection_unnoticed(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(
        script=Script(greeting_ms=400, turns=(Turn(reply_ms=500),), go_away_after_s=1.0, go_away_close_s=5.0)
    )
    services = await bridge_factory(settings=relay_settings(fake))
    speech = utterances(8000, [(2.2, 3.0)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.5)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    first, second = fake.connections[:2]
    assert first.closed_by == "client"  # the bridge moved before the server's deadline
    assert second.resumed_from is not None
    assert any(t.kind == "turn" for t in second.turns)
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"


async def test_a_model_that_cannot_come_back_ends_the_call_with_an_error(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    script = Script(greeting_ms=300, drop_after_s=0.8, refuse_connections=tuple(range(2, 40)))
    fake = await fake_factory(script=script)
    services = await bridge_factory(settings=relay_settings(fake, give_up=1.0))
    summary = await run_simulated_call(call_options(services, seconds=8.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    fake.assert_clean()
    assert len(fake.connections) >= 2
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by) == ("ended", "error")
    assert record.error_code == "provider_disconnected"


async def test_a_bad_key_fails_the_call_with_its_code(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory()
    services = await bridge_factory(settings=relay_settings(fake, key="wrong-key"))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    assert fake.last.close_code == 1007
    record = await final_record(services, summary.call_id)
    assert record.status == "failed"
    assert record.error_code == "invalid_api_key"


async def test_say_interrupting_cuts_the_greeting_and_speaks_the_text(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # An 8 s greeting generated in real time: still going when the say comes.
    fake = await fake_factory(script=Script(greeting_ms=8000, speed=1.0))
    services = await bridge_factory(settings=relay_settings(fake))
    options = call_options(services, audio=AudioSource(pcm=bytes(16000 * 8), sample_rate=8000), seconds=4.0)
    peer = asyncio.ensure_future(run_simulated_call(options))
    await wait_active(services, options.call_id)
    await asyncio.sleep(0.8)
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{services.http_port}/api/calls/{options.call_id}/say"
        body = {"text": "Sorry, one moment.", "interrupt": True}
        async with http.post(url, json=body, headers={"X-API-Key": ACME_KEY}) as reply:
            assert reply.status == 200, await reply.text()
    summary = await peer
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    assert [(t.kind, t.status) for t in conn.turns] == [("greeting", "interrupted"), ("say", "completed")]
    assert "Sorry, one moment." in conn.client_texts[1]
    assert conn.interruptions == []  # cut by the client's content, not by the caller
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1
    record = await final_record(services, options.call_id)
    assert record.barge_ins == 0
    assert record.transcript[-1].text == "Sorry, one moment."
