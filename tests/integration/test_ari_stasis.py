"""AriController with callers that enter Stasis from the dialplan, and outbound answering-machine
detection, against the strict fake ARI server over loopback: the exact requests the fake receives."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from bridge.asterisk.ari import AriController
from bridge.errors import Forbidden
from bridge.session.control import ChannelRef, ControlError, DialOutcome, InboundCall, OriginateRequest
from tests.fakes.ari_server import FakeAriServer, FakeChannel, MediaDial
from tests.integration.ari_support import CALLEE, CALLER, PASSWORD, Factory, controllers, wait_until

CALLED = "34987654321"  # ${EXTEN}, as the dialplan passes it to Stasis()
PHONE = "+34600111555"
NAME = "Alice Caller"


@pytest.fixture
async def fake() -> AsyncIterator[FakeAriServer]:
    async with FakeAriServer(password=PASSWORD) as server:
        yield server


@pytest.fixture
async def start_controller(fake: FakeAriServer) -> AsyncIterator[Factory]:
    async with controllers(fake) as start:
        yield start


class Admissions:
    """The composition root's hook, recording what it was asked; `refusal` makes it refuse."""

    def __init__(self) -> None:
        self.calls: list[InboundCall] = []
        self.refusal: Exception | None = None

    async def __call__(self, call: InboundCall) -> None:
        self.calls.append(call)
        if self.refusal is not None:
            raise self.refusal


async def admitted(fake: FakeAriServer, controller: AriController) -> tuple[FakeChannel, Admissions]:
    admissions = Admissions()
    controller.on_inbound = admissions
    caller = await fake.stasis_caller(CALLED, caller=PHONE, name=NAME)
    bridge_id = f"{caller.id}-bridge"
    await wait_until(lambda: len(fake.bridges.get(bridge_id, [])) == 2, "caller and media bridged")
    return caller, admissions


def paths(fake: FakeAriServer) -> list[str]:
    return [f"{r.method} {r.path}" for r in fake.requests if r.path != "/ari/events"]


# --- inbound through Stasis(<app>,inbound,${EXTEN}) ------------------------------------------------------


