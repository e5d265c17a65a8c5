"""The tenant boundary as a matrix: every company route (read from the app's own route registry, so a
new route is covered the day it lands) with each company's key against each company's calls, and every
path that creates a call with each company's numbers. Nothing reaches another company's data."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from bridge.api.openapi import OPERATIONS, Operation
from bridge.api.routes_usage import USAGE
from bridge.app import Services, start_services
from bridge.asterisk.audiosocket import Kind, encode_audio
from bridge.companies.usage import UsageRow
from bridge.session.state import CallState, EndedBy
from bridge.settings import build_settings
from bridge.simulate import AudioSource, CallSummary, SimulatedCallOptions, run_simulated_call
from bridge.store.records import Usage
from tests.fakes.ami_server import FakeAmiServer
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, GLOBEX_KEY, GLOBEX_PHONE, raw_config

GLOBEX_CALLER = "+15551234567"  # globex allows only this caller
ACME_CALLER = "+34600111222"
KEYS = {"acme": ACME_KEY, "globex": GLOBEX_KEY}
PHONES = {"acme": ACME_PHONE, "globex": GLOBEX_PHONE}
CALLERS = {"acme": ACME_CALLER, "globex": GLOBEX_CALLER}
# A valid body for each request model a call route takes: ownership is checked on valid requests.
EXAMPLE_BODIES: dict[str, dict[str, Any]] = {
    "TransferRequest": {"to": "+34911222333"},
    "DtmfRequest": {"digits": "1"},
    "SayRequest": {"text": "Your order ships today.", "interrupt": False},
    "AgentCreate": {"name": "Sales", "system_prompt": "You sell.", "voice": "marin"},
    "AgentFields": {"starting_message": "Hello from sales."},
    "WebhookSettingsIn": {"url": "https://crm.example/hooks", "secret": "s3cret-s3cret-s3cret"},
    "TaskCreate": {
        "to_number": "+15550001111",
        "call_objective": "x",
        "scheduled_at": "2200-01-01T00:00:00Z",
    },
    "TaskPatch": {"priority": 3},
    "TemplateSend": {
        "phone_number_id": "123456789",
        "to": "+34600111222",
        "template_name": "order_update",
        "language_code": "en_US",
        "components": [],
    },
}


@dataclass
class Tenant:
    company: str
    live: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

    @property
    def calls(self) -> list[str]:
        return self.live + self.finished


class Bridge:
    def __init__(self, services: Services, http: aiohttp.ClientSession) -> None:
        self.services = services
        self.http = http
        self.base = f"http://127.0.0.1:{services.http_port}"

    async def call(
        self, method: str, path: str, key: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any], str]:
        async with self.http.request(
            method, self.base + path, json=body, headers={"X-API-Key": key}
        ) as response:
            text = await response.text()
            return response.status, json.loads(text), text

    async def webhook(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(
            self.base + "/api/voip/webhook", json=body, headers={"x-connector-api-key": CONNECTOR_KEY}
        ) as response:
            return response.status, await response.json()

    async def wait_state(self, call_id: str, *states: CallState) -> None:
        for _ in range(500):
            session = self.services.manager.get(call_id)
            if session is not None and session.state in states:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{call_id} never reached {states}")


def connect(call_id: str, company: str, **extra: Any) -> dict[str, Any]:
    return {
        "callId": call_id,
        "event": "connect",
        "callerPhone": CALLERS[company],
        "b_number": PHONES[company],
        "websocketUrl": "ws://127.0.0.1/x",
        **extra,
    }


@pytest.fixture
async def world() -> AsyncIterator[tuple[Bridge, dict[str, Tenant]]]:
    async with FakeAmiServer({"bridge": "ami-s3cret"}) as ami:
        raw = raw_config(audiosocket={})
        raw["asterisk"] = {
            "control": "ami",
            "ami": {"host": "127.0.0.1", "port": ami.port, "username": "bridge", "secret": "ami-s3cret"},
        }
        services = await start_services(build_settings(raw))
        peers: list[asyncio.Task[CallSummary]] = []
        async with aiohttp.ClientSession() as http:
            bridge = Bridge(services, http)
            tenants = {name: Tenant(name) for name in KEYS}
            for name, tenant in tenants.items():
                # A call announced and still waiting for its media socket.
                pending = f"{name}-pending"
                assert (await bridge.webhook(connect(pending, name)))[0] == 200
                # A live conversation over chan_websocket, announced by no webhook.
                active = f"{name}-active"
                options = SimulatedCallOptions(
                    url=bridge.base,
                    connector_key=CONNECTOR_KEY,
                    call_id=active,
                    caller=CALLERS[name],
                    called=PHONES[name],
                    send_webhook=False,
                    format="ulaw",
                    audio=AudioSource(pcm=b"\x00\x00" * 8000, sample_rate=8000),
                    seconds=60,
                    wait_for_bridge_hangup=True,
                )
                peers.append(asyncio.ensure_future(run_simulated_call(options)))
                await bridge.wait_state(active, CallState.ACTIVE)
                # A finished call, in the store only.
                finished = f"{name}-finished"
                assert (await bridge.webhook(connect(finished, name)))[0] == 200
                terminate = {"callId": finished, "event": "terminate", "b_number": PHONES[name]}
                assert (await bridge.webhook(terminate))[0] == 200
                tenant.live += [pending, active]
                tenant.finished.append(finished)
            await services.recorder.flush()
            yield bridge, tenants
            for tenant in tenants.values():
                for call_id in tenant.live:
                    services.manager.end(call_id, EndedBy.API)
            await asyncio.gather(*peers, return_exceptions=True)
        await services.close()


def company_routes(services: Services) -> list[Operation]:
    return [op for op in services.app[OPERATIONS].items if op.auth == "company"]


def example_body(op: Operation) -> dict[str, Any] | None:
    if op.body is None:
        return None
    assert op.body.__name__ in EXAMPLE_BODIES, f"add a valid example body for {op.body.__name__}"
    return EXAMPLE_BODIES[op.body.__name__]


async def test_no_call_route_reaches_another_companys_call(world: tuple[Bridge, dict[str, Tenant]]) -> None:
    bridge, tenants = world
    call_routes = [op for op in company_routes(bridge.services) if "{call_id}" in op.path]
    assert {op.path for op in call_routes} >= {"/api/calls/{call_id}", "/api/calls/{call_id}/end"}
    for viewer, owner in (("acme", "globex"), ("globex", "acme")):
        for op in call_routes:
            for call_id in tenants[owner].calls:
                path = op.path.replace("{call_id}", call_id)
                status, reply, _text = await bridge.call(op.method, path, KEYS[viewer], example_body(op))
                # Exactly what an unknown id gets: nothing tells the call exists.
                assert (status, reply["code"]) == (404, "unknown_call"), (viewer, op.method, path, reply)
                never = op.path.replace("{call_id}", "never-" + call_id)
                unknown = await bridge.call(op.method, never, KEYS[viewer], example_body(op))
                assert (unknown[0], unknown[1]["code"]) == (status, reply["code"])
                assert unknown[1]["error"].replace("never-", "") == reply["error"]
    # Nothing was touched: every live call is still where it was, nothing reached Asterisk.
    for tenant in tenants.values():
        pending, active = tenant.live
        assert bridge.services.manager.get(pending) is not None
        live = bridge.services.manager.get(active)
        assert live is not None
        assert live.state is CallState.ACTIVE
        assert live.end_request is None


async def test_own_calls_are_visible_to_their_company(world: tuple[Bridge, dict[str, Tenant]]) -> None:
    bridge, tenants = world
    for name, tenant in tenants.items():
        for call_id in tenant.calls:
            status, reply, _ = await bridge.call("GET", f"/api/calls/{call_id}", KEYS[name])
            assert status == 200, reply
            assert reply["data"]["call"]["company_id"] == name
        status, reply, _ = await bridge.call("GET", "/api/calls?limit=100", KEYS[name])
        assert status == 200
        listed = {call["call_id"] for call in reply["data"]["calls"]}
        # Live calls are listed once their record is saved; the finished one certainly is.
        assert set(tenant.finished) <= listed <= set(tenant.calls)


async def test_no_listing_shows_another_companys_data(world: tuple[Bridge, dict[str, Tenant]]) -> None:
    bridge, tenants = world
    listings = [op for op in company_routes(bridge.services) if op.method == "GET" and "{" not in op.path]
    assert {op.path for op in listings} >= {
        "/api/calls",
        "/api/phones",
        "/api/emails",
        "/api/whatsapp/numbers",
    }
    for viewer, owner in (("acme", "globex"), ("globex", "acme")):
        foreign = [owner, PHONES[owner], *tenants[owner].calls]
        for op in listings:
            status, _, text = await bridge.call("GET", op.path, KEYS[viewer])
            assert status == 200, (op.path, text)
            for value in foreign:
                assert value not in text, (viewer, op.path, value)


async def test_call_creating_paths_honour_the_owner_of_the_number(
    world: tuple[Bridge, dict[str, Tenant]],
) -> None:
    bridge, _ = world
    # Webhook: a companyId that disagrees with the called number is refused, either way round.
    for claimed, number_of in (("acme", "globex"), ("globex", "acme")):
        body = connect(f"x-{claimed}", number_of, companyId=claimed)
        status, reply = await bridge.webhook(body)
        assert (status, reply["code"]) == (403, "company_mismatch")
    # Outbound: a company dials only from its own numbers.
    for name, other in (("acme", "globex"), ("globex", "acme")):
        body = {"from": PHONES[other], "to": "+15550001111", "call_objective": "x"}
        status, reply, _ = await bridge.call("POST", "/api/calls/outbound", KEYS[name], body)
        assert (status, reply["code"]) == (403, "from_not_allowed")
    # A webhook-less media socket belongs to whoever owns the number it called, never the caller's side.
    options = SimulatedCallOptions(
        url=bridge.base,
        connector_key=CONNECTOR_KEY,
        call_id="cross-1",
        caller=ACME_CALLER,
        called=GLOBEX_PHONE,  # globex does not allow this caller
        send_webhook=False,
        format="ulaw",
        seconds=1,
    )
    summary = await asyncio.gather(run_simulated_call(options), return_exceptions=True)
    assert isinstance(summary[0], Exception)
    assert "403" in str(summary[0])
    status, reply, _ = await bridge.call("GET", "/api/calls/cross-1", ACME_KEY)
    assert status == 404
    # AudioSocket: a call announced for globex is globex's, whatever socket carries it.
    call_uuid = str(uuid.uuid4())
    assert (await bridge.webhook(connect(call_uuid, "globex")))[0] == 200
    port = bridge.services.audiosocket_port
    assert port is not None
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x01\x00\x10" + uuid.UUID(call_uuid).bytes + encode_audio(b"\x00" * 320, Kind.SLIN))
    await writer.drain()
    await bridge.wait_state(call_uuid, CallState.CONNECTING, CallState.ACTIVE)
    assert (await bridge.call("GET", f"/api/calls/{call_uuid}", ACME_KEY))[0] == 404
    assert (await bridge.call("GET", f"/api/calls/{call_uuid}", GLOBEX_KEY))[0] == 200
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_every_control_route_answers_409_on_a_finished_call(
    world: tuple[Bridge, dict[str, Tenant]],
) -> None:
    bridge, tenants = world
    control = [op for op in company_routes(bridge.services) if op.method == "POST" and "{call_id}" in op.path]
    assert {op.path.rsplit("/", 1)[1] for op in control} >= {"end", "transfer", "dtmf", "say", "cancel"}
    for name, tenant in tenants.items():
        for op in control:
            path = op.path.replace("{call_id}", tenant.finished[0])
            status, reply, _ = await bridge.call("POST", path, KEYS[name], example_body(op))
            assert (status, reply["code"]) == (409, "call_finished"), (path, reply)


async def test_no_task_route_reaches_another_companys_task(world: tuple[Bridge, dict[str, Tenant]]) -> None:
    bridge, _ = world
    tasks: dict[str, str] = {}
    for name, key in KEYS.items():  # one task each, due far in the future: nothing dials
        status, reply, _text = await bridge.call("POST", "/api/tasks", key, EXAMPLE_BODIES["TaskCreate"])
        assert status == 201, reply
        tasks[name] = reply["data"]["task"]["id"]
    task_routes = [op for op in company_routes(bridge.services) if "{task_id}" in op.path]
    assert {op.method for op in task_routes} == {"GET", "PATCH", "DELETE", "POST"}
    for viewer, owner in (("acme", "globex"), ("globex", "acme")):
        for op in task_routes:
            path = op.path.replace("{task_id}", tasks[owner])
            status, reply, _text = await bridge.call(op.method, path, KEYS[viewer], example_body(op))
            assert (status, reply["code"]) == (404, "unknown_task"), (viewer, op.method, path, reply)
            never = op.path.replace("{task_id}", "never")
            unknown = await bridge.call(op.method, never, KEYS[viewer], example_body(op))
            assert (unknown[0], unknown[1]["code"]) == (404, "unknown_task")
        status, reply, text = await bridge.call("GET", "/api/tasks", KEYS[viewer])
        assert status == 200
        assert tasks[owner] not in text
    for name, task_id in tasks.items():  # untouched
        status, reply, _text = await bridge.call("GET", f"/api/tasks/{task_id}", KEYS[name])
        assert (status, reply["data"]["task"]["status"], reply["data"]["task"]["priority"]) == (
            200,
            "pending",
            0,
        )


async def test_usage_never_shows_another_companys_rows(world: tuple[Bridge, dict[str, Tenant]]) -> None:
    bridge, tenants = world
    usage = bridge.services.app[USAGE]
    for name, tenant in tenants.items():  # each finished call used a model (a model named after it)
        record = await bridge.services.calls.record(name, tenant.finished[0])
        row = UsageRow("openai", f"model-of-{name}", Usage(input_text_tokens=7, output_audio_tokens=9), 0.5)
        await usage.replace(record, [row])
    for viewer, owner in (("acme", "globex"), ("globex", "acme")):
        foreign = [owner, f"model-of-{owner}", *tenants[owner].calls]
        for group_by in ("company", "conversation", "model", "day"):
            for fmt in ("json", "csv"):
                path = f"/api/usage?group_by={group_by}&breakdown=model&format={fmt}&company_id={owner}"
                async with bridge.http.get(bridge.base + path, headers={"X-API-Key": KEYS[viewer]}) as got:
                    text = await got.text()
                    assert got.status == 200, text
                assert f"model-of-{viewer}" in text
                for value in foreign:
                    assert value not in text, (viewer, group_by, fmt, value)
