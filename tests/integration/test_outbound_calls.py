"""Outbound dialing and live call control end to end: REST API -> bridge -> fake AMI, and records.

When the fake AMI "answers", the simulated Asterisk peer opens the media socket with the call id,
as the sample dialplan's bridge-outbound context would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.session.state import CallState
from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, SimulatedCallOptions, run_simulated_call
from tests.fakes.ami_server import DialScript, FakeAmiServer, Outcome
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, GLOBEX_KEY, free_port, raw_config, utterances

AMI_SECRET = "ami-s3cret"
CALLEE = "+15551234567"


def outbound_settings(ami_port: int, storage: str = "sqlite://:memory:") -> Settings:
    raw = raw_config()
    raw["storage"] = {"url": storage}
    raw["asterisk"] = {
        "control": "ami",
        "ami": {"host": "127.0.0.1", "port": ami_port, "username": "bridge", "secret": AMI_SECRET},
        "originate": {"endpoint": "PJSIP/{to}@trunk", "timeout_seconds": 5},
    }
    return build_settings(raw)


class Bridge:
    def __init__(self, services: Services, http: aiohttp.ClientSession) -> None:
        self.services = services
        self.http = http
        self.base = f"http://127.0.0.1:{services.http_port}"

    async def call(self, method: str, path: str, key: str = ACME_KEY, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {key}"}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as reply:
            return reply.status, await reply.json()

    async def wait_ready(self) -> None:
        for _ in range(200):
            async with self.http.get(self.base + "/health") as reply:
                if (await reply.json())["asterisk"] == "ok":
                    return
            await asyncio.sleep(0.02)
        raise AssertionError("the AMI controller never logged in")

    async def wait_state(self, call_id: str, state: CallState) -> None:
        for _ in range(400):
            session = self.services.manager.get(call_id)
            if session is not None and session.state is state:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"call {call_id} never became {state.value}")

    async def wait_over(self, call_id: str) -> Any:
        session = self.services.manager.get(call_id)
        if session is not None:
            await asyncio.wait_for(session.ended.wait(), 15)
        return await self.services.calls.record("acme", call_id)


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({"bridge": AMI_SECRET}) as server:
        yield server


@pytest.fixture
async def bridge(ami: FakeAmiServer) -> AsyncIterator[Bridge]:
    services = await start_services(outbound_settings(ami.port))
    async with aiohttp.ClientSession() as http:
        started = Bridge(services, http)
        await started.wait_ready()
        yield started
    await services.close()


def answer_with_peer(ami: FakeAmiServer, bridge: Bridge, calls: list[asyncio.Task[CallSummary]]) -> None:
    """When the fake AMI answers, Asterisk's bridge-outbound context dials the media socket back."""

    def on_answer(call_id: str, variables: dict[str, str]) -> None:
        options = SimulatedCallOptions(
            url=bridge.base,
            call_id=call_id,
            connector_key=CONNECTOR_KEY,  # websocket_client.conf's password, as on every media socket
            send_webhook=False,
            caller=variables.get("BRIDGE_FROM", ""),
            called=variables.get("BRIDGE_TO", ""),
            format="ulaw",
            audio=AudioSource(pcm=utterances(8000, [(0.3, 1.5)]), sample_rate=8000),
            seconds=30,
            wait_for_bridge_hangup=True,
        )
        calls.append(asyncio.ensure_future(run_simulated_call(options)))

    ami.on_answer = on_answer


async def dial(bridge: Bridge, to: str = CALLEE) -> str:
    status, body = await bridge.call(
        "POST",
        "/api/calls/outbound",
        json={
            "from": ACME_PHONE,
            "to": to,
            "call_objective": "Confirm the delivery for {{name}}",
            "variables": {"name": "Ana"},
        },
    )
    assert status == 200, body
    assert body["data"]["status"] == "dialing"
    call_id: str = body["data"]["call_id"]
    return call_id