async def test_an_admitted_caller_is_answered_and_bridged_with_the_media_socket(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    opened: list[MediaDial] = []
    fake.on_answer = opened.append
    controller = await start_controller()
    caller, admissions = await admitted(fake, controller)

    assert admissions.calls == [InboundCall(caller.id, caller.id, PHONE, "+" + CALLED, NAME)]
    media_id = f"{caller.id}-media"
    assert paths(fake) == [
        f"POST /ari/channels/{caller.id}/answer",
        "POST /ari/channels/externalMedia",
        "POST /ari/bridges",
        f"POST /ari/bridges/{caller.id}-bridge/addChannel",
    ]
    [media] = fake.requests_to("POST", "/ari/channels/externalMedia")
    assert media.query == {
        "app": "bridge",
        "channelId": media_id,
        "external_host": "bridge_media",
        "format": "ulaw",
        "encapsulation": "none",
        "transport": "websocket",
        "connection_type": "client",
        "transport_data": f"f(json)v(callId={caller.id},aNumberE164=34600111555,bNumberE164={CALLED})",
    }
    assert media.body == {
        "variables": {
            "BRIDGE_CALL_ID": caller.id,
            "BRIDGE_FROM": PHONE,
            "BRIDGE_TO": "+" + CALLED,
            "CALLERID(num)": PHONE,
            "CALLERID(name)": NAME,
        }
    }
    [add] = fake.requests_to("POST", f"/ari/bridges/{caller.id}-bridge/addChannel")
    assert add.query == {"channel": f"{caller.id},{media_id}"}
    [socket] = opened
    assert (socket.transport, socket.call_id, socket.channel_id) == ("websocket", caller.id, media_id)
    assert caller.state == "Up"
    # Caller id kept: the caller's connected line is not blanked by the media channel joining.
    assert fake.events_of("ChannelConnectedLine", caller.id) == []
    assert (caller.connected, caller.connected_name) == (PHONE, NAME)
    assert (fake.channels[media_id].connected, fake.channels[media_id].connected_name) == (PHONE, NAME)


async def test_end_transfer_and_dtmf_on_an_inbound_stasis_call(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    caller, _ = await admitted(fake, controller)
    ref = ChannelRef(caller.id, outbound=False, media_channel=fake.channels[f"{caller.id}-media"].name)

    await controller.send_dtmf(ref, "12*#")
    [dtmf] = fake.requests_to("POST", f"/ari/channels/{caller.id}/dtmf")
    assert dtmf.query == {"dtmf": "12*#", "between": "100"}
    assert caller.dtmf_sent == ["12*#"]

    await controller.transfer(ref, "+34911000111")
    [moved] = fake.requests_to("POST", f"/ari/channels/{caller.id}/continue")
    assert moved.query == {"context": "bridge-transfer", "extension": "+34911000111", "priority": "1"}
    await wait_until(lambda: f"{caller.id}-media" not in fake.channels, "media leg hung up")
    await wait_until(lambda: f"{caller.id}-bridge" not in fake.bridges, "bridge destroyed")
    assert fake.channels[caller.id].context == "bridge-transfer"  # the caller lives on in the dialplan
    assert fake.requests_to("DELETE", f"/ari/channels/{caller.id}") == []

    second, _ = await admitted(fake, controller)
    await controller.hangup(ChannelRef(second.id, outbound=False))
    assert fake.requests_to("DELETE", f"/ari/channels/{second.id}")[0].query == {"reason": "normal"}
    await wait_until(lambda: second.id not in fake.channels, "caller hung up")
    await wait_until(lambda: f"{second.id}-media" not in fake.channels, "media leg hung up")
    await wait_until(lambda: f"{second.id}-bridge" not in fake.bridges, "bridge destroyed")


async def test_media_socket_closing_hangs_up_the_inbound_caller(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    caller, _ = await admitted(fake, controller)
    await fake.far_end_hangup(f"{caller.id}-media")  # the bridge hung up its media socket
    await wait_until(lambda: caller.id not in fake.channels, "caller hung up")
    assert fake.requests_to("DELETE", f"/ari/channels/{caller.id}")


async def test_a_refused_caller_continues_to_the_failover(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    admissions = Admissions()
    admissions.refusal = Forbidden("+34600111555 may not call acme", code="caller_not_allowed")
    controller.on_inbound = admissions
    caller = await fake.stasis_caller(CALLED, caller=PHONE, name=NAME)
    await wait_until(lambda: not caller.in_stasis, "left Stasis")

    [failover] = fake.requests_to("POST", f"/ari/channels/{caller.id}/continue")
    assert failover.query == {"context": "human-operator", "extension": "s", "priority": "1"}
    assert paths(fake) == [f"POST /ari/channels/{caller.id}/continue"]  # never answered, no media
    assert fake.channels[caller.id].context == "human-operator"  # alive: a human takes the call
    assert len(admissions.calls) == 1


async def test_failover_context_is_configurable_and_used_without_an_admitter(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller(ari={"failover_context": "reception"})
    caller = await fake.stasis_caller(CALLED)  # on_inbound never set: nothing admits the call
    await wait_until(lambda: not caller.in_stasis, "left Stasis")
    assert fake.channels[caller.id].context == "reception"
    assert controller.on_inbound is None


async def test_a_media_leg_that_fails_sends_the_caller_to_the_failover(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    def refuse(dial: MediaDial) -> None:
        raise ConnectionRefusedError(dial.call_id)

    fake.on_answer = refuse
    controller = await start_controller()
    controller.on_inbound = Admissions()
    caller = await fake.stasis_caller(CALLED)
    await wait_until(lambda: not caller.in_stasis, "left Stasis")
    assert fake.requests_to("POST", f"/ari/channels/{caller.id}/answer")
    [failover] = fake.requests_to("POST", f"/ari/channels/{caller.id}/continue")
    assert failover.query["context"] == "human-operator"
    assert caller.id in fake.channels
    assert fake.requests_to("DELETE", f"/ari/channels/{caller.id}") == []


async def test_a_caller_gone_during_admission_is_not_answered(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    release = asyncio.Event()

    async def slow(call: InboundCall) -> None:
        await release.wait()

    controller.on_inbound = slow
    caller = await fake.stasis_caller(CALLED)
    await fake.far_end_hangup(caller.id)
    await wait_until(lambda: not controller._stasis.knows(caller.id), "the controller saw it leave")
    release.set()
    await wait_until(lambda: not controller._stasis.calls, "nothing left")
    assert fake.requests_to("POST", f"/ari/channels/{caller.id}/answer") == []
    assert fake.requests_to("POST", "/ari/channels/externalMedia") == []


async def test_an_inbound_call_over_audiosocket_media(fake: FakeAriServer, start_controller: Factory) -> None:
    opened: list[MediaDial] = []
    fake.on_answer = opened.append
    controller = await start_controller(
        ari={"media_transport": "audiosocket"}, audiosocket_address="127.0.0.1:9092"
    )
    caller, admissions = await admitted(fake, controller)

    [call] = admissions.calls
    assert call.channel_id == caller.id
    assert str(uuid.UUID(call.call_id)) == call.call_id  # the call is named by its AudioSocket UUID
    [media] = fake.requests_to("POST", "/ari/channels/externalMedia")
    assert media.query == {
        "app": "bridge",
        "channelId": f"{caller.id}-media",
        "external_host": "127.0.0.1:9092",
        "format": "slin16",
        "encapsulation": "audiosocket",
        "transport": "tcp",
        "data": call.call_id,
    }
    assert media.body["variables"]["CALLERID(name)"] == NAME
    [socket] = opened
    assert (socket.transport, socket.call_id) == ("audiosocket", call.call_id)
    assert fake.channels[socket.channel_id].name == f"AudioSocket/127.0.0.1:9092-{call.call_id}"
    assert fake.events_of("ChannelConnectedLine", caller.id) == []

    ref = ChannelRef(call.call_id, outbound=False)  # AudioSocket names no media channel
    await controller.send_dtmf(ref, "5")
    assert caller.dtmf_sent == ["5"]  # API DTMF goes to the caller's channel: AudioSocket carries none
    await controller.transfer(ref, "200")
    assert fake.requests_to("POST", f"/ari/channels/{caller.id}/continue")[0].query["extension"] == "200"
    await wait_until(lambda: socket.channel_id not in fake.channels, "media leg hung up")

    second, more = await admitted(fake, controller)
    await controller.hangup(ChannelRef(more.calls[0].call_id, outbound=False))
    await wait_until(lambda: second.id not in fake.channels, "caller hung up")


async def test_unannounced_channels_in_the_app_are_not_left_in_silence(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller()
    controller.on_inbound = Admissions()
    stray = FakeChannel("1767225800.1", "PJSIP/trunk-00000801", state="Up", app="bridge", subscribed=False)
    await fake.enter_stasis(stray, ["some", "other", "args"])  # a dialplan calling Stasis() another way
    stale = FakeChannel("1767225800.2", "WebSocket/bridge_media/0x7f0000000801", state="Up", app="bridge")
    await fake.enter_stasis(stale, [])  # a media leg whose call is already gone
    await wait_until(lambda: not stray.in_stasis and stale.id not in fake.channels, "both handled")
    assert (
        fake.requests_to("POST", f"/ari/channels/{stray.id}/continue")[0].query["context"] == "human-operator"
    )
    assert fake.requests_to("DELETE", f"/ari/channels/{stale.id}")
    assert fake.requests_to("POST", "/ari/channels/externalMedia") == []


# --- outbound answering-machine detection -----------------------------------------------------------------


async def test_amd_runs_in_the_dialplan_before_the_media_leg(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    opened: list[MediaDial] = []
    fake.on_answer = opened.append
    fake.amd_results["call-a"] = ("MACHINE", "INITIALSILENCE-2500-2500")
    controller = await start_controller()
    result = await controller.originate(OriginateRequest("call-a", CALLER, CALLEE, amd=True))

    assert result.outcome is DialOutcome.ANSWERED
    assert paths(fake) == [
        "POST /ari/channels",
        "POST /ari/channels/call-a/continue",
        "POST /ari/channels/externalMedia",
        "POST /ari/bridges",
        "POST /ari/bridges/call-a-bridge/addChannel",
    ]
    [amd] = fake.requests_to("POST", "/ari/channels/call-a/continue")
    assert amd.query == {"context": "bridge-amd", "extension": "s", "priority": "1"}
    [media] = fake.requests_to("POST", "/ari/channels/externalMedia")
    transport_data = "f(json)v(callId=call-a,aNumberE164=34987654321,bNumberE164=34911222333,amd=MACHINE)"
    assert media.query["transport_data"] == transport_data
    assert opened[0].options["amd"] == "MACHINE"  # what the media socket reads
    assert fake.bridges["call-a-bridge"] == ["call-a", "call-a-media"]
    await controller.hangup(ChannelRef("call-a", outbound=True))  # in Stasis again: fully controllable
    await wait_until(lambda: not fake.channels, "callee and media gone")


async def test_amd_is_only_asked_for_when_the_call_wants_it(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    controller = await start_controller(ari={"amd_context": "my-amd"})
    await controller.originate(OriginateRequest("call-b", CALLER, CALLEE))
    assert fake.requests_to("POST", "/ari/channels/call-b/continue") == []
    assert "amd=" not in fake.requests_to("POST", "/ari/channels/externalMedia")[0].query["transport_data"]
    fake.amd_context = "my-amd"
    result = await controller.originate(OriginateRequest("call-c", CALLER, CALLEE, amd=True))
    assert result.outcome is DialOutcome.ANSWERED
    assert fake.requests_to("POST", "/ari/channels/call-c/continue")[0].query["context"] == "my-amd"


async def test_a_callee_hanging_up_during_amd_fails_the_dial(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    fake.amd_results["call-d"] = ("HANGUP", "")
    controller = await start_controller()
    result = await controller.originate(OriginateRequest("call-d", CALLER, CALLEE, amd=True))
    assert result.outcome is DialOutcome.FAILED
    assert "AMD" in result.reason
    assert fake.requests_to("POST", "/ari/channels/externalMedia") == []


async def test_no_amd_result_in_time_hangs_the_callee_up(
    fake: FakeAriServer, start_controller: Factory
) -> None:
    fake.amd_context = "somewhere-else"  # the callee never comes back into Stasis
    controller = await start_controller(amd_timeout=0.2)
    result = await controller.originate(OriginateRequest("call-e", CALLER, CALLEE, amd=True))
    assert result.outcome is DialOutcome.FAILED
    assert "AMD gave no result" in result.reason
    assert fake.requests_to("DELETE", "/ari/channels/call-e")
    await wait_until(lambda: "call-e" not in fake.channels, "callee hung up")


async def test_amd_needs_websocket_media(fake: FakeAriServer, start_controller: Factory) -> None:
    controller = await start_controller(ari={"media_transport": "audiosocket"})
    call_id = str(uuid.uuid4())
    with pytest.raises(ControlError) as caught:
        await controller.originate(OriginateRequest(call_id, CALLER, CALLEE, amd=True))
    assert caught.value.code == "amd_unsupported"
    assert fake.requests_to("POST", "/ari/channels") == []
