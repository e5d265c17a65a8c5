"""Agents as data: CRUD and company isolation through the API, the agent a call runs with (named by the
webhook's agentId, by the called number, by an outbound request), `{{placeholders}}` filled from the
call's variables or refused before any call exists, and an edit applying to the next call at once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.settings import build_settings
from bridge.simulate import AudioSource, run_simulated_call
from tests.fakes.ami_server import FakeAmiServer
from tests.fakes.openai_realtime import FakeRealtimeServer, Script
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, GLOBEX_KEY, GLOBEX_PHONE, raw_config
from tests.integration.relay_support import call_options, final_record
from tests.integration.test_openai_relay import FAKE_KEY, relay_settings

StartBridge = Callable[..., Any]
CALLER = "+34600111222"
SILENCE = AudioSource(pcm=b"\x00\x00" * 8000 * 2, sample_rate=8000)


async def api(
    services: Services, method: str, path: str, body: Any = None, *, key: str = ACME_KEY
) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{services.http_port}{path}"
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, json=body, headers={"X-API-Key": key}) as reply,
    ):
        return reply.status, await reply.json()


async def webhook(services: Services, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{services.http_port}/api/voip/webhook"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=body, headers={"x-connector-api-key": CONNECTOR_KEY}) as reply,
    ):
        return reply.status, await reply.json()


def connect(call_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "callId": call_id,
        "event": "connect",
        "callerPhone": CALLER,
        "b_number": ACME_PHONE,
        "websocketUrl": "ws://127.0.0.1/x",
        **extra,
    }


async def create(services: Services, body: dict[str, Any], *, key: str = ACME_KEY) -> dict[str, Any]:
    status, reply = await api(services, "POST", "/api/agents", body, key=key)
    assert status == 200, reply
    agent: dict[str, Any] = reply["data"]["agent"]
    return agent


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


# -- CRUD and isolation ---------------------------------------------------------------------------


async def test_agents_are_created_read_changed_and_deleted(
    bridge_factory: StartBridge, store_url: str
) -> None:
    raw = raw_config()
    raw["storage"] = {"url": store_url}
    services = await bridge_factory(settings=build_settings(raw))
    status, reply = await api(services, "GET", "/api/agents")
    assert status == 200
    (default,) = reply["data"]["agents"]
    assert (default["id"], default["read_only"], default["provider"]) == ("default", True, "echo")

    agent = await create(
        services,
        {
            "name": "Sales",
            "system_prompt": "You sell.",
            "starting_message": "Hi, sales here.",
            "voice": "cedar",
            "dtmf_rules": {"mode": "collect", "terminator": "#"},
            "tools": [{"name": "lookup", "url": "https://crm.example/lookup"}],
            "max_call_seconds": 600,
        },
    )
    assert uuid.UUID(agent["id"])
    assert (agent["name"], agent["enabled"], agent["read_only"]) == ("Sales", True, False)
    assert (agent["system_prompt"], agent["starting_message"], agent["voice"]) == (
        "You sell.",
        "Hi, sales here.",
        "cedar",
    )
    assert agent["settings"]["max_call_seconds"] == 600
    assert agent["settings"]["dtmf_rules"]["mode"] == "collect"
    assert agent["settings"]["tools"][0]["name"] == "lookup"

    status, reply = await api(services, "PATCH", f"/api/agents/{agent['id']}", {"voice": "marin"})
    assert status == 200, reply
    changed = reply["data"]["agent"]
    assert (changed["voice"], changed["system_prompt"]) == ("marin", "You sell.")  # the rest stays
    status, reply = await api(services, "GET", f"/api/agents/{agent['id']}")
    assert (status, reply["data"]["agent"]["voice"]) == (200, "marin")
    status, reply = await api(services, "GET", "/api/agents")
    assert [a["id"] for a in reply["data"]["agents"]] == ["default", agent["id"]]

    status, reply = await api(services, "DELETE", f"/api/agents/{agent['id']}")
    assert (status, reply["data"]) == (200, {"id": agent["id"], "deleted": True})
    status, reply = await api(services, "GET", f"/api/agents/{agent['id']}")
    assert (status, reply["code"]) == (404, "unknown_agent")


async def test_the_config_agent_is_read_only(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()
    status, reply = await api(services, "GET", "/api/agents/default")
    assert (status, reply["data"]["agent"]["read_only"]) == (200, True)
    for method, body in (("PATCH", {"voice": "cedar"}), ("DELETE", None)):
        status, reply = await api(services, method, "/api/agents/default", body)
        assert (status, reply["code"]) == (409, "agent_read_only"), method


async def test_invalid_profiles_are_refused_naming_the_field(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()
    cases: list[tuple[dict[str, Any], int, str, str]] = [
        ({"name": "x", "provider": "skynet"}, 400, "validation_error", "provider"),
        ({"name": "x", "max_call_seconds": "60"}, 400, "validation_error", "max_call_seconds"),
        ({"name": "x", "instructions": "hi"}, 400, "validation_error", "instructions"),  # system_prompt here
        ({"name": "x", "caller_silence_seconds": 1}, 400, "validation_error", "caller_silence_seconds"),
        (
            {"name": "x", "provider": "openai", "fallback_providers": ["openai"]},
            409,
            "profile_conflict",
            "fallback_providers",
        ),
        ({"name": "x", "phones": [GLOBEX_PHONE]}, 403, "phone_not_allowed", GLOBEX_PHONE),
    ]
    for body, want_status, code, field in cases:
        status, reply = await api(services, "POST", "/api/agents", body)
        assert (status, reply["code"]) == (want_status, code), (body, reply)
        assert field in reply["error"], reply
    status, reply = await api(services, "GET", "/api/agents")
    assert len(reply["data"]["agents"]) == 1  # nothing was created


async def test_a_number_answers_for_one_agent_only(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()
    first = await create(services, {"name": "Front desk", "phones": [ACME_PHONE]})
    status, reply = await api(services, "POST", "/api/agents", {"name": "Other", "phones": [ACME_PHONE]})
    assert (status, reply["code"]) == (409, "phone_taken")
    assert first["id"] in reply["error"]
    # The owner may keep (or re-list) its own number.
    status, reply = await api(services, "PATCH", f"/api/agents/{first['id']}", {"phones": [ACME_PHONE]})
    assert status == 200, reply


async def test_another_companys_agent_is_unknown_on_every_route(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()
    agent = await create(services, {"name": "Acme sales", "system_prompt": "Acme secrets."})
    routes: list[tuple[str, dict[str, Any] | None]] = [
        ("GET", None),
        ("PATCH", {"name": "stolen"}),
        ("DELETE", None),
    ]
    for method, body in routes:
        theirs = await api(services, method, f"/api/agents/{agent['id']}", body, key=GLOBEX_KEY)
        unknown = await api(services, method, f"/api/agents/{uuid.uuid4()}", body, key=GLOBEX_KEY)
        assert (theirs[0], theirs[1]["code"]) == (404, "unknown_agent"), method
        assert (unknown[0], unknown[1]["code"]) == (404, "unknown_agent"), method
    status, reply = await api(services, "GET", "/api/agents", key=GLOBEX_KEY)
    assert status == 200
    assert agent["id"] not in str(reply)
    assert "Acme" not in str(reply)
    # Nor can its calls name it: for globex it does not exist.
    status, reply = await webhook(
        services,
        {
            "callId": "globex-1",
            "event": "connect",
            "callerPhone": "+15551234567",
            "b_number": GLOBEX_PHONE,
            "websocketUrl": "ws://127.0.0.1/x",
            "agentId": agent["id"],
        },
    )
    assert (status, reply["code"]) == (404, "unknown_agent")
    # Acme's agent is untouched.
    status, reply = await api(services, "GET", f"/api/agents/{agent['id']}")
    assert (status, reply["data"]["agent"]["name"]) == (200, "Acme sales")


async def test_agents_survive_a_restart(store_url: str) -> None:
    raw = raw_config()
    raw["storage"] = {"url": store_url}
    services = await start_services(build_settings(raw))
    try:
        agent = await create(services, {"name": "Kept", "phones": [ACME_PHONE], "voice": "cedar"})
    finally:
        await services.close()
    services = await start_services(build_settings(raw))
    try:
        status, reply = await api(services, "GET", f"/api/agents/{agent['id']}")
        assert status == 200, reply
        assert (reply["data"]["agent"]["voice"], reply["data"]["agent"]["phones"]) == ("cedar", [ACME_PHONE])
    finally:
        await services.close()


# -- calls run by an agent ------------------------------------------------------------------------


async def test_an_inbound_call_runs_the_agent_its_webhook_names(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=300))
    services = await bridge_factory(settings=relay_settings(fake))
    agent = await create(
        services,
        {
            "name": "Collections",
            "provider": "openai",
            "voice": "cedar",
            "system_prompt": "You collect for {{company_name}}; the caller is {{crm.customer}} "
            "calling {{call.to}} (call {{call.id}}).",
            "starting_message": "Hello {{customer}}.",
        },
    )
    call_id = str(uuid.uuid4())
    status, reply = await webhook(
        services, connect(call_id, agentId=agent["id"], customer="Ana", variables={"company_name": "Acme"})
    )
    assert status == 200, reply
    summary = await run_simulated_call(
        call_options(services, call_id=call_id, caller=CALLER, send_webhook=False, audio=SILENCE, seconds=2.0)
    )
    assert summary.ok, summary.errors
    fake.assert_clean()
    session = fake.last.session
    assert (
        f"You collect for Acme; the caller is Ana calling {ACME_PHONE} (call {call_id})."
        in session["instructions"]
    )
    assert session["audio"]["output"]["voice"] == "cedar"
    greeting = [
        e.data.get("response", {}).get("instructions", "")
        for e in fake.last.events
        if e.type == "response.create"
    ]
    assert any("Hello Ana." in text for text in greeting), greeting
    record = await final_record(services, call_id)
    assert record.agent_id == agent["id"]
    status, reply = await api(services, "GET", f"/api/calls?agent_id={agent['id']}")
    assert [c["call_id"] for c in reply["data"]["calls"]] == [call_id]


async def test_the_called_numbers_agent_answers_and_an_edit_applies_to_the_next_call(
    bridge_factory: StartBridge, fake_factory: Callable[..., Any]
) -> None:
    fake = await fake_factory(script=Script(greeting_reply_ms=300))
    services = await bridge_factory(settings=relay_settings(fake))
    agent = await create(
        services,
        {
            "name": "Front desk",
            "provider": "openai",
            "system_prompt": "First version.",
            "starting_message": "Front desk, hello.",
            "phones": [ACME_PHONE],
        },
    )
    first = await run_simulated_call(call_options(services, caller=CALLER, audio=SILENCE, seconds=1.5))
    assert first.ok, first.errors
    assert "First version." in fake.last.session["instructions"]
    assert (await final_record(services, first.call_id)).agent_id == agent["id"]

    status, reply = await api(services, "PATCH", f"/api/agents/{agent['id']}", {"system_prompt": "Second."})
    assert status == 200, reply
    second = await run_simulated_call(call_options(services, caller=CALLER, audio=SILENCE, seconds=1.5))
    assert second.ok, second.errors
    instructions = fake.last.session["instructions"]
    assert "Second." in instructions
    assert "First version." not in instructions

    # Disabled, it answers nothing: the company's default agent does.
    status, reply = await api(services, "PATCH", f"/api/agents/{agent['id']}", {"enabled": False})
    assert status == 200, reply
    third = await run_simulated_call(call_options(services, caller=CALLER, audio=SILENCE, seconds=1.5))
    assert third.ok, third.errors
    assert "You are the receptionist." in fake.last.session["instructions"]
    assert (await final_record(services, third.call_id)).agent_id is None


async def test_an_unknown_placeholder_refuses_the_inbound_call(bridge_factory: StartBridge) -> None:
    services = await bridge_factory()
    agent = await create(services, {"name": "x", "system_prompt": "Hello {{crm.customer}}, {{call.nope}}."})
    call_id = str(uuid.uuid4())
    status, reply = await webhook(services, connect(call_id, agentId=agent["id"]))
    assert (status, reply["code"]) == (400, "unknown_placeholder")
    assert "{{call.nope}}" in reply["error"]
    assert "{{crm.customer}}" in reply["error"]
    assert services.manager.get(call_id) is None  # no call was created
    # With the variable given, only the unknown call fact is left.
    status, reply = await webhook(services, connect(call_id, agentId=agent["id"], customer="Ana"))
    assert (status, reply["code"]) == (400, "unknown_placeholder")
    assert "{{call.nope}}" in reply["error"]
    assert "customer" not in reply["error"]
    status, reply = await webhook(services, connect(call_id, agentId="no-such-agent"))
    assert (status, reply["code"]) == (404, "unknown_agent")


# -- outbound -------------------------------------------------------------------------------------


@pytest.fixture
async def dialer() -> AsyncIterator[tuple[Services, FakeAmiServer]]:
    async with FakeAmiServer({"bridge": "ami-s3cret"}) as ami:
        raw = raw_config()
        raw["asterisk"] = {
            "control": "ami",
            "ami": {"host": "127.0.0.1", "port": ami.port, "username": "bridge", "secret": "ami-s3cret"},
        }
        services = await start_services(build_settings(raw))
        try:
            async with asyncio.timeout(10):
                while (
                    services.calls.controller_health is None or services.calls.controller_health.value != "ok"
                ):
                    await asyncio.sleep(0.02)
            yield services, ami
        finally:
            await services.close()


def outbound(**extra: Any) -> dict[str, Any]:
    return {"from": ACME_PHONE, "to": "+34911222333", "call_objective": "Confirm the delivery", **extra}


async def test_an_outbound_call_names_its_agent_and_its_placeholders_are_checked(
    dialer: tuple[Services, FakeAmiServer],
) -> None:
    services, _ami = dialer
    agent = await create(
        services,
        {"name": "Deliveries", "starting_message": "Hi {{crm.name}}, about order {{order}}.", "amd": True},
    )
    status, reply = await api(services, "POST", "/api/calls/outbound", outbound(agent_id=agent["id"]))
    assert (status, reply["code"]) == (400, "unknown_placeholder")
    assert "{{crm.name}}" in reply["error"]
    assert "{{order}}" in reply["error"]
    status, reply = await api(
        services, "POST", "/api/calls/outbound", outbound(agent_id=agent["id"], first_message="{{call.x}}")
    )
    assert (status, reply["code"]) == (400, "unknown_placeholder")
    status, reply = await api(services, "GET", "/api/calls")
    assert reply["data"]["calls"] == []
    assert services.manager.capacity().active_calls == 0

    status, reply = await api(services, "POST", "/api/calls/outbound", outbound(agent_id="nope"))
    assert (status, reply["code"]) == (404, "unknown_agent")
    status, reply = await api(
        services, "POST", "/api/calls/outbound", outbound(agent_id=agent["id"]), key=GLOBEX_KEY
    )
    assert status == 403  # globex's key cannot even use acme's number

    variables = {"name": "Ana", "order": "A-17"}
    status, reply = await api(
        services, "POST", "/api/calls/outbound", outbound(agent_id=agent["id"], variables=variables)
    )
    assert status == 200, reply
    call_id = reply["data"]["call_id"]
    session = services.manager.get(call_id)
    assert session is not None
    assert (session.info.agent_id, session.info.amd) == (agent["id"], True)  # the agent's amd
    status, reply = await api(services, "GET", f"/api/calls/{call_id}")
    assert reply["data"]["call"]["agent_id"] == agent["id"]

    status, reply = await api(services, "PATCH", f"/api/agents/{agent['id']}", {"enabled": False})
    assert status == 200
    status, reply = await api(
        services, "POST", "/api/calls/outbound", outbound(agent_id=agent["id"], variables=variables)
    )
    assert (status, reply["code"]) == (409, "agent_disabled")
