"""Telephony end to end over loopback: simulated Asterisk -> bridge -> strict fake OpenAI (and a fake AMI for
outbound calls). The caller's keys reaching the model, say and cancel through the API, the guards ending
calls after their last line has played, and answering machines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
import structlog

from bridge.app import Services, start_services
from bridge.session.state import CallState
from bridge.settings import build_settings
from bridge.simulate import AudioSource, CallSummary, SimulatedCallOptions, run_simulated_call
from tests.fakes.ami_server import DialScript, FakeAmiServer, Outcome
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, raw_config
from tests.integration.test_openai_relay import (
    FAKE_KEY,
    call_options,
    fake_factory,
    final_record,
    relay_settings,
)

__all__ = ["fake_factory"]  # the fixture, shared with the relay tests

StartBridge = Callable[..., Any]
SILENCE = AudioSource(pcm=b"\x00\x00" * 8000 * 20, sample_rate=8000)  # a quiet caller, 20 s of it
CALLEE = "+15551234567"


async def api(services: Services, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{services.http_port}{path}"
        async with http.request(method, url, json=body, headers={"X-API-Key": ACME_KEY}) as reply:
            return reply.status, await reply.json()


async def wait_active(services: Services, call_id: str) -> None:
    for _ in range(500):
        session = services.manager.get(call_id)
        if session is not None and session.state is CallState.ACTIVE:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{call_id} never became active")


def user_texts(fake: FakeRealtimeServer) -> list[str]:
    return [
        part["text"]
        for item in fake.last.items_created
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item["content"]
    ]


def client_events(fake: FakeRealtimeServer, kind: str) -> list[Any]:
    return [event for event in fake.last.events if event.type == kind]


def instructions(fake: FakeRealtimeServer) -> list[str]:
    """The instructions of every response.create the bridge sent, in order ("" for a plain one)."""
    return [
        (e.data.get("response") or {}).get("instructions", "") for e in client_events(fake, "response.create")
    ]


def commands(summary: CallSummary) -> list[str]:
    return [r.name for r in summary.records if r.kind == "command"]


def hung_up_drained(summary: CallSummary) -> bool:
    """The bridge hung up only once everything it queued had played (REPORT_QUEUE_DRAINED first)."""
    names = commands(summary)
    return (
        summary.hangup_by == "bridge"
        and summary.frames_queued_at_hangup == 0
        and names[names.index("HANGUP") - 1] == "REPORT_QUEUE_DRAINED"
    )


def played_between(summary: CallSummary, start: float, end: float) -> float:
    """Milliseconds of bridge audio the caller heard between two call times."""
    return sum(20 for frame in summary.played if start <= frame.t < end)


def hangup_time(summary: CallSummary) -> float:
    return next(r.t for r in summary.records if r.kind == "command" and r.name == "HANGUP")


# -- the caller's keys --------------------------------------------------------------------------------


async def test_keys_reach_the_model_as_user_text_with_a_response(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=300, turns=(Turn(reply_ms=300),)))
    services = await bridge_factory(settings=relay_settings(fake))
    summary = await run_simulated_call(
        call_options(services, audio=SILENCE, seconds=3.0, dtmf=((1.0, "4"), (2.0, "#")))
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert user_texts(fake) == ["DTMF: 4", "DTMF: #"]
    # Each key item is followed by a response.create: the model answers it (respond = true).
    kinds = [e.type for e in fake.last.events if e.type in ("conversation.item.create", "response.create")]
    assert kinds[-4:] == ["conversation.item.create", "response.create"] * 2
    assert [r.kind for r in fake.last.responses].count("turn") == 2
    record = await final_record(services, summary.call_id)
    assert record.dtmf == "4#"
    assert [line.text for line in record.transcript if line.role == "caller"] == ["[DTMF 4]", "[DTMF #]"]


async def test_collected_sensitive_keys_reach_the_model_whole_and_nothing_else_shows_them(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=300))
    rules = {"mode": "collect", "sensitive": True, "respond": False}
    services = await bridge_factory(settings=relay_settings(fake, dtmf_rules=rules))
    presses = tuple((0.8 + 0.2 * n, key) for n, key in enumerate("4921#"))
    with structlog.testing.capture_logs() as logs:
        summary = await run_simulated_call(call_options(services, audio=SILENCE, seconds=2.5, dtmf=presses))
        record = await final_record(services, summary.call_id)
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert user_texts(fake) == ["DTMF: 4921"]
    assert instructions(fake) == [instructions(fake)[0]]  # only the greeting: respond = false
    assert record.dtmf == "*****"
    assert [line.text for line in record.transcript if line.role == "caller"] == ["[DTMF ****]"]
    status, body = await api(services, "GET", f"/api/calls/{summary.call_id}/transcript")
    assert status == 200
    assert "4921" not in str(body)
    keys_logged = [entry for entry in logs if "dtmf" in entry["event"]]
    assert len(keys_logged) == 6  # five keys and the input
    assert "4921" not in repr(logs)
    assert not any(entry.get("digit", "*") != "*" for entry in keys_logged)


async def test_a_digit_map_sends_the_meaning(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=300, turns=(Turn(reply_ms=300),)))
    rules = {"mode": "map", "map": {"1": "sales", "2": "support"}}
    services = await bridge_factory(settings=relay_settings(fake, dtmf_rules=rules))
    summary = await run_simulated_call(call_options(services, audio=SILENCE, seconds=2.0, dtmf=((1.0, "2"),)))
    assert summary.ok, summary.errors
    fake.assert_clean()
    assert user_texts(fake) == ["support"]
    record = await final_record(services, summary.call_id)
    assert [line.text for line in record.transcript if line.role == "caller"] == ["[DTMF 2: support]"]


# -- say and cancel -----------------------------------------------------------------------------------


async def test_say_interrupting_cuts_the_bot_and_speaks_at_once(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # A 12 s greeting (generated 4x faster than real time): still being generated when the say comes.
    fake = await fake_factory(script=Script(greeting_reply_ms=12_000, greeting_transcript="Welcome " * 20))
    services = await bridge_factory(settings=relay_settings(fake))
    options = call_options(services, audio=SILENCE, seconds=4.0)
    peer = asyncio.ensure_future(run_simulated_call(options))
    await wait_active(services, options.call_id)
    await asyncio.sleep(1.0)
    status, body = await api(
        services,
        "POST",
        f"/api/calls/{options.call_id}/say",
        {"text": "Sorry, one moment.", "interrupt": True},
    )
    assert status == 200, body
    assert body["data"] == {"call_id": options.call_id, "interrupt": True, "queued": True}
    summary = await peer
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    assert summary.commands.get("FLUSH_MEDIA", 0) == 1  # what the caller heard of the greeting stopped
    assert [t.accepted for t in conn.truncates] == [True]
    assert conn.responses[0].status == "cancelled"  # the greeting, cut mid-generation
    assert "Sorry, one moment." in instructions(fake)[1]
    kinds = [e.type for e in conn.events if e.type in ("response.cancel", "response.create")]
    assert kinds == ["response.create", "response.cancel", "response.create"]  # greeting, cut, say
    assert len(conn.responses) == 2  # the say's response ran right after
    record = await final_record(services, options.call_id)
    assert record.barge_ins == 0  # the caller did not barge in


async def test_say_queued_waits_for_the_bot_to_finish(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    # An 8 s greeting, generated in 2 s: the say comes while the model is still on it.
    fake = await fake_factory(script=Script(greeting_reply_ms=8000))
    services = await bridge_factory(settings=relay_settings(fake))
    options = call_options(services, audio=SILENCE, seconds=6.0)
    peer = asyncio.ensure_future(run_simulated_call(options))
    await wait_active(services, options.call_id)
    asked_at = time.monotonic()
    status, body = await api(
        services, "POST", f"/api/calls/{options.call_id}/say", {"text": "Your order ships today."}
    )
    assert status == 200, body
    summary = await peer
    assert summary.ok, summary.errors
    fake.assert_clean()
    conn = fake.last
    greeting, said = conn.responses[:2]
    (say_create,) = [e for e in client_events(fake, "response.create") if "ships today" in str(e.data)]
    assert greeting.status == "completed"  # never cut
    assert greeting.done_t is not None
    assert asked_at < greeting.done_t <= say_create.t  # asked for during the greeting, sent after it
    assert said.status == "completed"
    assert summary.commands.get("FLUSH_MEDIA", 0) == 0


async def test_say_on_a_model_that_cannot_speak_text_is_refused(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()  # acme's agent: the echo provider
    options = SimulatedCallOptions(
        url=f"http://127.0.0.1:{services.http_port}",
        connector_key=CONNECTOR_KEY,
        called=ACME_PHONE,
        format="ulaw",
        audio=SILENCE,
        seconds=3.0,
    )
    peer = asyncio.ensure_future(run_simulated_call(options))
    await wait_active(services, options.call_id)
    status, body = await api(services, "POST", f"/api/calls/{options.call_id}/say", {"text": "Hello"})
    assert (status, body["code"]) == (409, "say_not_supported")
    status, body = await api(services, "POST", f"/api/calls/{options.call_id}/say", {"text": "   "})
    assert (status, body["code"]) == (400, "validation_error")
    await peer


async def test_cancel_hangs_up_at_once_without_a_goodbye(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=4000))
    services = await bridge_factory(settings=relay_settings(fake))
    options = call_options(services, audio=SILENCE, seconds=10.0, wait_for_bridge_hangup=True)
    peer = asyncio.ensure_future(run_simulated_call(options))
    await wait_active(services, options.call_id)
    await asyncio.sleep(0.5)
    status, body = await api(services, "POST", f"/api/calls/{options.call_id}/cancel")
    assert status == 200, body
    assert body["data"]["error_code"] == "cancelled"
    summary = await peer
    assert summary.hangup_by == "bridge"
    names = commands(summary)
    assert names.index("FLUSH_MEDIA") < names.index("HANGUP")  # no drain: the greeting was cut off
    assert played_between(summary, 0.0, hangup_time(summary)) < 2000  # of its 4 s
    record = await final_record(services, options.call_id)
    assert (record.status, record.disconnected_by, record.error_code) == ("failed", "api", "cancelled")
    status, body = await api(services, "POST", f"/api/calls/{options.call_id}/cancel")
    assert (status, body["code"]) == (409, "call_finished")


# -- guards ---------------------------------------------------------------------------------------------


async def test_max_call_seconds_plays_the_closing_line_then_hangs_up(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=400, greeting_transcript="Hello."))
    agent: dict[str, Any] = {
        "max_call_seconds": 2,
        "closing_message": "Time is up at {{call.company}}. Goodbye.",
    }
    services = await bridge_factory(settings=relay_settings(fake, **agent))
    summary = await run_simulated_call(
        call_options(services, audio=SILENCE, seconds=15.0, wait_for_bridge_hangup=True)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    _greeting, closing = instructions(fake)
    assert "Time is up at Acme Ltd. Goodbye." in closing  # a call fact filled in (an unknown one is a 400)
    assert hung_up_drained(summary)
    hangup = hangup_time(summary)
    assert played_between(summary, 1.5, hangup) >= 300  # the closing line was heard before the hang-up
    record = await final_record(services, summary.call_id)
    assert (record.status, record.disconnected_by, record.error_code) == (
        "ended",
        "timeout",
        "max_call_seconds",
    )
    assert record.ended_by_guard == "max_call_seconds"


async def test_a_silent_caller_is_prompted_then_the_call_ends_after_the_closing_line(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=400))
    agent: dict[str, Any] = {
        "caller_silence_seconds": 2,
        "silence_prompt": "Are you still there?",
        "closing_message": "Bye.",
    }
    services = await bridge_factory(settings=relay_settings(fake, **agent))
    summary = await run_simulated_call(
        call_options(services, audio=SILENCE, seconds=20.0, wait_for_bridge_hangup=True)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    _, prompt, closing = instructions(fake)
    assert prompt.endswith("Are you still there?")
    assert closing.endswith("Bye.")
    assert hung_up_drained(summary)
    prompt_done, closing_created = (
        fake.last.responses[1].done_t,
        next(
            e.t
            for e in client_events(fake, "response.create")
            if e.data["response"]["instructions"] == closing
        ),
    )
    assert prompt_done is not None
    assert closing_created - prompt_done >= 1.5  # a second silence of its own, after the prompt
    record = await final_record(services, summary.call_id)
    assert (record.disconnected_by, record.error_code, record.ended_by_guard) == (
        "timeout",
        "caller_silence",
        "caller_silence",
    )


# -- answering machines on outbound calls ----------------------------------------------------------------


@pytest.fixture
async def outbound(
    fake_factory: Callable[..., Any],
) -> AsyncIterator[tuple[Services, FakeAmiServer, FakeRealtimeServer]]:
    fake = await fake_factory(script=Script(greeting_reply_ms=500, turns=(Turn(reply_ms=400),)))
    async with FakeAmiServer({"bridge": "ami-s3cret"}) as ami:
        raw = raw_config()
        raw["companies"][0]["agent"] = {
            "provider": "openai",
            "greeting": "Hello, this is Acme.",
            "voicemail_message": "Hello {{name}}, this is Acme about your delivery. Please call us back.",
        }
        raw["providers"] = {"openai": {"api_key": FAKE_KEY, "url": fake.url, "model": "gpt-realtime"}}
        raw["asterisk"] = {
            "control": "ami",
            "ami": {"host": "127.0.0.1", "port": ami.port, "username": "bridge", "secret": "ami-s3cret"},
            "originate": {"timeout_seconds": 5},
        }
        services = await start_services(build_settings(raw))
        try:
            for _ in range(200):
                if (
                    services.calls.controller_health is not None
                    and services.calls.controller_health.value == "ok"
                ):
                    break
                await asyncio.sleep(0.02)
            yield services, ami, fake
        finally:
            await services.close()


def answer_as(
    ami: FakeAmiServer, services: Services, amd: str, peers: list[asyncio.Task[CallSummary]]
) -> None:
    """When the fake AMI answers, the sample's bridge-outbound context dials the media socket back with the
    AMD verdict among the channel variables (the dialplan's `_BRIDGE_AMD_STATUS`)."""

    def on_answer(call_id: str, variables: dict[str, str]) -> None:
        options = SimulatedCallOptions(
            url=f"http://127.0.0.1:{services.http_port}",
            call_id=call_id,
            connector_key=CONNECTOR_KEY,
            send_webhook=False,
            caller=variables.get("BRIDGE_FROM", ""),
            called=variables.get("BRIDGE_TO", ""),
            format="ulaw",
            audio=SILENCE,
            channel_variables={"BRIDGE_AMD_STATUS": amd},
            seconds=15.0,
            wait_for_bridge_hangup=amd == "MACHINE",
        )
        peers.append(asyncio.ensure_future(run_simulated_call(options)))

    ami.on_answer = on_answer


async def dial(services: Services, **extra: Any) -> str:
    body = {
        "from": ACME_PHONE,
        "to": CALLEE,
        "call_objective": "Delivery",
        "variables": {"name": "Ana"},
        **extra,
    }
    status, reply = await api(services, "POST", "/api/calls/outbound", body)
    assert status == 200, reply
    call_id: str = reply["data"]["call_id"]
    return call_id


async def test_a_machine_hears_the_voicemail_message_and_the_call_hangs_up(
    outbound: tuple[Services, FakeAmiServer, FakeRealtimeServer],
) -> None:
    services, ami, fake = outbound
    peers: list[asyncio.Task[CallSummary]] = []
    answer_as(ami, services, "MACHINE", peers)
    call_id = await dial(services, amd=True, ring_timeout_seconds=12)
    (originate,) = ami.actions("Originate")
    assert originate.get("Timeout") == "12000"  # the request's ring timeout, not the configured 5 s
    record = await final_record(services, call_id)
    summary = await peers[0]
    assert summary.ok, summary.errors
    fake.assert_clean()
    (voicemail,) = instructions(fake)  # no greeting: the only response is the message
    assert voicemail.endswith("Hello Ana, this is Acme about your delivery. Please call us back.")
    assert fake.last.input_audio_ms == 0  # the model never heard the machine
    assert hung_up_drained(summary)
    assert played_between(summary, 0.0, hangup_time(summary)) >= 300
    assert (record.amd_result, record.status, record.disconnected_by) == ("machine", "ended", "bot")
    status, body = await api(services, "GET", "/api/calls?amd_result=machine")
    assert status == 200
    assert [call["call_id"] for call in body["data"]["calls"]] == [call_id]
    assert body["data"]["calls"][0]["amd_result"] == "machine"


async def test_a_person_gets_the_greeting_and_the_conversation(
    outbound: tuple[Services, FakeAmiServer, FakeRealtimeServer],
) -> None:
    services, ami, fake = outbound
    peers: list[asyncio.Task[CallSummary]] = []
    answer_as(ami, services, "HUMAN", peers)
    call_id = await dial(services, amd=True)
    await wait_active(services, call_id)
    await asyncio.sleep(1.0)
    assert "Hello, this is Acme." in instructions(fake)[0]
    status, body = await api(services, "GET", f"/api/calls/{call_id}")
    assert (status, body["data"]["call"]["amd_result"]) == (200, "human")
    status, _ = await api(services, "POST", f"/api/calls/{call_id}/end")
    assert status == 200
    record = await final_record(services, call_id)
    await peers[0]
    assert (record.amd_result, record.disconnected_by) == ("human", "api")
    assert fake.last.input_audio_ms > 0  # a conversation: the model heard the callee


async def test_cancel_of_a_ringing_call_cancels_the_dial(
    outbound: tuple[Services, FakeAmiServer, FakeRealtimeServer],
) -> None:
    services, ami, _fake = outbound
    ami.scripts[CALLEE.lstrip("+")] = DialScript(Outcome.ANSWER, delay=3.0)
    call_id = await dial(services)
    status, body = await api(services, "POST", f"/api/calls/{call_id}/cancel")
    assert status == 200, body
    record = await final_record(services, call_id)
    assert (record.status, record.error_code) == ("failed", "cancelled")
    for _ in range(100):
        if ami.actions("Hangup"):
            break
        await asyncio.sleep(0.02)
    assert ami.actions("Hangup")


@pytest.mark.parametrize(
    "extra",
    [
        {"ring_timeout_seconds": 2},
        {"ring_timeout_seconds": 121},
        {"ring_timeout_seconds": "30"},
        {"amd": "yes"},
    ],
)
async def test_outbound_ring_timeout_and_amd_are_checked(
    outbound: tuple[Services, FakeAmiServer, FakeRealtimeServer], extra: dict[str, Any]
) -> None:
    services, ami, _fake = outbound
    body = {"from": ACME_PHONE, "to": CALLEE, "call_objective": "Delivery", **extra}
    status, reply = await api(services, "POST", "/api/calls/outbound", body)
    assert (status, reply["code"]) == (400, "validation_error")
    assert next(iter(extra)) in reply["error"]
    assert ami.actions("Originate") == []


async def test_say_bodies_are_checked(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()
    for body in ({"text": ""}, {"text": "hi", "interrupt": "yes"}, {"text": "hi", "loud": True}, {}):
        status, reply = await api(services, "POST", "/api/calls/some-call/say", body)
        assert (status, reply["code"]) == (400, "validation_error"), body


# -- the API document ----------------------------------------------------------------------------------


async def test_the_openapi_document_describes_say_cancel_and_the_new_fields(
    bridge_factory: StartBridge,
) -> None:
    services = await bridge_factory()
    status, document = await api(services, "GET", "/api/openapi.json")
    assert status == 200
    paths = document["paths"]
    assert "post" in paths["/api/calls/{call_id}/say"]
    assert "post" in paths["/api/calls/{call_id}/cancel"]
    schemas = document["components"]["schemas"]
    assert set(schemas["SayRequest"]["properties"]) == {"text", "interrupt"}
    assert {"ring_timeout_seconds", "amd"} <= set(schemas["OutboundRequest"]["properties"])
    assert {"transferred_to", "dtmf", "amd_result", "ended_by_guard"} <= set(schemas["CallOut"]["properties"])
    parameters = {p["name"] for p in paths["/api/calls"]["get"]["parameters"]}
    assert "amd_result" in parameters
