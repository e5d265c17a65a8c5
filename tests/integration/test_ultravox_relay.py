"""Whole calls through the Ultravox provider: simulated Asterisk -> bridge -> strict fake Ultravox.

The fake validates the create-call body and every data message against Ultravox's schemas;
`assert_clean()` fails the test on anything the real service would refuse.
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
from tests.fakes.ultravox import FakeUltravoxServer, Script, ToolCall, Turn
from tests.helpers import ACME_KEY, raw_config, utterances
from tests.integration.relay_support import (
    call_options,
    fake_servers,
    final_record,
    order_lookup,
    speaking_call,
    wait_active,
)

StartBridge = Callable[..., Any]
FAKE_KEY = "uv-test-key"


def relay_settings(
    fake: FakeUltravoxServer, *, key: str = FAKE_KEY, provider: dict[str, Any] | None = None, **agent: Any
) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": "ultravox",
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
        **agent,
    }
    raw["providers"] = {
        "ultravox": {"api_key": key, "url": fake.url, "model": "fixie-ai/ultravox", **(provider or {})}
    }
    return build_settings(raw)


@pytest.fixture
async def fake_factory() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers(partial(FakeUltravoxServer, api_key=FAKE_KEY)) as start:
        yield start


def heard_ms(summary: CallSummary, before_t: float | None = None) -> float:
    frames = [f for f in summary.played if before_t is None or f.t < before_t]
    return sum(f.size for f in frames) / summary.sample_rate * 1000 / (1 if summary.format == "ulaw" else 2)


@pytest.mark.parametrize("fmt", ["ulaw", "slin16"])
async def test_a_conversation_in_the_negotiated_format(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any], fmt: str
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=800, turns=(Turn(reply_ms=600),)))
    services = await bridge_factory(settings=relay_settings(fake))
    rate = 8000 if fmt == "ulaw" else 16000
    speech = utterances(rate, [(1.5, 2.5)])
    summary = await run_simulated_call(
        call_options(services, format=fmt, audio=AudioSource(pcm=speech, sample_rate=rate), seconds=5.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    (call,) = fake.calls.values()
    medium = call.body["medium"]["serverWebSocket"]
    # slin16 passes through at 16 kHz; a µ-law leg goes to Ultravox as 8 kHz PCM.
    assert (medium["inputSampleRate"], medium["outputSampleRate"]) == (rate, rate)
    assert call.body["firstSpeakerSettings"] == {"agent": {"text": "Hello, Acme here."}}
    assert call.body["systemPrompt"].startswith("You are the receptionist.")
    assert call.body["recordingEnabled"] is False
    tools = {t["temporaryTool"]["modelToolName"] for t in call.body["selectedTools"]}
    assert "end_call" in tools
    assert all(t["temporaryTool"]["client"] == {} for t in call.body["selectedTools"])
    conn = fake.last
    # The caller's audio reached Ultravox whole: every 20 ms frame.
    assert conn.input_audio_ms == pytest.approx(summary.frames_sent * 20, abs=40)
    assert conn.utterances[:2] == ["greeting", "turn"]
    assert heard_ms(summary) >= 800 + 300
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"
    assert record.disconnected_by == "caller"
    assert [line.role for line in record.transcript][:3] == ["bot", "caller", "bot"]
    assert record.transcript[0].text == "Hello, Acme here."
    # Billed by the minute: the call's time with Ultravox, priced per_minute.
    assert 2.0 <= record.usage.model_seconds <= 10.0
    assert record.cost_usd is not None
    assert record.cost_usd > 0
    assert conn.closed_by == "hang_up"  # the bridge ended the Ultravox call when the caller hung up


async def test_barge_in_flushes_playout_and_marks_the_line_cut(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # A 3 s greeting sent in real time (speed 1), so the caller talks over it while it is generated.
    fake = await fake_factory(script=Script(greeting_ms=3000, turns=(Turn(reply_ms=400),), speed=1.0))
    services = await bridge_factory(settings=relay_settings(fake))
    speech = utterances(8000, [(1.2, 2.2)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    (barge_in,) = conn.barge_ins
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1
    flush_t = next(r.t for r in summary.records if r.kind == "command" and r.name == "FLUSH_MEDIA")
    # The caller heard about as much as the fake counted as heard when it cleared the buffer (the
    # bridge's playout started a little after the fake's first frame, so it heard a little less).
    assert heard_ms(summary, before_t=flush_t) <= barge_in.heard_ms + 60
    assert heard_ms(summary) < 2500  # the rest of the greeting was never played
    record = await final_record(services, summary.call_id)
    assert record.barge_ins == 1
    bot_lines = [line for line in record.transcript if line.role == "bot"]
    assert bot_lines[0].truncated
    assert bot_lines[0].text == barge_in.utterance  # what Ultravox says was heard
    assert bot_lines[0].text != "Hello, Acme here."


async def test_end_call_tool_hangs_up_after_the_goodbye_played(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    goodbye = Turn(
        reply_ms=1200,
        transcript="Goodbye!",
        tool_call=ToolCall("end_call", {"reason": "done"}),
        speak_first=True,
    )
    fake = await fake_factory(script=Script(greeting_ms=400, turns=(goodbye,)))
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
    record = await final_record(services, summary.call_id)
    assert record.disconnected_by == "bot"
    conn = fake.last
    (result,) = conn.of_type("client_tool_result")
    assert result["invocationId"] == conn.invocations[0]
    assert result["result"] == '{"ok": true}'
    assert conn.closed_by == "hang_up"  # the bridge ended the Ultravox call itself
    assert record.usage.model_seconds > 0


async def test_http_tool_round_trip(bridge_factory: StartBridge, fake_factory: Callable[..., Any]) -> None:
    async with order_lookup(required=True) as crm:
        script = Script(
            greeting_ms=300,
            turns=(Turn(reply_ms=500, tool_call=ToolCall("lookup_order", {"order": "A-17"})),),
        )
        fake = await fake_factory(script=script)
        services = await bridge_factory(settings=relay_settings(fake, tools=[crm.tool]))
        summary = await speaking_call(services, [(0.6, 1.4)], seconds=4.0)
    seen = crm.bodies
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert seen == [{"order": "A-17"}]
    (call,) = fake.calls.values()
    (declared,) = [
        t for t in call.body["selectedTools"] if t["temporaryTool"]["modelToolName"] == "lookup_order"
    ]
    assert declared["temporaryTool"]["dynamicParameters"] == [
        {
            "name": "order",
            "location": "PARAMETER_LOCATION_BODY",
            "schema": {"type": "string"},
            "required": True,
        }
    ]
    conn = fake.last
    assert [m["result"] for m in conn.of_type("client_tool_result")] == ['{"status": "shipped"}']
    assert conn.utterances[-1] == "turn"  # the agent spoke about the result


async def test_a_dropped_socket_resumes_as_a_new_call_continuing_the_old_one(
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
    calls = list(fake.calls.values())
    assert calls[1].prior_call_id == calls[0].call_id  # Ultravox carries the conversation over
    assert calls[1].body["firstSpeakerSettings"] == {"user": {}}  # no second greeting
    assert calls[1].body["systemPrompt"] == calls[0].body["systemPrompt"]
    assert second.caller_turns >= 1
    assert second.utterances == ["turn"]
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"
    assert record.disconnected_by == "caller"


async def test_a_socket_that_cannot_come_back_is_a_fatal_error(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=400, drop_after_s=0.8, refuse_calls=1000))
    services = await bridge_factory(
        settings=relay_settings(fake, provider={"reconnect_give_up_seconds": 1.0})
    )
    summary = await run_simulated_call(call_options(services, seconds=6.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    fake.assert_clean()
    assert 503 in fake.refusals  # it tried to resume
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by) == ("ended", "error")
    assert record.error_code == "provider_disconnected"


async def test_a_call_ultravox_ends_itself_is_ended_by_the_bot_not_resumed(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=400, end_after_s=1.0))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(call_options(services, seconds=6.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    fake.assert_clean()
    assert len(fake.calls) == 1  # a close frame is the end of the call, not a drop
    assert fake.last.closed_by == "ended"
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by) == ("ended", "bot")


async def test_a_bad_key_fails_the_call_with_its_code(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory()
    services = await bridge_factory(settings=relay_settings(fake, key="uv-wrong"))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    record = await final_record(services, summary.call_id)
    assert record.status == "failed"
    assert record.error_code == "invalid_api_key"
    assert fake.refusals == [401]
    fake.violations.clear()  # the refusal was the point of this test
    assert fake.connections == []


async def test_keys_and_say_reach_ultravox_as_data_messages(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_ms=400))
    services = await bridge_factory(settings=relay_settings(fake))
    options = call_options(services, seconds=4.0, dtmf=((1.0, "4"),))
    peer = asyncio.ensure_future(run_simulated_call(options))
    await wait_active(services, options.call_id)
    for _ in range(300):  # the key went in as the caller's text first
        if fake.connections and fake.last.of_type("user_text_message"):
            break
        await asyncio.sleep(0.01)
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{services.http_port}/api/calls/{options.call_id}/say"
        body = {"text": "Your order ships today."}
        async with http.post(url, json=body, headers={"X-API-Key": ACME_KEY}) as reply:
            assert reply.status == 200, await reply.text()
    summary = await peer
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    (keys,) = conn.of_type("user_text_message")
    assert "4" in keys["text"]
    assert keys["urgency"] == "soon"  # the agent's DTMF rules ask for an answer
    (said,) = conn.of_type("forced_agent_message")
    assert said == {"type": "forced_agent_message", "content": "Your order ships today.", "urgency": "soon"}
    assert "say" in conn.utterances
    record = await final_record(services, summary.call_id)
    assert "Your order ships today." in [line.text for line in record.transcript if line.role == "bot"]
