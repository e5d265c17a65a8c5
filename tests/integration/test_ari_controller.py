"""AriController against the strict fake ARI server, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.asterisk.ari import AriController
from bridge.session.control import ChannelRef, ControlError, ControllerHealth, DialOutcome, OriginateRequest
from bridge.settings import AriSettings, OriginateSettings
from tests.fakes.ari_server import FakeAriServer, FakeChannel, Script

PASSWORD = "ari-secret-value"
CALLER = "+34987654321"
CALLEE = "+34911222333"
AUTH = {"Authorization": aiohttp.encode_basic_auth("bridge", PASSWORD)}
Factory = Callable[..., Awaitable[AriController]]


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.005)
    assert predicate(), what


@pytest.fixture
async def fake() -> AsyncIterator[FakeAriServer]:
    async with FakeAriServer(password=PASSWORD) as server:
        yield server


@pytest.fixture
async def start_controller(fake: FakeAriServer) -> AsyncIterator[Factory]:
    started: list[AriController] = []

    async def start(*, password: str = PASSWORD, wait_ok: bool = True, **options: Any) -> AriController:
        ari = AriSettings(url=fake.url + "/", username="bridge", password=SecretStr(password), app="bridge")
        originate = OriginateSettings(endpoint="PJSIP/{to}@trunk", timeout_seconds=20)
        options = {"action_timeout": 2.0, "reconnect_initial": 0.02, "reconnect_max": 0.2, **options}
        controller = AriController(ari, originate, "bridge-transfer", **options)
        started.append(controller)
        await controller.start()
        if wait_ok:
            await wait_until(lambda: controller.health is ControllerHealth.OK, "events socket up")
        return controller

    yield start
    for controller in started:
        await controller.close()


def events_attempts(fake: FakeAriServer) -> int:
    return len(fake.requests_to("GET", "/ari/events"))


async def answered_call(fake: FakeAriServer, controller: AriController, call_id: str = "call-1") -> None:
    result = await controller.originate(OriginateRequest(call_id, CALLER, CALLEE))
    assert result.outcome is DialOutcome.ANSWERED
    await wait_until(lambda: len(fake.bridges.get(f"{call_id}-bridge", [])) == 2, "both legs bridged")


# --- health ---------------------------------------------------------------------------------------------


async def test_health_is_ok_once_the_events_socket_is_up(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    assert "bridge" in fake.consumers
    first = fake.requests_to("GET", "/ari/events")[0]
    assert first.query == {"app": "bridge", "subscribeAll": "false"}
    await controller.close()
    assert controller.health is ControllerHealth.DOWN
    await wait_until(lambda: "bridge" not in fake.consumers, "socket closed")


async def test_health_stays_down_until_the_socket_was_ever_up(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    fake.refuse_events = True
    controller = await start_controller(wait_ok=False)
    assert controller.health is ControllerHealth.DOWN  # start() returned at once
    await wait_until(lambda: events_attempts(fake) >= 3, "retries")
    assert controller.health is ControllerHealth.DOWN
    fake.refuse_events = False
    await wait_until(lambda: controller.health is ControllerHealth.OK, "connected at last")


async def test_wrong_password_is_down_and_never_logged(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    with capture_logs() as logs:
        controller = await start_controller(password="wrong-password-123", wait_ok=False)
        await wait_until(lambda: events_attempts(fake) >= 2, "retries")
        assert controller.health is ControllerHealth.DOWN
        with pytest.raises(ControlError) as caught:
            await controller.originate(OriginateRequest("c1", CALLER, CALLEE))
    assert caught.value.code == "asterisk_unavailable"
    [entry] = [entry for entry in logs if entry["event"] == "ari_health"]  # logged once, not per retry
    assert (entry["health"], entry["reason"]) == ("down", "events socket refused: 401")
    assert "wrong-password-123" not in repr(logs)
    assert PASSWORD not in repr(logs)


async def test_lost_events_socket_degrades_then_recovers(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    with capture_logs() as logs:
        controller = await start_controller()
        fake.refuse_events = True
        await fake.drop_events()
        await wait_until(lambda: controller.health is ControllerHealth.DEGRADED, "degraded")
        await wait_until(lambda: events_attempts(fake) >= 4, "retrying")
        assert controller.health is ControllerHealth.DEGRADED  # was up once: not DOWN
        fake.refuse_events = False
        await wait_until(lambda: controller.health is ControllerHealth.OK, "reconnected")
    assert fake.connections == 2
    changes = [entry["health"] for entry in logs if entry["event"] == "ari_health"]
    assert changes == ["ok", "degraded", "ok"]  # each change logged once, not once per retry


async def test_another_consumer_replacing_ours(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    async with (
        aiohttp.ClientSession(headers=AUTH) as session,
        session.ws_connect(fake.url + "/ari/events", params={"app": "bridge"}) as intruder,
    ):
        fake.refuse_events = True  # hold our controller off while we look at it
        await wait_until(lambda: controller.health is ControllerHealth.DOWN, "replaced = down")
        seen = events_attempts(fake)
        await wait_until(lambda: events_attempts(fake) > seen, "retried later")
        assert controller.health is ControllerHealth.DOWN
        fake.refuse_events = False
        await wait_until(lambda: controller.health is ControllerHealth.OK, "took the app back")
        message = await intruder.receive_json(timeout=5)
        assert message["type"] == "ApplicationReplaced"


# --- originate --------------------------------------------------------------------------------------------


async def test_originate_answered_bridges_the_media_socket(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    opened: list[tuple[str, dict[str, str]]] = []
    fake.on_answer = lambda call_id, variables: opened.append((call_id, variables))
    controller = await start_controller()
    request = OriginateRequest("call-1", CALLER, CALLEE, {"COMPANY": "acme"})
    result = await controller.originate(request)

    assert result.outcome is DialOutcome.ANSWERED
    assert result.channel.startswith("PJSIP/trunk-")
    variables = {"BRIDGE_CALL_ID": "call-1", "BRIDGE_FROM": CALLER, "BRIDGE_TO": CALLEE, "COMPANY": "acme"}
    [dial] = fake.requests_to("POST", "/ari/channels")
    assert dial.query == {
        "endpoint": "PJSIP/34911222333@trunk",
        "app": "bridge",
        "channelId": "call-1",
        "callerId": f"<{CALLER}>",
        "timeout": "20",
    }
    assert dial.body == {"variables": variables}
    [media] = fake.requests_to("POST", "/ari/channels/externalMedia")
    assert media.query == {
        "app": "bridge",
        "external_host": "bridge_media",
        "format": "ulaw",
        "encapsulation": "none",
        "transport": "websocket",
        "connection_type": "client",
        "transport_data": "f(json)v(callId=call-1,aNumberE164=34987654321,bNumberE164=34911222333)",
        "channelId": "call-1-media",
    }
    assert media.body == {"variables": variables}
    assert opened == [
        (
            "call-1",
            {
                **variables,
                "MEDIA_WEBSOCKET_CONNECTION_ID": "bridge_media",
                "DIALSTRING": f"bridge_media/{media.query['transport_data']}",
            },
        )
    ]
    assert [r.query for r in fake.requests_to("POST", "/ari/bridges")] == [
        {"type": "mixing", "bridgeId": "call-1-bridge"}
    ]
    [add] = fake.requests_to("POST", "/ari/bridges/call-1-bridge/addChannel")
    assert add.query == {"channel": "call-1,call-1-media"}
    assert fake.bridges["call-1-bridge"] == ["call-1", "call-1-media"]
    assert fake.requests_to("POST", "/ari/channels/call-1/continue") == []  # the callee stays in Stasis

    await controller.hangup(ChannelRef("call-1", outbound=True))
    assert fake.requests_to("DELETE", "/ari/channels/call-1")[0].query == {"reason": "normal"}
    await wait_until(
        lambda: not fake.channels and "call-1-bridge" not in fake.bridges, "media and bridge gone"
    )
    assert controller.last_hangup_cause("call-1") == 16


@pytest.mark.parametrize(
    ("script", "outcome", "cause"),
    [
        (Script.BUSY, DialOutcome.BUSY, 17),
        (Script.NO_ANSWER, DialOutcome.NO_ANSWER, 19),
        (Script.TIMEOUT, DialOutcome.NO_ANSWER, 0),
        (Script.CONGESTION, DialOutcome.CONGESTION, 34),
        (Script.REJECT, DialOutcome.REJECTED, 21),
    ],
)
async def test_originate_failures(
    fake: FakeAriServer, start_controller: Factory, script: Script, outcome: DialOutcome, cause: int
) -> None:
    fake.scripts["34911222333"] = script
    controller = await start_controller()
    result = await controller.originate(OriginateRequest("call-2", CALLER, CALLEE))
    assert result.outcome is outcome
    assert f"cause={cause}" in result.reason
    assert result.channel.startswith("PJSIP/trunk-")
    assert controller.last_hangup_cause("call-2") == cause
    assert fake.requests_to("POST", "/ari/channels/externalMedia") == []


async def test_duplicate_channel_id_is_refused(fake: FakeAriServer, start_controller: Factory) -> None:
    fake.channels["dup"] = FakeChannel("dup", "PJSIP/trunk-00000001", state="Up")
    controller = await start_controller()
    with pytest.raises(ControlError) as caught:
        await controller.originate(OriginateRequest("dup", CALLER, CALLEE))
    assert caught.value.code == "originate_failed"
    assert "409" in str(caught.value)
    assert (
        await controller.originate(OriginateRequest("fresh", CALLER, CALLEE))
    ).outcome is DialOutcome.ANSWERED


async def test_read_only_user_gets_permission_denied(start_controller: Factory) -> None:
    async with FakeAriServer(password=PASSWORD, read_only=True) as server:
        ari = AriSettings(url=server.url, username="bridge", password=SecretStr(PASSWORD))
        controller = AriController(ari, OriginateSettings(), "bridge-transfer", reconnect_initial=0.02)
        await controller.start()
        try:
            await wait_until(lambda: controller.health is ControllerHealth.OK, "GET is allowed")
            with pytest.raises(ControlError) as caught:
                await controller.originate(OriginateRequest("c1", CALLER, CALLEE))
            assert caught.value.code == "permission_denied"
        finally:
            await controller.close()


async def test_media_socket_refused_hangs_up_the_callee(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    def refuse(call_id: str, variables: dict[str, str]) -> None:
        raise ConnectionRefusedError(call_id)

    fake.on_answer = refuse
    controller = await start_controller()
    result = await controller.originate(OriginateRequest("call-3", CALLER, CALLEE))
    assert result.outcome is DialOutcome.FAILED
    assert "no media" in result.reason
    assert fake.requests_to("DELETE", "/ari/channels/call-3")
    assert "call-3" not in fake.channels


async def test_hangup_while_ringing_cancels_the_dial(fake: FakeAriServer, start_controller: Factory) -> None:
    fake.scripts["34911222333"] = Script.RING
    controller = await start_controller()
    dialing = asyncio.create_task(controller.originate(OriginateRequest("call-4", CALLER, CALLEE)))
    await wait_until(
        lambda: "call-4" in fake.channels and fake.channels["call-4"].state == "Ringing", "ringing"
    )
    await controller.hangup(ChannelRef("call-4", outbound=True))
    result = await dialing
    assert result.outcome is DialOutcome.FAILED
    assert result.reason.startswith("cancelled")


async def test_events_lost_during_the_dial_are_reconciled(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    fake.scripts["34911222333"] = Script.DROP_THEN_ANSWER
    controller = await start_controller()
    result = await controller.originate(OriginateRequest("call-5", CALLER, CALLEE))
    assert result.outcome is DialOutcome.ANSWERED
    assert fake.connections == 2
    assert fake.requests_to("GET", "/ari/channels/call-5")
    assert fake.bridges["call-5-bridge"] == ["call-5", "call-5-media"]


async def test_an_unresponsive_asterisk_is_an_action_timeout(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    fake.stall.add("/ari/channels")
    controller = await start_controller(action_timeout=0.2)
    with pytest.raises(ControlError) as caught:
        await controller.originate(OriginateRequest("call-6", CALLER, CALLEE))
    assert caught.value.code == "action_timeout"


# --- established outbound calls ---------------------------------------------------------------------------


async def test_transfer_continues_the_callee_and_drops_the_media(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    await answered_call(fake, controller)
    await controller.transfer(ChannelRef("call-1", outbound=True), "+34911000111")
    [moved] = fake.requests_to("POST", "/ari/channels/call-1/continue")
    assert moved.query == {"context": "bridge-transfer", "extension": "+34911000111", "priority": "1"}
    await wait_until(lambda: "call-1-media" not in fake.channels, "media leg hung up")
    await wait_until(lambda: "call-1-bridge" not in fake.bridges, "bridge destroyed")
    assert fake.channels["call-1"].context == "bridge-transfer"  # the transferred callee lives on
    assert fake.requests_to("DELETE", "/ari/channels/call-1") == []


async def test_dtmf_goes_to_the_callee(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    await answered_call(fake, controller)
    await controller.send_dtmf(ChannelRef("call-1", outbound=True), "12#A")
    [sent] = fake.requests_to("POST", "/ari/channels/call-1/dtmf")
    assert sent.query == {"dtmf": "12#A", "between": "100"}
    assert fake.channels["call-1"].dtmf_sent == ["12#A"]
    with pytest.raises(ControlError) as caught:
        await controller.send_dtmf(ChannelRef("call-1", outbound=True), "12x")
    assert caught.value.code == "invalid_digits"
    assert len(fake.requests_to("POST", "/ari/channels/call-1/dtmf")) == 1


async def test_callee_hangup_removes_media_and_bridge(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    await answered_call(fake, controller)
    await fake.far_end_hangup("call-1", cause=16)
    await wait_until(lambda: not fake.channels and not fake.bridges, "everything gone")
    assert fake.requests_to("DELETE", "/ari/channels/call-1-media")
    assert controller.last_hangup_cause("call-1") == 16


async def test_media_socket_closing_hangs_up_the_callee(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    await answered_call(fake, controller)
    await fake.far_end_hangup("call-1-media", cause=16)
    await wait_until(lambda: "call-1" not in fake.channels, "callee hung up")
    assert fake.requests_to("DELETE", "/ari/channels/call-1")


async def test_operations_on_a_vanished_call(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    gone = ChannelRef("nope", outbound=True)
    for action in (
        controller.hangup(gone),
        controller.send_dtmf(gone, "1"),
        controller.transfer(gone, "100"),
    ):
        with pytest.raises(ControlError) as caught:
            await action
        assert caught.value.code == "channel_not_found"


# --- inbound calls (dialplan Dial(WebSocket/..), outside Stasis) ------------------------------------------


def inbound(fake: FakeAriServer) -> ChannelRef:
    media_name = "WebSocket/bridge_media/0x7f0000000042"
    fake.add_inbound_call(
        FakeChannel("1767225600.7", "PJSIP/trunk-00000007"), FakeChannel("1767225600.8", media_name)
    )
    fake.channels["1767225600.9"] = FakeChannel("1767225600.9", "PJSIP/other-00000009", state="Up")
    return ChannelRef("in-1", outbound=False, media_channel=media_name)


async def test_inbound_hangup_finds_the_caller_through_bridgepeer(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    ref = inbound(fake)
    await controller.hangup(ref)
    [lookup] = fake.requests_to("GET", "/ari/channels/1767225600.8/variable")
    assert lookup.query == {"variable": "BRIDGEPEER"}
    assert fake.requests_to("DELETE", "/ari/channels/1767225600.7")
    await wait_until(lambda: "1767225600.7" not in fake.channels, "caller hung up")
    assert "1767225600.9" in fake.channels


async def test_inbound_transfer_and_dtmf_need_stasis(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    ref = inbound(fake)
    with pytest.raises(ControlError) as caught:
        await controller.transfer(ref, "+34911000111")
    assert caught.value.code == "channel_not_in_stasis"
    assert fake.requests_to("POST", "/ari/channels/1767225600.7/continue")
    with pytest.raises(ControlError) as caught:
        await controller.send_dtmf(ref, "5")
    assert caught.value.code == "channel_not_in_stasis"


async def test_inbound_without_a_known_media_channel(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    for ref in (
        ChannelRef("in-2", outbound=False),
        ChannelRef("in-2", outbound=False, media_channel="WebSocket/x/1"),
    ):
        with pytest.raises(ControlError) as caught:
            await controller.hangup(ref)
        assert caught.value.code == "channel_not_found"


# --- the fake itself is strict ------------------------------------------------------------------------------


async def test_fake_ari_is_strict(fake: FakeAriServer) -> None:
    base = fake.url + "/ari"
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(base + "/channels") as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Asterisk REST Interface"'
        async with anonymous.get(base + "/channels", params={"api_key": f"bridge:{PASSWORD}"}) as response:
            assert response.status == 200
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def status(method: str, path: str, **kwargs: Any) -> int:
            async with session.request(method, base + path, **kwargs) as response:
                return response.status

        assert await status("GET", "/channels/") == 404
        assert await status("POST", "/channels", params={"app": "bridge"}) == 400  # no endpoint
        both = {"endpoint": "PJSIP/1@trunk", "app": "bridge", "context": "x"}
        assert await status("POST", "/channels", params=both) == 400
        assert (
            await status(
                "POST", "/channels", params={"endpoint": "PJSIP/1@trunk", "app": "a", "timeout": "x"}
            )
            == 400
        )
        assert (
            await status("POST", "/channels", params={"endpoint": "PJSIP/1@trunk", "app": "a", "bogus": "1"})
            == 400
        )
        bad_vars = {"variables": {"A": 1}}
        assert (
            await status("POST", "/channels", params={"endpoint": "PJSIP/1@t", "app": "a"}, json=bad_vars)
            == 400
        )
        assert await status("DELETE", "/channels/unknown") == 404
        fake.channels["x"] = FakeChannel("x", "PJSIP/t-1", state="Up")
        assert await status("DELETE", "/channels/x", params={"reason": "whatever"}) == 400
        assert await status("POST", "/channels/x/dtmf", params={"dtmf": "1"}) == 409
        assert await status("POST", "/channels/x/continue") == 409
        assert await status("POST", "/channels/x/redirect", params={"endpoint": "PJSIP/2"}) == 409
        assert await status("POST", "/channels/x/variable", params={"variable": "A", "value": "1"}) == 409
        assert await status("GET", "/channels/x/variable", params={"variable": "A"}) == 404
        fake.channels["x"].in_stasis = True
        assert await status("POST", "/channels/x/redirect", params={"endpoint": "SIP/2"}) == 422
        fake.channels["x"].state = "Ringing"
        assert await status("POST", "/channels/x/dtmf", params={"dtmf": "1"}) == 412
