"""Whole calls through the OpenAI-protocol relay: simulated Asterisk -> bridge -> strict fake model.

The fake validates every client event with the openai package's models; `assert_clean()` fails
the test on anything the real service would reject.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.app import Services
from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, PeerRecord, SimulatedCallOptions, run_simulated_call
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, ToolCall, Turn
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, raw_config, utterances
from tests.integration.relay_support import order_lookup

StartBridge = Callable[..., Any]
FAKE_KEY = "sk-test-key"


def note_timing(name: str, ms: float) -> None:
    """Appends a measured bridge-side delay to $BRIDGE_TIMINGS (for the issue notes; off by default)."""
    path = os.environ.get("BRIDGE_TIMINGS")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({name: ms}) + "\n")


def relay_settings(
    fake: FakeRealtimeServer,
    *,
    provider: str = "openai",
    key: str = FAKE_KEY,
    uplink_batch_ms: int = 20,
    **agent: Any,
) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": provider,
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
        **agent,
    }
    section: dict[str, Any] = {
        "api_key": key,
        "url": fake.url,
        "model": "gpt-realtime",
        "uplink_batch_ms": uplink_batch_ms,
    }
    raw["providers"] = {provider: section}
    return build_settings(raw)


@pytest.fixture
async def fake_factory() -> AsyncIterator[Callable[..., Any]]:
    servers: list[FakeRealtimeServer] = []

    async def start(**kwargs: Any) -> FakeRealtimeServer:
        server = FakeRealtimeServer(api_key=FAKE_KEY, **kwargs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


class Clock:
    """Maps the simulated peer's call time onto the monotonic clock the fake stamps its events with."""

    def __init__(self) -> None:
        self.offset: float | None = None
        self.flushes: list[float] = []  # monotonic times FLUSH_MEDIA reached the peer

    def on_record(self, record: PeerRecord) -> None:
        now = time.monotonic()
        if self.offset is None:
            self.offset = now - record.t
        if record.kind == "command" and record.name == "FLUSH_MEDIA":
            self.flushes.append(now)

    def monotonic(self, call_time: float) -> float:
        assert self.offset is not None
        return self.offset + call_time


async def final_record(services: Services, call_id: str) -> Any:
    """The call's record once the bridge has finished it (the peer may return first)."""
    session = services.manager.get(call_id)
    if session is not None:
        await asyncio.wait_for(session.ended.wait(), 10)
    return await services.calls.record("acme", call_id)


def call_options(services: Services, clock: Clock | None = None, **overrides: Any) -> SimulatedCallOptions:
    base: dict[str, Any] = {
        "url": f"http://127.0.0.1:{services.http_port}",
        "connector_key": CONNECTOR_KEY,
        "called": ACME_PHONE,
        "format": "ulaw",
        "on_record": clock.on_record if clock else None,
    }
    base.update(overrides)
    return SimulatedCallOptions(**base)


def heard_ms(summary: CallSummary, before_t: float | None = None) -> float:
    frames = [f for f in summary.played if before_t is None or f.t < before_t]
    return sum(f.size for f in frames) / summary.sample_rate * 1000 / (1 if summary.format == "ulaw" else 2)


def record_first_frame(clock: Clock, fake: FakeRealtimeServer, summary: CallSummary) -> None:
    first_delta = fake.last.responses[0].first_delta_t
    if first_delta is not None and summary.first_audio_arrival_ms is not None:
        arrival = clock.monotonic(summary.first_audio_arrival_ms / 1000)
        note_timing("first_frame_ms", (arrival - first_delta) * 1000)


