"""Whole calls through the ElevenLabs Agents provider: simulated Asterisk -> bridge -> strict fake agent.

The fake checks every client message (the SDK's models plus the documented shapes) and fails the test
through `assert_clean()` on anything the real service would refuse, and on a ping left unanswered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest

from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, run_simulated_call
from tests.fakes.elevenlabs_agents import FakeElevenLabsServer, Script, ToolCall, Turn
from tests.fakes.openai_realtime import FakeRealtimeServer
from tests.fakes.openai_realtime import Script as OpenAIScript
from tests.fakes.openai_realtime import Turn as OpenAITurn
from tests.helpers import raw_config, utterances
from tests.integration.relay_support import (
    call_options,
    fake_servers,
    final_record,
    order_lookup,
    speaking_call,
)

StartBridge = Callable[..., Any]
FAKE_KEY = "xi-test-key"
OPENAI_KEY = "sk-test-key"
AGENT = "agent_test"
PER_MINUTE = 0.12


def relay_settings(fake: FakeElevenLabsServer, *, key: str = FAKE_KEY, **agent: Any) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": "elevenlabs",
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
        "language": "es",
        **agent,
    }
    raw["providers"] = {
        "elevenlabs": {
            "api_key": key,
            "url": fake.url,
            "model": AGENT,
            "prices": {AGENT: {"per_minute": PER_MINUTE}},
        }
    }
    return build_settings(raw)


@pytest.fixture
async def fake_factory() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers(partial(FakeElevenLabsServer, api_key=FAKE_KEY, agent_id=AGENT)) as start:
        yield start


def heard_ms(summary: CallSummary, after_t: float | None = None, before_t: float | None = None) -> float:
    frames = [
        f
        for f in summary.played
        if (after_t is None or f.t >= after_t) and (before_t is None or f.t < before_t)
    ]
    return sum(f.size for f in frames) / summary.sample_rate * 1000 / (1 if summary.format == "ulaw" else 2)


@pytest.mark.parametrize(
    ("leg", "agent_format"), [("ulaw", "ulaw_8000"), ("slin16", "pcm_16000"), ("ulaw", "pcm_16000")]
)
async def test_a_conversation_greeting_turn_transcript_and_cost(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any], leg: str, agent_format: str
) -> None:
    script = Script(
        input_format=agent_format, output_format=agent_format, greeting_ms=800, turns=(Turn(reply_ms=600),)
    )
    fake = await fake_factory(script=script)
    services = await bridge_factory(settings=relay_settings(fake))
    rate = 8000 if leg == "ulaw" else 16000
    speech = utterances(rate, [(1.5, 2.5)])
    summary = await run_simulated_call(
        call_options(services, format=leg, audio=AudioSource(pcm=speech, sample_rate=rate), seconds=5.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    assert conn.signed  # a key is set: the conversation was joined through a signed URL
    assert fake.signed_url_requests == 1
    initiation = conn.initiation
    assert initiation is not None
    agent = initiation["conversation_config_override"]["agent"]
    assert agent["first_message"] == "Hello, Acme here."
    assert agent["prompt"]["prompt"].startswith("You are the receptionist.")
    assert agent["language"] == "es"
    # The caller's audio reached the agent whole, in the agent's format (every 20 ms frame).
    assert conn.input_audio_ms == pytest.approx(summary.frames_sent * 20, abs=40)
    assert [r.kind for r in conn.responses][:2] == ["greeting", "turn"]
    assert heard_ms(summary) >= 800 + 300
    assert conn.pongs, "no ping was answered"
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"
    assert record.disconnected_by == "caller"
    lines = [(line.role, line.text) for line in record.transcript]
    assert lines[:3] == [
        ("bot", "Hello, Acme here."),
        ("caller", "I would like some help."),
        ("bot", "Sure, I can help with that."),
    ]
    # Billed by the minute: the time connected, priced from prices[agent id].
    assert record.usage.model_seconds > 1.0
    assert record.cost_usd == pytest.approx(record.usage.model_seconds / 60 * PER_MINUTE, rel=0.01)


async def test_barge_in_flushes_drops_stale_audio_and_keeps_what_was_heard(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # A 3 s greeting (sent 4x faster than real time) the caller talks over after 1.2 s.
    script = Script(greeting_ms=3000, turns=(Turn(reply_ms=400),))
    fake = await fake_factory(script=script)
    services = await bridge_factory(
        settings=relay_settings(fake, greeting="One two three four five six seven eight")
    )
    speech = utterances(8000, [(1.2, 2.2)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.5)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    assert conn.interruptions  # the fake cut the greeting...
    assert conn.stale_audio_ids  # ...and sent audio of it after the interruption
    assert conn.responses[0].interrupted
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1
    flush_t = next(r.t for r in summary.records if r.kind == "command" and r.name == "FLUSH_MEDIA")
    # The stale chunk (sent right after the interruption) was dropped: nothing played until the reply,
    # which comes only once the caller stopped (at 2.2 s) and the agent's VAD heard the silence.
    reply_t = min((f.t for f in summary.played if f.t > flush_t + 0.05), default=None)
    assert reply_t is None or reply_t > 2.2
    assert heard_ms(summary, after_t=flush_t + 0.05, before_t=2.2) == 0
    record = await final_record(services, summary.call_id)
    assert record.barge_ins >= 1
    bot_lines = [line for line in record.transcript if line.role == "bot"]
    assert bot_lines[0].truncated
    assert bot_lines[0].text != "One two three four five six seven eight"
    assert "One two three four five six seven eight".startswith(bot_lines[0].text)


async def test_end_call_client_tool_hangs_up(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    script = Script(
        greeting_ms=400,
        turns=(
            Turn(reply_ms=800, text="Goodbye!", tool_call=ToolCall("bridge_end_call", {"reason": "done"})),
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
    assert [r["tool_call_id"] for r in fake.last.tool_results] == ["call_1"]
    assert fake.last.tool_results[0]["is_error"] is False
    record = await final_record(services, summary.call_id)
    assert record.disconnected_by == "bot"
    assert ("bot", "Goodbye!") in [(line.role, line.text) for line in record.transcript]


async def test_http_tool_round_trip(bridge_factory: StartBridge, fake_factory: Callable[..., Any]) -> None:
    async with order_lookup() as crm:
        script = Script(
            greeting_ms=300,
            turns=(
                Turn(
                    reply_ms=300, text="Let me check.", tool_call=ToolCall("lookup_order", {"order": "A-17"})
                ),
                Turn(reply_ms=500, text="It has shipped."),
            ),
        )
        fake = await fake_factory(script=script)
        services = await bridge_factory(settings=relay_settings(fake, tools=[crm.tool]))
        summary = await speaking_call(services, [(0.6, 1.4)], seconds=4.0)
    seen = crm.bodies
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert seen == [{"order": "A-17"}]
    conn = fake.last
    assert [r["result"] for r in conn.tool_results] == ['{"status": "shipped"}']
    assert [r.kind for r in conn.responses][-1] == "after_tool"  # the agent spoke about the result


async def test_dtmf_reaches_the_agent_as_a_user_message(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(
        script=Script(greeting_ms=300, turns=(Turn(reply_ms=300, text="You pressed four."),))
    )
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(
        call_options(
            services, audio=AudioSource(pcm=bytes(16000), sample_rate=8000), seconds=2.5, dtmf=[(0.8, "4")]
        )
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert fake.last.user_messages == ["DTMF: 4"]
    assert [r.kind for r in fake.last.responses] == ["greeting", "text"]


async def test_a_dropped_socket_is_a_fatal_provider_error(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=300, drop_after_s=1.0))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(call_options(services, seconds=6.0, wait_for_bridge_hangup=True))
    fake.assert_clean()
    assert summary.hangup_by == "bridge"
    assert len(fake.connections) == 1  # no resume: a conversation cannot be rejoined on a new socket
    assert fake.last.closed_by == "drop"
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by) == ("ended", "error")
    assert record.error_code == "provider_disconnected"
    assert record.usage.model_seconds > 0.5  # the time until the drop is still billed


async def test_the_agent_ending_the_conversation_hangs_up_as_the_bot(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=300, end_after_s=1.0))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(call_options(services, seconds=6.0, wait_for_bridge_hangup=True))
    fake.assert_clean()
    assert summary.hangup_by == "bridge"
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by) == ("ended", "bot")


async def test_a_public_agent_is_joined_without_a_key(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(private=False, script=Script(greeting_ms=300))
    services = await bridge_factory(settings=relay_settings(fake, key=""))
    summary = await run_simulated_call(call_options(services, seconds=1.5))
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert fake.signed_url_requests == 0
    assert not fake.last.signed
    assert fake.last.query == {"agent_id": AGENT}
    assert heard_ms(summary) >= 300


async def test_a_bad_key_fails_the_call_with_its_code(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory()
    services = await bridge_factory(settings=relay_settings(fake, key="xi-wrong"))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    assert fake.connections == []
    record = await final_record(services, summary.call_id)
    assert record.status == "failed"
    assert record.error_code == "invalid_api_key"


async def test_an_override_the_agent_forbids_fails_the_call(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(allowed_overrides=frozenset({"first_message", "language"}))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    assert fake.last.closed_by == "violation"
    assert "agent.prompt.prompt" in fake.last.violations[0]
    record = await final_record(services, summary.call_id)
    assert record.status == "failed"
    assert record.error_code == "provider_rejected"


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def failover_settings(eleven: FakeElevenLabsServer, openai: FakeRealtimeServer, *, primary: str) -> Settings:
    settings = relay_settings(eleven)
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": primary,
        "fallback_providers": ["openai" if primary == "elevenlabs" else "elevenlabs"],
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
    }
    raw["providers"] = {
        "elevenlabs": settings.providers.elevenlabs.model_dump(mode="json") | {"api_key": FAKE_KEY},
        "openai": {
            "api_key": OPENAI_KEY,
            "url": openai.url,
            "model": "gpt-realtime",
            "reconnect_give_up_seconds": 1.0,
        },
    }
    return build_settings(raw)


async def test_a_dropped_conversation_is_taken_over_by_the_fallback(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    eleven = await fake_factory(script=Script(greeting_ms=400, drop_after_s=1.2))
    async with FakeRealtimeServer(
        api_key=OPENAI_KEY, script=OpenAIScript(greeting_reply_ms=400, turns=(OpenAITurn(reply_ms=500),))
    ) as openai:
        services = await bridge_factory(settings=failover_settings(eleven, openai, primary="elevenlabs"))
        speech = utterances(8000, [(3.0, 3.8)])
        summary = await run_simulated_call(
            call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=6.0)
        )
        assert summary.ok, summary.errors
        eleven.assert_clean()
        openai.assert_clean()
        assert summary.hangup_by == "caller"
        [served] = openai.connections
        instructions = served.session["instructions"]
        assert "conversation so far" in instructions
        assert "Hello, Acme here." in instructions  # the greeting ElevenLabs' agent said
        kinds = [r.kind for r in served.responses]
        assert "greeting" not in kinds
        assert "turn" in kinds
    record = await final_record(services, summary.call_id)
    parts = [(s.provider, s.ended_because) for s in record.model_segments]
    assert parts == [("elevenlabs", "provider_disconnected"), ("openai", None)]


async def test_elevenlabs_takes_over_a_lost_model_without_greeting(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    eleven = await fake_factory(script=Script(greeting_ms=400, turns=(Turn(reply_ms=500),)))
    script = OpenAIScript(greeting_reply_ms=400, turns=(OpenAITurn(reply_ms=500),), drop_after_s=1.0)
    async with FakeRealtimeServer(api_key=OPENAI_KEY, script=script) as openai:
        services = await bridge_factory(settings=failover_settings(eleven, openai, primary="openai"))

        async def refuse_reconnects() -> None:
            await wait_for(lambda: len(openai.connections) == 1, "the first model session")
            openai.refuse_new = True

        refusing = asyncio.create_task(refuse_reconnects())
        speech = utterances(8000, [(3.5, 4.3)])
        summary = await run_simulated_call(
            call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=6.5)
        )
        await refusing
    assert summary.ok, summary.errors
    eleven.assert_clean()
    [served] = eleven.connections
    assert served.initiation is not None
    agent = served.initiation["conversation_config_override"]["agent"]
    assert agent["first_message"] == ""  # it continues the conversation: no greeting
    assert "conversation so far" in agent["prompt"]["prompt"]
    assert [r.kind for r in served.responses] == ["turn"]
    record = await final_record(services, summary.call_id)
    parts = [(s.provider, s.ended_because) for s in record.model_segments]
    assert parts == [("openai", "provider_disconnected"), ("elevenlabs", None)]
