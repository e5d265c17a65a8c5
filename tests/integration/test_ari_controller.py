"""AriController against the strict fake ARI server, over real loopback sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from bridge.asterisk.ari import AriController
from bridge.session.control import ChannelRef, ControlError, ControllerHealth, DialOutcome, OriginateRequest
from bridge.settings import AriSettings, OriginateSettings
from tests.fakes.ari_server import FakeAriServer, FakeChannel, MediaDial, Script
from tests.integration.ari_support import AUTH, CALLEE, CALLER, PASSWORD, Factory, controllers, wait_until


@pytest.fixture
async def fake() -> AsyncIterator[FakeAriServer]:
    async with FakeAriServer(password=PASSWORD) as server:
        yield server


@pytest.fixture
async def start_controller(fake: FakeAriServer) -> AsyncIterator[Factory]:
    async with controllers(fake) as start:
        yield start


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
    opened: list[MediaDial] = []
    fake.on_answer = opened.append
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
    # The media channel carries the trunk leg's own caller id, so the bridge leaves its identity alone.
    assert media.body == {"variables": {**variables, "CALLERID(num)": CALLER, "CALLERID(name)": ""}}
    [socket] = opened
    assert (socket.transport, socket.call_id, socket.channel_id) == ("websocket", "call-1", "call-1-media")
    assert socket.options == {"callId": "call-1", "aNumberE164": "34987654321", "bNumberE164": "34911222333"}
    assert socket.variables == {
        **variables,
        "MEDIA_WEBSOCKET_CONNECTION_ID": "bridge_media",
        "DIALSTRING": f"bridge_media/{media.query['transport_data']}",
    }
    assert [r.query for r in fake.requests_to("POST", "/ari/bridges")] == [
        {"type": "mixing", "bridgeId": "call-1-bridge"}
    ]
    [add] = fake.requests_to("POST", "/ari/bridges/call-1-bridge/addChannel")
    assert add.query == {"channel": "call-1,call-1-media"}
    assert fake.bridges["call-1-bridge"] == ["call-1", "call-1-media"]
    assert fake.requests_to("POST", "/ari/channels/call-1/continue") == []  # the callee stays in Stasis
    assert fake.events_of("ChannelConnectedLine", "call-1") == []  # the callee's identity untouched
    assert (fake.channels["call-1"].connected, fake.channels["call-1-media"].connected) == (CALLER, CALLER)

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
    def refuse(dial: MediaDial) -> None:
        raise ConnectionRefusedError(dial.call_id)

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


AUDIOSOCKET_UUID = "5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"


async def test_dialplan_audiosocket_inbound_is_found_by_its_uuid(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    # [bridge-inbound-audiosocket]: the call id is the UUID, the media leg names no channel.
    media = FakeChannel("1767225600.21", f"AudioSocket/127.0.0.1:9092-{AUDIOSOCKET_UUID}")
    fake.add_inbound_call(FakeChannel("1767225600.20", "PJSIP/trunk-00000020"), media)
    controller = await start_controller()
    ref = ChannelRef(AUDIOSOCKET_UUID, outbound=False)
    with pytest.raises(ControlError) as caught:
        await controller.send_dtmf(ref, "1")
    assert caught.value.code == "channel_not_in_stasis"
    assert "dialplan" in str(caught.value)  # says why, and that hangup still works
    [tried] = fake.requests_to("POST", "/ari/channels/1767225600.20/dtmf")
    assert tried.query == {"dtmf": "1", "between": "100"}
    await controller.hangup(ref)
    assert fake.requests_to("DELETE", "/ari/channels/1767225600.20")
    await wait_until(lambda: "1767225600.20" not in fake.channels, "caller hung up")


async def test_ring_timeout_of_the_request_wins(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller()
    request = OriginateRequest("call-8", CALLER, CALLEE, ring_timeout_seconds=7.5)
    assert (await controller.originate(request)).outcome is DialOutcome.ANSWERED
    [dial] = fake.requests_to("POST", "/ari/channels")
    assert dial.query["timeout"] == "8"


async def test_outbound_with_audiosocket_media(fake: FakeAriServer, start_controller: Factory) -> None:
    opened: list[MediaDial] = []
    fake.on_answer = opened.append
    controller = await start_controller(
        ari={"media_transport": "audiosocket"}, audiosocket_address="10.0.0.5:9092"
    )
    with pytest.raises(ControlError) as caught:
        await controller.originate(OriginateRequest("call-9", CALLER, CALLEE))
    assert caught.value.code == "originate_failed"  # the AudioSocket leg is named by a UUID
    assert fake.requests_to("POST", "/ari/channels") == []

    result = await controller.originate(OriginateRequest(AUDIOSOCKET_UUID, CALLER, CALLEE))
    assert result.outcome is DialOutcome.ANSWERED
    [media] = fake.requests_to("POST", "/ari/channels/externalMedia")
    assert media.query == {
        "app": "bridge",
        "channelId": f"{AUDIOSOCKET_UUID}-media",
        "external_host": "10.0.0.5:9092",
        "format": "slin16",
        "encapsulation": "audiosocket",
        "transport": "tcp",
        "data": AUDIOSOCKET_UUID,
    }
    assert media.body["variables"]["CALLERID(num)"] == CALLER
    [socket] = opened
    assert (socket.transport, socket.call_id) == ("audiosocket", AUDIOSOCKET_UUID)
    assert fake.channels[socket.channel_id].name == f"AudioSocket/10.0.0.5:9092-{AUDIOSOCKET_UUID}"
    ref = ChannelRef(AUDIOSOCKET_UUID, outbound=True)
    await controller.send_dtmf(ref, "4")
    assert fake.channels[AUDIOSOCKET_UUID].dtmf_sent == ["4"]  # on the callee: AudioSocket carries none
    await controller.transfer(ref, "200")
    await wait_until(lambda: f"{AUDIOSOCKET_UUID}-media" not in fake.channels, "media leg hung up")
    assert fake.channels[AUDIOSOCKET_UUID].context == "bridge-transfer"