@pytest.mark.parametrize("fmt", ["ulaw", "slin16", "slin24"])
async def test_a_conversation_in_the_negotiated_format(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any], fmt: str
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=800, turns=(Turn(reply_ms=600),)))
    services = await bridge_factory(settings=relay_settings(fake))
    rate = {"ulaw": 8000, "slin16": 16000, "slin24": 24000}[fmt]
    clock = Clock()
    speech = utterances(rate, [(1.5, 2.5)])
    summary = await run_simulated_call(
        call_options(
            services, clock, format=fmt, audio=AudioSource(pcm=speech, sample_rate=rate), seconds=5.0
        )
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    expected = {"ulaw": {"type": "audio/pcmu"}, "slin16": {"type": "audio/pcm", "rate": 24000}}
    fmt_in = conn.session["audio"]["input"]["format"]
    assert fmt_in == expected.get(fmt, {"type": "audio/pcm", "rate": 24000})
    # The caller's audio reached the model whole: every 20 ms frame, none lost or duplicated.
    assert conn.input_audio_ms == pytest.approx(summary.frames_sent * 20, abs=40)
    kinds = [r.kind for r in conn.responses]
    assert kinds[0] == "greeting"  # the bot spoke first, before the caller said anything
    assert "turn" in kinds
    # The greeting and the answer were heard: at least the greeting plus most of the reply.
    assert heard_ms(summary) >= 800 + 300
    record_first_frame(clock, fake, summary)
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"
    assert record.disconnected_by == "caller"
    assert [line.role for line in record.transcript][:2] == ["bot", "caller"]
    assert record.usage.responses >= 2
    assert record.cost_usd is not None
    assert record.cost_usd > 0


async def test_batched_uplink_carries_every_frame_in_fewer_messages(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),)))
    services = await bridge_factory(settings=relay_settings(fake, uplink_batch_ms=60))
    speech = utterances(8000, [(0.8, 1.6)])
    summary = await run_simulated_call(
        call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=3.5)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    # Every frame reached the model (the last, partial batch when the call ended), three per append.
    assert conn.input_audio_ms == pytest.approx(summary.frames_sent * 20, abs=40)
    messages = sum(e.data["count"] for e in conn.events if e.type == "input_audio_buffer.append")
    assert messages == pytest.approx(summary.frames_sent / 3, abs=2)
    assert any(r.kind == "turn" for r in conn.responses)  # the model heard the turn end and answered
    record = await final_record(services, summary.call_id)
    assert [line.role for line in record.transcript][:2] == ["bot", "caller"]


