"""Whole calls through the Deepgram Voice Agent: simulated Asterisk -> bridge -> strict fake agent.

The fake validates every client message (documented shapes plus deepgram-sdk's AgentV1* models);
`assert_clean()` fails a test on anything the real service would refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest

from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, run_simulated_call
from tests.fakes.deepgram_agent import FakeDeepgramAgent, Script, ToolCall, Turn
from tests.helpers import raw_config, utterances
from tests.integration.relay_support import (
    api_record,
    call_options,
    fake_servers,
    final_record,
    order_lookup,
    speaking_call,
)

StartBridge = Callable[..., Any]
FAKE_KEY = "dg-test-key"


def agent_settings(fake: FakeDeepgramAgent, *, key: str = FAKE_KEY, **agent: Any) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": "deepgram",
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
        **agent,
    }
    raw["providers"] = {
        "deepgram": {
            "api_key": key,
            "url": fake.url,
            "model": "gpt-4o-mini",
            "reconnect_give_up_seconds": 3.0,
        }
    }
    return build_settings(raw)


@pytest.fixture
async def fake_factory() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers(partial(FakeDeepgramAgent, api_key=FAKE_KEY)) as start:
        yield start


def heard_ms(summary: CallSummary) -> float:
    width = 1 if summary.format in ("ulaw", "alaw") else 2
    return sum(f.size for f in summary.played) / summary.sample_rate * 1000 / width


@pytest.mark.parametrize(
    ("fmt", "encoding", "rate"), [("ulaw", "mulaw", 8000), ("slin16", "linear16", 16000)]
)
async def test_a_conversation_passes_the_leg_format_through(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any], fmt: str, encoding: str, rate: int
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=800, turns=(Turn(reply_ms=600),)))
    services = await bridge_factory(settings=agent_settings(fake))
    speech = utterances(rate, [(1.5, 2.5)])
    summary = await run_simulated_call(
        call_options(services, format=fmt, audio=AudioSource(pcm=speech, sample_rate=rate), seconds=5.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    audio = conn.settings["audio"]
    # Zero transcode: the leg's own encoding and rate both ways.
    assert audio["input"] == {"encoding": encoding, "sample_rate": rate}
    assert audio["output"] == {"encoding": encoding, "sample_rate": rate, "container": "none"}
    agent = conn.settings["agent"]
    assert agent["greeting"] == "Hello, Acme here."
    assert agent["think"]["provider"] == {"type": "open_ai", "model": "gpt-4o-mini"}
    assert agent["think"]["prompt"].startswith("You are the receptionist.")
    assert {f["name"] for f in agent["think"]["functions"]} >= {"end_call"}
    assert agent["speak"]["provider"]["model"] == "aura-2-thalia-en"  # "marin" is no Deepgram voice
    assert conn.types()[0] == "Settings"
    # Every caller frame reached the agent as binary audio.
    assert conn.input_audio_ms == pytest.approx(summary.frames_sent * 20, abs=40)
    assert [r.kind for r in conn.replies][:2] == ["greeting", "turn"]
    assert heard_ms(summary) >= 800 + 300  # the greeting and most of the answer were heard
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"
    assert record.disconnected_by == "caller"
    lines = [(line.role, line.text) for line in record.transcript]
    assert lines[:3] == [
        ("bot", "Hello, Acme here."),
        ("caller", "Hello, I have a question."),
        ("bot", "Sure, I can help you with that."),
    ]
    # Billed by time: the session's seconds, priced per minute, as the API shows them.
    body = await api_record(services, summary.call_id)
    assert body["usage"]["model_seconds"] > 1.0
    assert body["cost_usd"] == pytest.approx(body["usage"]["model_seconds"] / 60 * 0.08, rel=0.01)


async def test_barge_in_flushes_the_playout_and_marks_the_line_cut(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # A 3 s greeting sent at 4x real time; the caller talks over it after ~1.2 s of hearing it.
    fake = await fake_factory(script=Script(greeting_ms=3000, turns=(Turn(reply_ms=400),)))
    services = await bridge_factory(settings=agent_settings(fake))
    speech = utterances(8000, [(1.2, 2.2)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.5)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert fake.last.user_started_at  # the agent's VAD heard the caller: UserStartedSpeaking
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1  # the queued greeting was dropped at once
    assert heard_ms(summary) < 3000 + 400
    record = await final_record(services, summary.call_id)
    assert record.barge_ins == 1
    greeting = record.transcript[0]
    assert (greeting.role, greeting.text, greeting.truncated) == ("bot", "Hello, Acme here.", True)


async def test_end_call_tool_hangs_up_after_the_goodbye_played(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    goodbye = Turn(reply_ms=1500, transcript="Goodbye!", tool_call=ToolCall("end_call", {"reason": "done"}))
    fake = await fake_factory(script=Script(greeting_ms=400, turns=(goodbye,)))
    services = await bridge_factory(settings=agent_settings(fake))
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
    record = await final_record(services, summary.call_id)
    assert record.disconnected_by == "bot"
    (request,) = fake.last.function_requests
    (response,) = fake.last.function_responses
    assert (response["id"], response["name"], response["content"]) == (
        request["id"],
        "end_call",
        '{"ok": true}',
    )


async def test_http_tool_round_trip(bridge_factory: StartBridge, fake_factory: Callable[..., Any]) -> None:
    async with order_lookup() as crm:
        script = Script(
            greeting_ms=300,
            turns=(
                Turn(reply_ms=0, tool_call=ToolCall("lookup_order", {"order": "A-17"})),
                Turn(reply_ms=500),
            ),
        )
        fake = await fake_factory(script=script)
        services = await bridge_factory(settings=agent_settings(fake, tools=[crm.tool]))
        summary = await speaking_call(services, [(0.6, 1.4)], seconds=4.0)
    seen = crm.bodies
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert seen == [{"order": "A-17"}]
    conn = fake.last
    lookup_fn = next(f for f in conn.settings["agent"]["think"]["functions"] if f["name"] == "lookup_order")
    assert lookup_fn["parameters"]["properties"] == {"order": {"type": "string"}}
    assert [r["content"] for r in conn.function_responses] == ['{"status": "shipped"}']
    assert [r.kind for r in conn.replies] == ["greeting", "turn"]  # the agent spoke about the result


async def test_dtmf_reaches_the_agent_as_the_callers_text(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=300, turns=(Turn(reply_ms=300),)))
    services = await bridge_factory(settings=agent_settings(fake))
    summary = await run_simulated_call(call_options(services, seconds=2.5, dtmf=((0.8, "4"),)))
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert fake.last.injected_user == ["DTMF: 4"]


async def test_a_dropped_socket_reconnects_with_the_conversation_replayed(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=400, turns=(Turn(reply_ms=500),), drop_after_s=1.6))
    services = await bridge_factory(settings=agent_settings(fake))
    speech = utterances(8000, [(0.4, 0.9), (2.6, 3.4)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=5.5)
    )
    assert summary.ok, summary.errors
    assert summary.hangup_by == "caller"  # the caller heard a moment of silence, never a hangup
    fake.assert_clean()
    first, second = fake.connections
    assert first.closed_by == "drop"
    # The new session continues the conversation: the history so far, and no second greeting.
    assert "greeting" not in second.settings["agent"]
    history = second.settings["agent"]["context"]["messages"]
    assert {"type": "History", "role": "assistant", "content": "Hello, Acme here."} in history
    assert {"type": "History", "role": "user", "content": "Hello, I have a question."} in history
    assert second.settings["agent"]["think"]["prompt"] == first.settings["agent"]["think"]["prompt"]
    assert any(r.kind == "turn" for r in second.replies)  # and the agent answered on it
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"
    assert [line.role for line in record.transcript].count("bot") >= 3  # greeting, then a reply per session


async def test_an_agent_that_cannot_come_back_ends_the_call_as_an_error(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=300, drop_after_s=1.0))
    services = await bridge_factory(settings=agent_settings(fake))
    call = asyncio.create_task(
        run_simulated_call(call_options(services, seconds=8.0, wait_for_bridge_hangup=True))
    )
    async with asyncio.timeout(10):
        while not fake.connections:
            await asyncio.sleep(0.01)
    fake.refuse_connections = 1000  # the call is connected: every reconnect attempt is refused (HTTP 503)
    summary = await call
    assert summary.hangup_by == "bridge"
    fake.assert_clean()
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by) == ("ended", "error")
    assert record.error_code == "provider_disconnected"
    assert fake.rejected  # it did try again


async def test_a_bad_key_fails_the_call_with_its_code(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory()
    services = await bridge_factory(settings=agent_settings(fake, key="dg-wrong"))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    record = await final_record(services, summary.call_id)
    assert record.status == "failed"
    assert record.error_code == "invalid_api_key"
    assert fake.rejected == [
        {"status": 401, "reason": "Invalid credentials: send 'Authorization: Token <key>'"}
    ]