async def test_outbound_call_answered_then_ended_by_the_api(ami: FakeAmiServer, bridge: Bridge) -> None:
    peers: list[asyncio.Task[CallSummary]] = []
    answer_with_peer(ami, bridge, peers)
    call_id = await dial(bridge)
    await bridge.wait_state(call_id, CallState.ACTIVE)
    (originate,) = ami.actions("Originate")
    assert originate.get("ChannelId") == call_id
    assert originate.get("Channel") == "PJSIP/15551234567@trunk"
    assert originate.get("Async").lower() == "true"
    assert originate.get("Context") == "bridge-outbound"
    assert originate.get("Timeout") == "5000"
    assert ACME_PHONE.lstrip("+") in originate.get("CallerID")
    variables = originate.getlist("Variable")
    assert f"__BRIDGE_CALL_ID={call_id}" in variables
    status, body = await bridge.call("GET", f"/api/calls/{call_id}")
    assert status == 200
    assert body["data"]["call"]["status"] == "active"
    assert body["data"]["call"]["direction"] == "outbound"
    await asyncio.sleep(1.0)  # the echo is speaking: the end must let it finish its sentence
    status, body = await bridge.call("POST", f"/api/calls/{call_id}/end")
    assert status == 200, body
    summary = await asyncio.wait_for(peers[0], 20)
    assert summary.hangup_by == "bridge"
    names = [r.name for r in summary.records if r.kind == "command"]
    assert names[names.index("HANGUP") - 1] == "REPORT_QUEUE_DRAINED"
    assert summary.frames_queued_at_hangup == 0
    record = await bridge.wait_over(call_id)
    assert record.status == "ended"
    assert record.disconnected_by == "api"
    assert record.dial_outcome == "answered"
    assert record.call_objective == "Confirm the delivery for {{name}}"
    assert record.created_at <= (record.answered_at or 0) <= (record.ended_at or 0)
    assert record.frames_in > 0
    status, body = await bridge.call("GET", "/api/calls?direction=outbound")
    assert [c["call_id"] for c in body["data"]["calls"]] == [call_id]
    assert body["data"]["pagination"] == {"total": 1, "limit": 50, "offset": 0}


@pytest.mark.parametrize(("outcome", "code"), [(Outcome.BUSY, "busy"), (Outcome.NO_ANSWER, "no_answer")])
async def test_busy_and_no_answer_fail_with_their_reason(
    ami: FakeAmiServer, bridge: Bridge, outcome: Outcome, code: str
) -> None:
    ami.scripts[CALLEE.lstrip("+")] = DialScript(outcome)
    call_id = await dial(bridge)
    record = await bridge.wait_over(call_id)
    assert record.status == "failed"
    assert record.error_code == code
    assert record.dial_outcome == code
    status, body = await bridge.call("GET", "/api/calls?status=failed")
    assert status == 200
    assert [c["call_id"] for c in body["data"]["calls"]] == [call_id]


async def test_dtmf_and_transfer_reach_asterisk(ami: FakeAmiServer, bridge: Bridge) -> None:
    peers: list[asyncio.Task[CallSummary]] = []
    answer_with_peer(ami, bridge, peers)
    call_id = await dial(bridge)
    await bridge.wait_state(call_id, CallState.ACTIVE)
    status, body = await bridge.call("POST", f"/api/calls/{call_id}/dtmf", json={"digits": "12#"})
    assert status == 200, body
    assert [a.get("Digit") for a in ami.actions("PlayDTMF")] == ["1", "2", "#"]
    trunk = {a.get("Channel") for a in ami.actions("PlayDTMF")}
    assert len(trunk) == 1
    assert trunk != {""}
    status, body = await bridge.call("POST", f"/api/calls/{call_id}/transfer", json={"to": "+34911222333"})
    assert status == 200, body
    (redirect,) = ami.actions("Redirect")
    assert redirect.get("Channel") in trunk
    assert (redirect.get("Context"), redirect.get("Exten"), redirect.get("Priority")) == (
        "bridge-transfer",
        "+34911222333",
        "1",
    )
    record = await bridge.wait_over(call_id)
    assert record.disconnected_by == "api"
    status, body = await bridge.call("POST", f"/api/calls/{call_id}/dtmf", json={"digits": "1"})
    assert status in (404, 409)  # the call is over


