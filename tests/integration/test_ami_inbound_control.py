"""Inbound calls controlled from the API over AMI, end to end: the simulated Asterisk places the call
(webhook, then the media socket) as the sample's inbound contexts do, the fake AMI holds the channels
those contexts leave behind, and the bridge acts on the caller's channel with the sample manager.conf's
least privileges. Before issue 12 an AudioSocket call answered 409 here: it never names its channel."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.session.state import CallState
from bridge.settings import build_settings
from bridge.simulate import CallSummary, SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import PeerRecord
from tests.fakes.ami_server import FakeAmiServer
from tests.fakes.asterisk_conf import manager_classes
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, raw_config

AMI_SECRET = "ami-s3cret-inbound"
CALLER = "PJSIP/carrier-0000002a"


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmiServer]:
    classes = manager_classes("bridge")  # read = call, write = originate,call
    async with FakeAmiServer(
        {"bridge": AMI_SECRET}, write={"bridge": classes.write}, read={"bridge": classes.read}
    ) as fake:
        yield fake


@pytest.fixture
async def services(ami: FakeAmiServer) -> AsyncIterator[Services]:
    raw = raw_config(audiosocket={})
    raw["asterisk"] = {
        "control": "ami",
        "ami": {"host": "127.0.0.1", "port": ami.port, "username": "bridge", "secret": AMI_SECRET},
        "originate": {"endpoint": "PJSIP/{to}@trunk", "timeout_seconds": 5},
    }
    started = await start_services(build_settings(raw))
    try:
        yield started
    finally:
        await started.close()


async def api(services: Services, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{services.http_port}{path}"
    async with aiohttp.ClientSession() as http:
        for _ in range(200):  # until the AMI controller has logged in
            async with http.get(f"http://127.0.0.1:{services.http_port}/health") as reply:
                if (await reply.json())["asterisk"] == "ok":
                    break
            await asyncio.sleep(0.02)
        async with http.post(url, json=body, headers={"Authorization": f"Bearer {ACME_KEY}"}) as reply:
            return reply.status, await reply.json()


async def active(services: Services, call_id: str) -> None:
    for _ in range(250):
        session = services.manager.get(call_id)
        if session is not None and session.state is CallState.ACTIVE:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{call_id} never became active")


def inbound_call(services: Services, **overrides: Any) -> SimulatedCallOptions:
    base: dict[str, Any] = {
        "url": f"http://127.0.0.1:{services.http_port}",
        "connector_key": CONNECTOR_KEY,
        "called": ACME_PHONE,
        "seconds": 20,
        "wait_for_bridge_hangup": True,
        "expect_audio": False,
    }
    return SimulatedCallOptions(**(base | overrides))


async def test_audiosocket_inbound_dtmf_and_transfer_act_on_the_marked_caller(
    ami: FakeAmiServer, services: Services
) -> None:
    call_id = str(uuid.uuid4())
    opts = inbound_call(
        services, transport="audiosocket", audiosocket_port=services.audiosocket_port, call_id=call_id
    )
    call = asyncio.create_task(run_simulated_call(opts))
    await active(services, call_id)
    # What [bridge-inbound-audiosocket] leaves in Asterisk: the marked caller bridged to the AudioSocket leg.
    ami.add_channel(CALLER, uniqueid="1796525062.6", variables={"_BRIDGE_CALL_ID": call_id}, bridge_id="b-1")
    ami.add_channel(
        f"AudioSocket/127.0.0.1:{services.audiosocket_port}-{call_id}",
        variables={"BRIDGE_CALL_ID": call_id, "BRIDGEPEER": CALLER},
        bridge_id="b-1",
    )
    status, body = await api(services, f"/api/calls/{call_id}/dtmf", {"digits": "12#"})
    assert status == 200, body
    status, body = await api(services, f"/api/calls/{call_id}/transfer", {"to": "+34911222333"})
    assert status == 200, body
    [lookup] = ami.actions("Status")
    assert lookup.get("Variables") == "BRIDGE_CALL_ID"
    assert [(a.get("Channel"), a.get("Digit")) for a in ami.actions("PlayDTMF")] == [
        (CALLER, "1"),
        (CALLER, "2"),
        (CALLER, "#"),
    ]
    [redirect] = ami.actions("Redirect")
    assert (redirect.get("Channel"), redirect.get("Context"), redirect.get("Exten")) == (
        CALLER,
        "bridge-transfer",
        "+34911222333",
    )
    summary: CallSummary = await asyncio.wait_for(call, 15)
    assert summary.hangup_by == "bridge"  # the bot's leg left the transferred caller
    record = await services.calls.record("acme", call_id)
    assert record is not None
    assert record.transferred_to == "+34911222333"


async def test_websocket_inbound_acts_on_the_media_channels_bridge_peer(
    ami: FakeAmiServer, services: Services
) -> None:
    records: asyncio.Queue[PeerRecord] = asyncio.Queue()
    call_id = "1796525050.2"
    call = asyncio.create_task(run_simulated_call(inbound_call(services, call_id=call_id, records=records)))
    while (record := await asyncio.wait_for(records.get(), 10)).name != "MEDIA_START":
        pass
    media = json.loads(record.detail)["channel"]
    assert re.fullmatch(r"WebSocket/bridge_media/0x[0-9a-f]+", media)
    await active(services, call_id)
    ami.add_channel(CALLER, uniqueid=call_id, variables={"_BRIDGE_CALL_ID": call_id}, bridge_id="b-2")
    ami.add_channel(media, variables={"BRIDGE_CALL_ID": call_id, "BRIDGEPEER": CALLER}, bridge_id="b-2")
    status, body = await api(services, f"/api/calls/{call_id}/dtmf", {"digits": "5"})
    assert status == 200, body
    status, body = await api(services, f"/api/calls/{call_id}/transfer", {"to": "200"})
    assert status == 200, body
    [getvar] = ami.actions("Getvar")
    assert (getvar.get("Channel"), getvar.get("Variable")) == (media, "BRIDGEPEER")
    assert not ami.actions("Status")  # the media channel named the caller: no list needed
    assert [a.get("Channel") for a in ami.actions("PlayDTMF") + ami.actions("Redirect")] == [CALLER, CALLER]
    summary: CallSummary = await asyncio.wait_for(call, 15)
    assert summary.hangup_by == "bridge"
