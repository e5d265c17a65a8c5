"""ARI mode end to end: the real bridge (start_services) against the fake ARI server. A caller enters the
Stasis app as `[bridge-inbound-ari]` makes it; when the fake dials the media socket (externalMedia), the
simulated Asterisk peer opens it over chan_websocket or AudioSocket, and hangs the media channel up when
its socket closes, as Asterisk does. The call is then controlled from the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.session.state import CallState
from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, SimulatedCallOptions, run_simulated_call
from tests.fakes.ari_server import FakeAriServer, MediaDial
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, GLOBEX_PHONE, free_port, raw_config, utterances
from tests.integration.ari_support import PASSWORD, wait_until

CALLER = "+15551230001"


def ari_settings(fake: FakeAriServer, transport: str = "websocket", audiosocket_port: int = 0) -> Settings:
    raw = raw_config(audiosocket={"port": audiosocket_port} if audiosocket_port else None)
    raw["asterisk"] = {
        "control": "ari",
        "ari": {"url": fake.url, "username": "bridge", "password": PASSWORD, "media_transport": transport},
    }
    return build_settings(raw)


class Bridge:
    def __init__(self, services: Services, http: aiohttp.ClientSession) -> None:
        self.services = services
        self.http = http
        self.base = f"http://127.0.0.1:{services.http_port}"
        self.peers: list[asyncio.Task[CallSummary]] = []

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {ACME_KEY}"}
        async with self.http.request(method, self.base + path, headers=headers, **kwargs) as reply:
            return reply.status, await reply.json()

    async def wait_active(self, call_id: str) -> None:
        def active() -> bool:
            session = self.services.manager.get(call_id)
            return session is not None and session.state is CallState.ACTIVE

        await wait_until(active, f"call {call_id} active", timeout=10)

    async def wait_over(self, call_id: str) -> Any:
        session = self.services.manager.get(call_id)
        if session is not None:
            await asyncio.wait_for(session.ended.wait(), 15)
        return await self.services.calls.record("acme", call_id)

    def answer_media(self, fake: FakeAriServer) -> None:
        """Asterisk's side of each externalMedia channel: the media socket, then the channel's hangup."""

        def on_answer(dial: MediaDial) -> None:
            audiosocket = dial.transport == "audiosocket"
            rate = 16000 if audiosocket else 8000
            options = SimulatedCallOptions(
                url=self.base,
                call_id=dial.call_id,
                connector_key=CONNECTOR_KEY,  # websocket_client.conf's password
                transport="audiosocket" if audiosocket else "chan_websocket",
                send_webhook=False,
                caller="+" + dial.options.get("aNumberE164", ""),
                called="+" + dial.options.get("bNumberE164", ""),
                format="slin16" if audiosocket else "ulaw",
                audiosocket_port=self.services.audiosocket_port or 0,
                audio=AudioSource(pcm=utterances(rate, [(0.3, 1.5)]), sample_rate=rate),
                seconds=30,
                wait_for_bridge_hangup=True,
            )

            async def media_socket() -> CallSummary:
                try:
                    return await run_simulated_call(options)
                finally:
                    if dial.channel_id in fake.channels:
                        await fake.far_end_hangup(dial.channel_id)

            self.peers.append(asyncio.ensure_future(media_socket()))

        fake.on_answer = on_answer


@pytest.fixture
async def fake() -> AsyncIterator[FakeAriServer]:
    async with FakeAriServer(password=PASSWORD) as server:
        yield server


async def started(settings: Settings) -> AsyncIterator[Bridge]:
    services = await start_services(settings)
    peers: list[asyncio.Task[CallSummary]] = []
    try:
        async with aiohttp.ClientSession() as http:
            bridge = Bridge(services, http)
            peers = bridge.peers
            await wait_until(
                lambda: services.controller is not None and services.controller.health == "ok", "ARI up"
            )
            yield bridge
    finally:
        await services.close()  # closes what media sockets are left; a failed test's peers end with it
        for peer in peers:
            peer.cancel()
        await asyncio.gather(*peers, return_exceptions=True)


@pytest.fixture
async def bridge(fake: FakeAriServer) -> AsyncIterator[Bridge]:
    async for running in started(ari_settings(fake)):
        yield running


@pytest.fixture
async def audiosocket_bridge(fake: FakeAriServer) -> AsyncIterator[Bridge]:
    async for running in started(ari_settings(fake, "audiosocket", free_port())):
        yield running


async def test_a_stasis_caller_is_admitted_and_controlled_over_chan_websocket(
    fake: FakeAriServer, bridge: Bridge
) -> None:
    bridge.answer_media(fake)
    caller = await fake.stasis_caller(ACME_PHONE.removeprefix("+"), caller=CALLER, name="Bob Caller")
    call_id = caller.id  # the caller channel's id names the call
    await bridge.wait_active(call_id)
    session = bridge.services.manager.get(call_id)
    assert session is not None
    assert (session.company_id, session.info.direction) == ("acme", "inbound")
    assert (session.info.caller, session.info.called, session.info.caller_name) == (
        CALLER,
        ACME_PHONE,
        "Bob Caller",
    )
    assert fake.events_of("ChannelConnectedLine", caller.id) == []  # caller id kept

    status, body = await bridge.call("POST", f"/api/calls/{call_id}/dtmf", json={"digits": "12#"})
    assert status == 200, body
    assert caller.dtmf_sent == ["12#"]
    status, body = await bridge.call("POST", f"/api/calls/{call_id}/transfer", json={"to": "+34911222333"})
    assert status == 200, body
    [moved] = fake.requests_to("POST", f"/ari/channels/{caller.id}/continue")
    assert moved.query == {"context": "bridge-transfer", "extension": "+34911222333", "priority": "1"}
    record = await bridge.wait_over(call_id)
    assert record.disconnected_by == "api"
    await wait_until(lambda: f"{caller.id}-media" not in fake.channels, "media leg gone")
    assert fake.channels[caller.id].context == "bridge-transfer"  # transferred, not hung up


async def test_ending_a_stasis_call_hangs_the_caller_up(fake: FakeAriServer, bridge: Bridge) -> None:
    bridge.answer_media(fake)
    caller = await fake.stasis_caller(ACME_PHONE.removeprefix("+"), caller=CALLER)
    await bridge.wait_active(caller.id)
    status, body = await bridge.call("POST", f"/api/calls/{caller.id}/end")
    assert status == 200, body
    summary = await asyncio.wait_for(bridge.peers[0], 20)
    assert summary.hangup_by == "bridge"
    await wait_until(lambda: caller.id not in fake.channels, "caller hung up with the media leg")
    assert fake.requests_to("DELETE", f"/ari/channels/{caller.id}")
    record = await bridge.wait_over(caller.id)
    assert record.disconnected_by == "api"


@pytest.mark.parametrize(
    ("called", "caller"),
    [(GLOBEX_PHONE, "+15550000000"), ("+34999999999", CALLER)],
    ids=["caller_not_allowed", "unknown_number"],
)
async def test_a_refused_stasis_caller_goes_to_a_human(
    fake: FakeAriServer, bridge: Bridge, called: str, caller: str
) -> None:
    channel = await fake.stasis_caller(called.removeprefix("+"), caller=caller)
    await wait_until(lambda: not channel.in_stasis, "left the app")
    assert fake.channels[channel.id].context == "human-operator"
    assert fake.requests_to("POST", f"/ari/channels/{channel.id}/answer") == []
    assert bridge.services.manager.get(channel.id) is None


async def test_a_stasis_caller_over_audiosocket_media(
    fake: FakeAriServer, audiosocket_bridge: Bridge
) -> None:
    bridge = audiosocket_bridge
    bridge.answer_media(fake)
    caller = await fake.stasis_caller(ACME_PHONE.removeprefix("+"), caller=CALLER)
    await wait_until(lambda: bool(fake.requests_to("POST", "/ari/channels/externalMedia")), "media leg asked")
    [media] = fake.requests_to("POST", "/ari/channels/externalMedia")
    call_id = media.query["data"]  # the AudioSocket UUID names the call
    assert media.query["external_host"] == f"127.0.0.1:{bridge.services.audiosocket_port}"
    await bridge.wait_active(call_id)
    session = bridge.services.manager.get(call_id)
    assert session is not None
    assert (session.company_id, session.info.caller) == ("acme", CALLER)

    status, body = await bridge.call("POST", f"/api/calls/{call_id}/dtmf", json={"digits": "7"})
    assert status == 200, body
    assert caller.dtmf_sent == ["7"]  # on the caller's channel: AudioSocket carries no DTMF to Asterisk
    status, body = await bridge.call("POST", f"/api/calls/{call_id}/end")
    assert status == 200, body
    await wait_until(lambda: caller.id not in fake.channels, "caller hung up with the media leg", timeout=15)
    record = await bridge.wait_over(call_id)
    assert record.disconnected_by == "api"