async def test_barge_in_flushes_at_once_and_truncates_at_what_was_heard(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # A long greeting (3 s, generated 4x faster than real time) the caller talks over after ~1.2 s.
    fake = await fake_factory(script=Script(greeting_reply_ms=3000, turns=(Turn(reply_ms=400),)))
    services = await bridge_factory(settings=relay_settings(fake))
    clock = Clock()
    speech = utterances(8000, [(1.2, 2.2)])
    summary = await run_simulated_call(
        call_options(services, clock, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1
    (truncate,) = conn.truncates
    assert truncate.accepted
    assert truncate.item_id == conn.responses[0].item_ids[0]
    flush_t = next(r.t for r in summary.records if r.kind == "command" and r.name == "FLUSH_MEDIA")
    heard = heard_ms(summary, before_t=flush_t)
    assert abs(truncate.audio_end_ms - heard) <= 40, (truncate.audio_end_ms, heard)
    # Control overtakes audio: the flush left the bridge within one frame time of speech_started.
    flush_delay_ms = (clock.flushes[0] - conn.speech_started_at[0]) * 1000
    note_timing("flush_ms", flush_delay_ms)
    assert flush_delay_ms < 20
    session = await final_record(services, summary.call_id)
    assert session.barge_ins == 1
    bot_lines = [line for line in session.transcript if line.role == "bot"]
    assert bot_lines[0].truncated


async def test_end_call_tool_hangs_up_after_the_goodbye_played(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    script = Script(
        greeting_reply_ms=400,
        turns=(
            Turn(reply_ms=1500, transcript="Goodbye!", tool_call=ToolCall("end_call", {"reason": "done"})),
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
    names = [r.name for r in summary.records if r.kind == "command"]
    assert names[names.index("HANGUP") - 1] == "REPORT_QUEUE_DRAINED"
    record = await final_record(services, summary.call_id)
    assert record.disconnected_by == "bot"
    assert [o["output"] for o in fake.last.function_outputs] == ['{"ok": true}']


async def test_http_tool_round_trip(bridge_factory: StartBridge, fake_factory: Callable[..., Any]) -> None:
    async with order_lookup(headers={"Authorization": "Bearer crm-token"}) as crm:
        script = Script(
            greeting_reply_ms=300,
            turns=(Turn(tool_call=ToolCall("lookup_order", {"order": "A-17"})), Turn(reply_ms=500)),
        )
        fake = await fake_factory(script=script)
        services = await bridge_factory(settings=relay_settings(fake, tools=[crm.tool]))
        speech = utterances(8000, [(0.6, 1.4)])
        summary = await run_simulated_call(
            call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=4.0)
        )
    seen = [{"body": body, "auth": auth} for body, auth in zip(crm.bodies, crm.auth, strict=True)]
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert seen == [{"body": {"order": "A-17"}, "auth": "Bearer crm-token"}]
    conn = fake.last
    assert [o["output"] for o in conn.function_outputs] == ['{"status": "shipped"}']
    assert [r.kind for r in conn.responses][-1] == "turn"  # the model spoke about the result


async def test_a_dropped_model_socket_reconnects_and_the_conversation_goes_on(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    script = Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),), drop_after_s=1.0)
    fake = await fake_factory(script=script)
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
    assert second.opened_t - (first.closed_t or 0) < 0.5  # first retry within 250 ms (+ handshake)
    # The second session got the same configuration and the conversation so far, then answered.
    assert second.session["instructions"] == first.session["instructions"]
    assert any(item.get("type") == "message" for item in second.items_created)
    assert any(r.kind == "turn" for r in second.responses)
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"


async def test_a_bad_key_fails_the_call_with_its_code(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory()
    services = await bridge_factory(settings=relay_settings(fake, key="sk-wrong"))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    assert summary.hangup_by == "bridge"
    record = await final_record(services, summary.call_id)
    assert record.status == "failed"
    assert record.error_code == "invalid_api_key"
    assert summary.frames_received == 0  # the bridge said nothing further


async def test_a_quota_error_mid_session_ends_the_call_as_an_error(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    from tests.fakes.openai_realtime import FatalError

    fake = await fake_factory(script=Script(fatal_error=FatalError()))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(call_options(services, seconds=3.0, wait_for_bridge_hangup=True))
    record = await final_record(services, summary.call_id)
    # The call was active (a conversation) when the error came: ended by an error, not failed.
    assert (record.status, record.disconnected_by) == ("ended", "error")
    assert record.error_code == "insufficient_quota"


@pytest.mark.parametrize(
    ("variant", "provider", "fmt"), [("azure", "azure_openai", "ulaw"), ("xai", "xai", "slin16")]
)
async def test_azure_and_xai_variants(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any], variant: str, provider: str, fmt: str
) -> None:
    fake = await fake_factory(
        variant=variant, script=Script(greeting_reply_ms=500, turns=(Turn(reply_ms=500),))
    )
    services = await bridge_factory(settings=relay_settings(fake, provider=provider))
    rate = 8000 if fmt == "ulaw" else 16000
    speech = utterances(rate, [(1.0, 1.8)])
    summary = await run_simulated_call(
        call_options(services, format=fmt, audio=AudioSource(pcm=speech, sample_rate=rate), seconds=3.5)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    if variant == "xai":
        # slin16 passes through: xAI takes PCM at 16 kHz, so nothing is resampled.
        assert conn.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
        assert "voice" in conn.session
    else:
        assert conn.path == "/openai/v1/realtime"
        # Azure's key goes in `api-key` (the fake keeps secrets out of its records, and would also
        # accept a Bearer token, so check that none was sent).
        assert "authorization" not in {k.lower() for k in conn.headers}
    assert heard_ms(summary) >= 500