async def test_another_company_gets_404_on_every_call_route(ami: FakeAmiServer, bridge: Bridge) -> None:
    peers: list[asyncio.Task[CallSummary]] = []
    answer_with_peer(ami, bridge, peers)
    call_id = await dial(bridge)
    await bridge.wait_state(call_id, CallState.ACTIVE)
    routes = [
        ("GET", f"/api/calls/{call_id}", None),
        ("GET", f"/api/calls/{call_id}/transcript", None),
        ("POST", f"/api/calls/{call_id}/end", {}),
        ("POST", f"/api/calls/{call_id}/transfer", {"to": "+34911222333"}),
        ("POST", f"/api/calls/{call_id}/dtmf", {"digits": "1"}),
    ]
    for method, path, body in routes:
        status, reply = await bridge.call(method, path, key=GLOBEX_KEY, json=body)
        assert status == 404, (path, reply)
        assert reply == {"success": False, "error": reply["error"], "code": "unknown_call"}
    status, reply = await bridge.call("GET", "/api/calls", key=GLOBEX_KEY)
    assert reply["data"]["calls"] == []
    live = bridge.services.manager.get(call_id)
    assert live is not None
    assert live.state is CallState.ACTIVE  # untouched
    assert ami.actions("PlayDTMF") == []
    await bridge.call("POST", f"/api/calls/{call_id}/end")
    await bridge.wait_over(call_id)


async def test_outbound_requests_are_validated(bridge: Bridge) -> None:
    cases = [
        ({"from": "+34999999999", "to": CALLEE, "call_objective": "x"}, 403, "from_not_allowed"),
        ({"from": ACME_PHONE, "to": "555-1234", "call_objective": "x"}, 400, "validation_error"),
        ({"from": ACME_PHONE, "call_objective": "x"}, 400, "validation_error"),
        ({"from": ACME_PHONE, "to": CALLEE}, 400, "validation_error"),
    ]
    for body, status, code in cases:
        got, reply = await bridge.call("POST", "/api/calls/outbound", json=body)
        assert (got, reply["code"]) == (status, code), reply
    got, reply = await bridge.call("GET", "/api/calls?limit=101")
    assert (got, reply["code"]) == (400, "validation_error")
    got, reply = await bridge.call("GET", "/api/calls/nope")
    assert (got, reply["code"]) == (404, "unknown_call")


async def test_asterisk_down_answers_503_and_health_says_so() -> None:
    services = await start_services(outbound_settings(free_port()))  # nothing listens there
    try:
        async with aiohttp.ClientSession() as http:
            bridge = Bridge(services, http)
            for _ in range(300):
                async with http.get(bridge.base + "/health") as reply:
                    health = await reply.json()
                if health["asterisk"] == "down":
                    break
                assert health["asterisk"] in ("degraded", "down")
                await asyncio.sleep(0.05)
            assert (health["status"], health["asterisk"]) == ("ok", "down")
            status, reply = await bridge.call(
                "POST", "/api/calls/outbound", json={"from": ACME_PHONE, "to": CALLEE, "call_objective": "x"}
            )
            assert (status, reply["code"]) == (503, "asterisk_unavailable")
    finally:
        await services.close()


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/calls.db"
    raw = raw_config()
    raw["storage"] = {"url": url}
    settings = build_settings(raw)
    services = await start_services(settings)
    try:
        summary = await run_simulated_call(
            SimulatedCallOptions(
                url=f"http://127.0.0.1:{services.http_port}",
                connector_key=CONNECTOR_KEY,
                called=ACME_PHONE,
                call_id="restart-1",
                format="ulaw",
                seconds=1.0,
            )
        )
        assert summary.ok, summary.errors
        session = services.manager.get("restart-1")
        if session is not None:
            await asyncio.wait_for(session.ended.wait(), 10)
    finally:
        await services.close()
    services = await start_services(settings)
    try:
        async with aiohttp.ClientSession() as http:
            bridge = Bridge(services, http)
            status, body = await bridge.call("GET", "/api/calls")
            assert status == 200
            (call,) = body["data"]["calls"]
            assert call["call_id"] == "restart-1"
            assert call["status"] == "ended"
            assert call["disconnected_by"] == "caller"
            assert call["frames_in"] > 0
    finally:
        await services.close()
