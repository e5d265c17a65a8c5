"""Failover: a model that refuses at call start, or is lost mid-call for good, hands the call to the agent's
next `fallback_providers` entry, which continues the conversation; the record names each model's part.

Both sides are strict fakes of the OpenAI protocol family (the primary as OpenAI, the fallback as xAI):
what is tested here is the runner's handover, which is the same for every provider.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import pytest

from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, run_simulated_call
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import raw_config, utterances
from tests.integration.relay_support import call_options, fake_servers, final_record
from tests.integration.test_openai_relay import FAKE_KEY

StartBridge = Callable[..., Any]


@pytest.fixture
async def fakes() -> AsyncIterator[Callable[..., Any]]:
    async with fake_servers(partial(FakeRealtimeServer, api_key=FAKE_KEY)) as start:
        yield start


def failover_settings(
    primary: FakeRealtimeServer, fallback: FakeRealtimeServer, *, primary_key: str = FAKE_KEY
) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": "openai",
        "fallback_providers": ["xai"],
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
    }
    raw["providers"] = {
        "openai": {
            "api_key": primary_key,
            "url": primary.url,
            "model": "gpt-realtime",
            "reconnect_give_up_seconds": 1.0,
        },
        "xai": {"api_key": FAKE_KEY, "url": fallback.url, "model": "grok-voice-latest"},
    }
    return build_settings(raw)


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_model_that_refuses_at_call_start_hands_the_call_to_the_fallback(
    bridge_factory: StartBridge, fakes: Callable[..., Any]
) -> None:
    primary = await fakes()
    fallback = await fakes(variant="xai", script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),)))
    services = await bridge_factory(settings=failover_settings(primary, fallback, primary_key="sk-revoked"))
    speech = utterances(8000, [(1.5, 2.2)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.0)
    )
    assert summary.ok, summary.errors
    assert summary.frames_received > 0  # the caller heard the fallback's greeting and reply
    fallback.assert_clean()
    assert [r["code"] for r in primary.rejected] == ["invalid_api_key"]
    [served] = fallback.connections
    assert [r.kind for r in served.responses][:2] == ["greeting", "turn"]  # a fresh call: it greets
    record = await final_record(services, summary.call_id)
    assert (record.status, record.provider, record.model) == ("ended", "xai", "grok-voice-latest")
    parts = [(s.provider, s.ended_because) for s in record.model_segments]
    assert parts == [("openai", "invalid_api_key"), ("xai", None)]
    assert record.model_segments[1].ended_at == record.ended_at
    shown = (await services.calls.record("acme", summary.call_id)).to_api()["models"]
    assert [m["provider"] for m in shown] == ["openai", "xai"]


async def test_a_model_lost_mid_call_is_replaced_and_the_next_one_continues_the_conversation(
    bridge_factory: StartBridge, fakes: Callable[..., Any]
) -> None:
    primary = await fakes(script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),), drop_after_s=1.5))
    fallback = await fakes(variant="xai", script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),)))
    services = await bridge_factory(settings=failover_settings(primary, fallback))
    speech = utterances(8000, [(0.4, 0.9), (4.5, 5.2)])

    async def refuse_reconnects() -> None:
        await wait_for(lambda: len(primary.connections) == 1, "the first model session")
        primary.refuse_new = True  # the service is down: reconnects fail until the bridge gives up

    refusing = asyncio.create_task(refuse_reconnects())
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=7.0)
    )
    await refusing
    assert summary.ok, summary.errors
    assert summary.hangup_by == "caller"  # the caller never heard a hangup
    fallback.assert_clean()
    assert primary.connections[0].closed_by == "drop"
    assert {r["code"] for r in primary.rejected} == {"server_error"}  # each reconnect was refused
    [served] = fallback.connections
    # It was told the conversation so far, did not greet again, and answered the caller's next turn.
    instructions = served.session["instructions"]
    assert "You are the receptionist." in instructions
    assert "conversation so far" in instructions
    assert Script().greeting_transcript in instructions
    kinds = [r.kind for r in served.responses]
    assert "greeting" not in kinds
    assert "turn" in kinds
    record = await final_record(services, summary.call_id)
    assert (record.status, record.provider, record.disconnected_by) == ("ended", "xai", "caller")
    parts = [(s.provider, s.ended_because) for s in record.model_segments]
    assert parts == [("openai", "provider_disconnected"), ("xai", None)]
    first, second = record.model_segments
    assert first.ended_at is not None
    assert first.ended_at <= second.started_at


async def test_with_no_fallback_left_the_call_fails_as_before(
    bridge_factory: StartBridge, fakes: Callable[..., Any]
) -> None:
    primary = await fakes()
    fallback = await fakes(variant="xai")
    fallback.refuse_new = True
    services = await bridge_factory(settings=failover_settings(primary, fallback, primary_key="sk-revoked"))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    record = await final_record(services, summary.call_id)
    assert (record.status, record.error_code) == ("failed", "provider_unavailable")  # the last one tried
    parts = [(s.provider, s.ended_because) for s in record.model_segments]
    assert parts == [("openai", "invalid_api_key"), ("xai", "provider_unavailable")]
