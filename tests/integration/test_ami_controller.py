"""AmiController (panoramisk 1.4) against the strict fake AMI server over real loopback sockets."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

import bridge.asterisk.ami as ami_module
from bridge.asterisk.ami import AmiController
from bridge.asterisk.ami_mapping import HangupCause
from bridge.session.control import (
    ChannelRef,
    ControlError,
    ControllerHealth,
    DialOutcome,
    OriginateRequest,
)
from bridge.settings import AmiSettings, OriginateSettings
from tests.fakes.ami_server import DialScript, FakeAmiServer, Outcome
from tests.fakes.asterisk_conf import manager_classes

SECRET = "ami-secret-7f3a"
LOWLY = "lowly"  # an AMI user without the originate class
TO = "+15552223333"
FROM = "+15550001111"

Factory = Callable[..., AmiController]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


def health(controller: AmiController) -> ControllerHealth:
    return controller.health  # a call, so mypy does not narrow it across awaits


def request(
    call_id: str = "call-1", to: str = TO, *, amd: bool = False, ring: float | None = None, **variables: str
) -> OriginateRequest:
    return OriginateRequest(
        call_id=call_id,
        from_number=FROM,
        to_number=to,
        variables=variables,
        amd=amd,
        ring_timeout_seconds=ring,
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({"bridge": SECRET, LOWLY: "pw"}, write={LOWLY: ["call"]}) as server:
        yield server


@pytest.fixture
async def make(fake: FakeAmiServer) -> AsyncIterator[Factory]:
    made: list[AmiController] = []

    def factory(
        *,
        port: int | None = None,
        username: str = "bridge",
        secret: str = SECRET,
        timeout_seconds: float = 5.0,
        context: str = "bridge-outbound",
        **kwargs: Any,
    ) -> AmiController:
        ami = AmiSettings(
            host="127.0.0.1", port=port or fake.port, username=username, secret=SecretStr(secret)
        )
        originate = OriginateSettings(
            endpoint="PJSIP/{to}@trunk", context=context, exten="s", timeout_seconds=timeout_seconds
        )
        controller = AmiController(ami, originate, "bridge-transfer", **kwargs)
        made.append(controller)
        return controller

    yield factory
    for controller in made:
        await controller.close()


@pytest.fixture
async def ctl(make: Factory) -> AmiController:
    controller = make()
    await controller.start()
    assert await controller.wait_ready(5.0)
    return controller


# --- connection, login, health ------------------------------------------------------------------


async def test_ok_only_after_the_login_is_accepted(make: Factory, fake: FakeAmiServer) -> None:
    fake.silent_actions = {"login"}  # TCP and banner work, the login reply never comes
    controller = make(connect_timeout=0.5)
    await controller.start()
    assert health(controller) is ControllerHealth.DEGRADED  # connecting
    await fake.wait_until(lambda: bool(fake.actions("Login")))
    assert health(controller) is not ControllerHealth.OK
    with pytest.raises(ControlError) as refused:
        await controller.originate(request())
    assert refused.value.code == "asterisk_unavailable"
    assert not fake.actions("Originate")
    fake.silent_actions = set()  # the next attempt (after connect_timeout + backoff) gets an answer
    assert await controller.wait_ready(5.0)
    assert health(controller) is ControllerHealth.OK
    assert fake.logins == [("bridge", True)]
    login = fake.actions("Login")[-1]
    assert (login.get("Username"), login.get("Secret"), login.get("Events")) == ("bridge", SECRET, "on")


async def test_drop_degrades_then_reconnects(make: Factory, fake: FakeAmiServer) -> None:
    with capture_logs() as logs:
        controller = make()
        await controller.start()
        assert await controller.wait_ready(5.0)
        fake.accepting = False  # reconnect attempts find a socket but no Asterisk
        fake.drop_all()
        await until(lambda: controller.health is ControllerHealth.DEGRADED)
        with pytest.raises(ControlError) as down:
            await controller.hangup(ChannelRef("c", outbound=True))
        assert down.value.code == "asterisk_unavailable"
        await until(lambda: fake.connections >= 2)  # it keeps trying
        assert health(controller) is ControllerHealth.DEGRADED
        fake.accepting = True
        assert await controller.wait_ready(10.0)
    assert health(controller) is ControllerHealth.OK
    assert [ok for _, ok in fake.logins] == [True, True]
    states = [e["health"] for e in logs if e["event"] == "ami_state"]
    assert states == ["degraded", "ok", "degraded", "ok"]  # each change logged once


async def test_unanswered_keepalive_reconnects(
    make: Factory, fake: FakeAmiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ami_module, "KEEPALIVE_S", 0.05)
    controller = make(action_timeout=0.2)
    await controller.start()
    assert await controller.wait_ready(5.0)
    await fake.wait_until(lambda: bool(fake.actions("Ping")))
    fake.silent_actions = {"ping"}  # a peer that is there but no longer answers
    await until(lambda: fake.connections >= 2)
    fake.silent_actions = set()
    assert await controller.wait_ready(5.0)
    assert [ok for _, ok in fake.logins] == [True, True]
    assert fake.actions("Ping")[0].connection == 1


async def test_bad_secret_is_down_and_never_logged(
    make: Factory, fake: FakeAmiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-secret-91b2"
    with capture_logs() as logs:
        controller = make(secret=wrong)
        await controller.start()
        await until(lambda: controller.health is ControllerHealth.DOWN)
    assert fake.logins == [("bridge", False)]
    assert fake.actions("Login")[0].get("Secret") == wrong  # it was really sent...
    assert wrong not in repr(logs)  # ...but never logged
    assert wrong not in caplog.text
    assert any(e["event"] == "ami_login_refused" for e in logs)
    with pytest.raises(ControlError) as refused:
        await controller.originate(request())
    assert refused.value.code == "asterisk_unavailable"


async def test_never_up_is_down(make: Factory) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    controller = make(port=free_port, connect_timeout=0.3)
    assert health(controller) is ControllerHealth.DOWN  # not started
    await controller.start()
    assert health(controller) is ControllerHealth.DEGRADED
    await until(lambda: controller.health is ControllerHealth.DOWN)
    assert not await controller.wait_ready(0.05)


async def test_close_disconnects_and_is_down(ctl: AmiController, fake: FakeAmiServer) -> None:
    assert fake.open_sessions == 1
    await ctl.close()
    assert health(ctl) is ControllerHealth.DOWN
    await fake.wait_until(lambda: fake.open_sessions == 0)
    assert fake.connections == 1


# --- originate ------------------------------------------------------------------------------------


async def test_originate_answered_sends_exact_fields(ctl: AmiController, fake: FakeAmiServer) -> None:
    answered: list[tuple[str, dict[str, str]]] = []

    async def on_answer(call_id: str, variables: dict[str, str]) -> None:
        answered.append((call_id, variables))

    fake.on_answer = on_answer
    result = await ctl.originate(request("call-1", __AGENT="sales", __NOTE='a,b "(c)"'))
    assert result.outcome is DialOutcome.ANSWERED
    assert result.reason == "Reason 4: answered"
    assert result.channel.startswith("PJSIP/trunk-")
    assert fake.find_channel(result.channel) is not None
    [sent] = fake.actions("Originate")
    assert sent.get("Channel") == "PJSIP/15552223333@trunk"
    assert sent.get("ChannelId") == "call-1"
    assert sent.get("Async") == "true"
    assert sent.get("Timeout") == "5000"
    assert sent.get("CallerID") == f"<{FROM}>"
    assert (sent.get("Context"), sent.get("Exten"), sent.get("Priority")) == ("bridge-outbound", "s", "1")
    assert sent.getlist("Variable")[:3] == [
        "__BRIDGE_CALL_ID=call-1",
        f"__BRIDGE_FROM={FROM}",
        f"__BRIDGE_TO={TO}",
    ]
    await until(lambda: bool(answered))
    assert answered == [
        (
            "call-1",
            {
                "__BRIDGE_CALL_ID": "call-1",
                "__BRIDGE_FROM": FROM,
                "__BRIDGE_TO": TO,
                "__AGENT": "sales",
                "__NOTE": 'a,b "(c)"',
            },
        )
    ]
    assert not fake.errors


@pytest.mark.parametrize(
    ("outcome", "expected", "cause"),
    [
        (Outcome.BUSY, DialOutcome.BUSY, 17),
        (Outcome.NO_ANSWER, DialOutcome.NO_ANSWER, 19),
        (Outcome.CONGESTION, DialOutcome.CONGESTION, 34),
        (Outcome.REJECTED, DialOutcome.REJECTED, 21),
        (Outcome.FAIL, DialOutcome.FAILED, None),
    ],
)
async def test_originate_failures(
    ctl: AmiController, fake: FakeAmiServer, outcome: Outcome, expected: DialOutcome, cause: int | None
) -> None:
    fake.scripts["15559990000"] = DialScript(outcome)
    result = await ctl.originate(request("call-f", to="+15559990000"))
    assert result.outcome is expected
    [sent] = fake.actions("Originate")
    assert sent.get("ChannelId") == "call-f"
    if cause is None:
        assert result.channel == ""  # no channel was ever created
        assert ctl.last_hangup_cause("call-f") is None
    else:
        assert result.channel.startswith("PJSIP/trunk-")  # learnt from Newchannel
        assert ctl.last_hangup_cause("call-f") == HangupCause(cause, fake_cause_text(cause))


def fake_cause_text(cause: int) -> str:
    from tests.fakes.ami_server import CAUSE_TEXT

    return CAUSE_TEXT[cause]


async def test_originate_permission_denied_for_user(make: Factory, fake: FakeAmiServer) -> None:
    controller = make(username=LOWLY, secret="pw")
    await controller.start()
    assert await controller.wait_ready(5.0)
    with pytest.raises(ControlError) as denied:
        await controller.originate(request())
    assert denied.value.code == "permission_denied"
    assert len(fake.actions("Originate")) == 1


async def test_originate_permission_denied_scripted(ctl: AmiController, fake: FakeAmiServer) -> None:
    fake.scripts["15558887777"] = DialScript(Outcome.PERMISSION_DENIED)
    with pytest.raises(ControlError) as denied:
        await ctl.originate(request(to="+15558887777"))
    assert denied.value.code == "permission_denied"


async def test_originate_other_refusal_is_originate_failed(make: Factory, fake: FakeAmiServer) -> None:
    controller = make(context="no-such-context")
    await controller.start()
    assert await controller.wait_ready(5.0)
    with pytest.raises(ControlError) as failed:
        await controller.originate(request())
    assert failed.value.code == "originate_failed"
    assert "Extension does not exist" in str(failed.value)


async def test_originate_without_ack_times_out(make: Factory, fake: FakeAmiServer) -> None:
    fake.silent_actions = {"originate"}
    controller = make(action_timeout=0.2)
    await controller.start()
    assert await controller.wait_ready(5.0)
    with pytest.raises(ControlError) as late:
        await controller.originate(request())
    assert late.value.code == "action_timeout"


async def test_originate_without_outcome_times_out(
    make: Factory, fake: FakeAmiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ami_module, "ORIGINATE_MARGIN_S", 0.1)
    fake.scripts["15557776666"] = DialScript(Outcome.SILENT)
    controller = make(timeout_seconds=1.0, action_timeout=0.5)
    await controller.start()
    assert await controller.wait_ready(5.0)
    with pytest.raises(ControlError) as late:
        await controller.originate(request(to="+15557776666"))
    assert late.value.code == "action_timeout"
    assert "OriginateResponse" in str(late.value)


@pytest.mark.parametrize("drop", [Outcome.DROP, Outcome.DROP_BEFORE_ACK])
async def test_originate_in_flight_is_not_replayed_after_reconnect(
    ctl: AmiController, fake: FakeAmiServer, drop: Outcome
) -> None:
    fake.scripts["15556665555"] = DialScript(drop)
    with pytest.raises(ControlError) as lost:
        await ctl.originate(request("call-drop", to="+15556665555"))
    assert lost.value.code == "asterisk_unavailable"
    assert await ctl.wait_ready(5.0)
    assert fake.connections == 2
    # Two round trips on the new connection: a replay panoramisk sent on FullyBooted would have
    # reached the fake before their replies.
    for _ in range(2):
        with pytest.raises(ControlError) as missing:
            await ctl.hangup(ChannelRef("nobody", outbound=True))
        assert missing.value.code == "channel_not_found"
    originates = [a for a in fake.actions("Originate") if a.get("ChannelId") == "call-drop"]
    assert len(originates) == 1
    assert originates[0].connection == 1


async def test_not_started_is_unavailable(make: Factory) -> None:
    controller = make()
    assert health(controller) is ControllerHealth.DOWN
    with pytest.raises(ControlError) as down:
        await controller.originate(request())
    assert down.value.code == "asterisk_unavailable"


# --- hangup, redirect, DTMF -----------------------------------------------------------------------


async def test_hangup_outbound_uses_the_tracked_channel(ctl: AmiController, fake: FakeAmiServer) -> None:
    result = await ctl.originate(request("call-h"))
    await ctl.hangup(ChannelRef("call-h", outbound=True))
    [sent] = fake.actions("Hangup")
    assert sent.get("Channel") == result.channel
    assert sent.get("Cause") == "16"
    assert fake.find_channel("call-h") is None
    await until(lambda: ctl.last_hangup_cause("call-h") is not None)
    assert ctl.last_hangup_cause("call-h") == HangupCause(16, "Normal Clearing")


async def test_hangup_falls_back_to_the_uniqueid(ctl: AmiController, fake: FakeAmiServer) -> None:
    # A call this controller never saw dialed (e.g. after a restart): Asterisk finds it by uniqueid.
    fake.add_channel("PJSIP/trunk-000000aa", uniqueid="call-old")
    await ctl.hangup(ChannelRef("call-old", outbound=True))
    [sent] = fake.actions("Hangup")
    assert sent.get("Channel") == "call-old"
    assert fake.find_channel("PJSIP/trunk-000000aa") is None


async def test_hangup_unknown_channel(ctl: AmiController) -> None:
    with pytest.raises(ControlError) as missing:
        await ctl.hangup(ChannelRef("ghost", outbound=True))
    assert missing.value.code == "channel_not_found"


async def test_hangup_timeout(make: Factory, fake: FakeAmiServer) -> None:
    fake.silent_actions = {"hangup"}
    controller = make(action_timeout=0.2)
    await controller.start()
    assert await controller.wait_ready(5.0)
    with pytest.raises(ControlError) as late:
        await controller.hangup(ChannelRef("call-x", outbound=True))
    assert late.value.code == "action_timeout"
    assert len(fake.actions("Hangup")) == 1


async def test_transfer_redirects_the_trunk_channel(ctl: AmiController, fake: FakeAmiServer) -> None:
    result = await ctl.originate(request("call-t"))
    await ctl.transfer(ChannelRef("call-t", outbound=True), "+34911222333")
    [sent] = fake.actions("Redirect")
    assert sent.get("Channel") == result.channel
    assert (sent.get("Context"), sent.get("Exten"), sent.get("Priority")) == (
        "bridge-transfer",
        "+34911222333",
        "1",
    )
    channel = fake.find_channel(result.channel)
    assert channel is not None
    assert channel.redirects == [("bridge-transfer", "+34911222333", "1")]


async def test_transfer_to_garbage_is_refused_locally(ctl: AmiController, fake: FakeAmiServer) -> None:
    with pytest.raises(ValueError):
        await ctl.transfer(ChannelRef("call-t", outbound=True), "123&PJSIP/evil")
    assert not fake.actions("Redirect")


async def test_send_dtmf_one_action_per_digit(ctl: AmiController, fake: FakeAmiServer) -> None:
    result = await ctl.originate(request("call-d"))
    await ctl.send_dtmf(ChannelRef("call-d", outbound=True), "12#")
    sent = fake.actions("PlayDTMF")
    assert [a.get("Digit") for a in sent] == ["1", "2", "#"]
    assert {a.get("Channel") for a in sent} == {result.channel}
    channel = fake.find_channel(result.channel)
    assert channel is not None
    assert channel.dtmf == ["1", "2", "#"]


async def test_send_dtmf_rejects_bad_digits_before_sending(ctl: AmiController, fake: FakeAmiServer) -> None:
    with pytest.raises(ValueError):
        await ctl.send_dtmf(ChannelRef("call-d", outbound=True), "12x")
    assert not fake.actions("PlayDTMF")


async def test_send_dtmf_unknown_channel(ctl: AmiController, fake: FakeAmiServer) -> None:
    with pytest.raises(ControlError) as missing:
        await ctl.send_dtmf(ChannelRef("ghost", outbound=True), "1")
    assert missing.value.code == "channel_not_found"
    assert len(fake.actions("PlayDTMF")) == 1  # stops at the first failure


# --- inbound: the trunk channel is the media channel's BRIDGEPEER ---------------------------------

MEDIA = "WebSocket/bridge_media/0x7f39fc007310"
TRUNK = "PJSIP/carrier-00000007"


async def test_inbound_resolves_bridgepeer_once(ctl: AmiController, fake: FakeAmiServer) -> None:
    fake.add_channel(TRUNK, uniqueid="1795212381.7")
    fake.add_channel(MEDIA, variables={"BRIDGEPEER": TRUNK})
    ref = ChannelRef("in-1", outbound=False, media_channel=MEDIA)
    await ctl.send_dtmf(ref, "5")
    await ctl.transfer(ref, "200")
    [getvar] = fake.actions("Getvar")  # cached after the first look-up
    assert (getvar.get("Channel"), getvar.get("Variable")) == (MEDIA, "BRIDGEPEER")
    assert fake.actions("PlayDTMF")[0].get("Channel") == TRUNK
    assert fake.actions("Redirect")[0].get("Channel") == TRUNK
    await ctl.hangup(ref)
    assert fake.actions("Hangup")[0].get("Channel") == TRUNK
    await until(lambda: ctl.last_hangup_cause("in-1") is not None)
    assert ctl.last_hangup_cause("in-1") == HangupCause(16, "Normal Clearing")
    assert fake.find_channel(MEDIA) is not None  # only the trunk leg was hung up


async def test_inbound_not_bridged(ctl: AmiController, fake: FakeAmiServer) -> None:
    fake.add_channel(MEDIA)  # no BRIDGEPEER yet
    with pytest.raises(ControlError) as lonely:
        await ctl.hangup(ChannelRef("in-2", outbound=False, media_channel=MEDIA))
    assert lonely.value.code == "channel_not_found"
    assert not fake.actions("Hangup")


async def test_inbound_unknown_media_channel(ctl: AmiController, fake: FakeAmiServer) -> None:
    with pytest.raises(ControlError) as missing:
        await ctl.hangup(ChannelRef("in-3", outbound=False, media_channel="WebSocket/gone"))
    assert missing.value.code == "channel_not_found"
    with pytest.raises(ControlError) as nameless:
        await ctl.hangup(ChannelRef("in-4", outbound=False))
    assert nameless.value.code == "channel_not_found"
    assert len(fake.actions("Getvar")) == 1


# --- inbound without a media channel name (AudioSocket), or not bridged: found by BRIDGE_CALL_ID -------

CALL_UUID = "62e4dcb8-e362-4a40-a2aa-458d9968463a"
CALLER = "PJSIP/carrier-0000000a"
AUDIOSOCKET = f"AudioSocket/127.0.0.1:9092-{CALL_UUID}"


def audiosocket_call(fake: FakeAmiServer, call_id: str = CALL_UUID, bridge: str = "b-1") -> None:
    """What [bridge-inbound-audiosocket] leaves in Asterisk: the caller marked with `_BRIDGE_CALL_ID`, and
    the AudioSocket channel it dialed (which inherits the variable) in one bridge with it."""
    fake.add_channel(
        CALLER, uniqueid="1796525062.6", variables={"_BRIDGE_CALL_ID": call_id}, bridge_id=bridge
    )
    fake.add_channel(
        f"AudioSocket/127.0.0.1:9092-{call_id}",
        uniqueid="1796525062.8",
        variables={"BRIDGE_CALL_ID": call_id, "BRIDGEPEER": CALLER},
        linkedid="1796525062.6",
        bridge_id=bridge,
    )


async def test_audiosocket_inbound_is_controlled_through_the_marked_caller(
    ctl: AmiController, fake: FakeAmiServer
) -> None:
    fake.add_channel("PJSIP/carrier-00000003", variables={"_BRIDGE_CALL_ID": "another-call"}, bridge_id="b-0")
    audiosocket_call(fake)
    ref = ChannelRef(CALL_UUID, outbound=False)  # AudioSocket never names its channel
    await ctl.send_dtmf(ref, "5#")
    await ctl.transfer(ref, "+34911222333")
    await ctl.hangup(ref)
    [status] = fake.actions("Status")  # one look-up, then remembered
    assert status.get("Variables") == "BRIDGE_CALL_ID"
    assert not status.get("Channel")
    assert not fake.actions("Getvar")
    assert [(a.get("Channel"), a.get("Digit")) for a in fake.actions("PlayDTMF")] == [
        (CALLER, "5"),
        (CALLER, "#"),
    ]
    [redirect] = fake.actions("Redirect")
    assert (
        redirect.get("Channel"),
        redirect.get("Context"),
        redirect.get("Exten"),
        redirect.get("Priority"),
    ) == (
        CALLER,
        "bridge-transfer",
        "+34911222333",
        "1",
    )
    [hangup] = fake.actions("Hangup")
    assert (hangup.get("Channel"), hangup.get("Cause")) == (CALLER, "16")
    assert fake.find_channel(CALLER) is None
    assert fake.find_channel(AUDIOSOCKET) is not None  # only the caller was hung up
    await until(lambda: ctl.last_hangup_cause(CALL_UUID) is not None)
    assert ctl.last_hangup_cause(CALL_UUID) == HangupCause(16, "Normal Clearing")


async def test_websocket_inbound_not_yet_bridged_falls_back_to_the_marked_caller(
    ctl: AmiController, fake: FakeAmiServer
) -> None:
    # MEDIA_START comes before the caller is bridged: BRIDGEPEER is still empty.
    fake.add_channel(TRUNK, uniqueid="1795212381.7", variables={"_BRIDGE_CALL_ID": "1795212381.7"})
    fake.add_channel(MEDIA, variables={"BRIDGE_CALL_ID": "1795212381.7"})
    ref = ChannelRef("1795212381.7", outbound=False, media_channel=MEDIA)
    await ctl.transfer(ref, "200")
    [getvar] = fake.actions("Getvar")
    assert (getvar.get("Channel"), getvar.get("Variable")) == (MEDIA, "BRIDGEPEER")
    [status] = fake.actions("Status")
    assert status.get("Variables") == "BRIDGE_CALL_ID"
    assert [a.get("Channel") for a in fake.actions("Redirect")] == [TRUNK]


async def test_the_media_channels_bridge_decides_between_marked_channels(
    ctl: AmiController, fake: FakeAmiServer
) -> None:
    audiosocket_call(fake, bridge="b-7")
    # A second channel carries the id too (e.g. one the caller dialed earlier, which inherited it).
    fake.add_channel("PJSIP/operator-00000009", variables={"BRIDGE_CALL_ID": CALL_UUID}, bridge_id="b-8")
    await ctl.send_dtmf(ChannelRef(CALL_UUID, outbound=False), "1")
    assert [a.get("Channel") for a in fake.actions("PlayDTMF")] == [CALLER]


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param({}, id="nobody-marked"),
        pytest.param(
            {"AudioSocket/127.0.0.1:9092-x": {"BRIDGE_CALL_ID": CALL_UUID}}, id="only-the-media-channel"
        ),
        pytest.param(
            {"PJSIP/a-1": {"_BRIDGE_CALL_ID": CALL_UUID}, "PJSIP/b-2": {"_BRIDGE_CALL_ID": CALL_UUID}},
            id="two-callers-no-bridge-to-decide",
        ),
        pytest.param({"PJSIP/c-3": {"__BRIDGE_CALL_ID": "other-call"}}, id="another-calls-mark"),
    ],
)
async def test_no_single_marked_caller_is_channel_not_found(
    ctl: AmiController, fake: FakeAmiServer, setup: dict[str, dict[str, str]]
) -> None:
    for name, variables in setup.items():
        fake.add_channel(name, variables=variables)
    with pytest.raises(ControlError) as missing:
        await ctl.hangup(ChannelRef(CALL_UUID, outbound=False))
    assert missing.value.code == "channel_not_found"
    assert len(fake.actions("Status")) == 1
    assert not fake.actions("Hangup")  # never a guess
    assert len(fake.channels) == len(setup)


async def test_status_lookup_timeout_is_action_timeout(make: Factory, fake: FakeAmiServer) -> None:
    fake.silent_actions = {"status"}
    controller = make(action_timeout=0.2)
    await controller.start()
    assert await controller.wait_ready(5.0)
    with pytest.raises(ControlError) as late:
        await controller.send_dtmf(ChannelRef(CALL_UUID, outbound=False), "1")
    assert late.value.code == "action_timeout"
    assert not fake.actions("PlayDTMF")


async def test_status_needs_a_write_class(make: Factory) -> None:
    async with FakeAmiServer({"bridge": SECRET}, write={"bridge": ["originate"]}) as narrow:
        audiosocket_call(narrow)
        controller = make(port=narrow.port)
        await controller.start()
        assert await controller.wait_ready(5.0)
        with pytest.raises(ControlError) as denied:
            await controller.hangup(ChannelRef(CALL_UUID, outbound=False))
    assert denied.value.code == "permission_denied"
    assert len(narrow.actions("Status")) == 1


# --- outbound: AMD and the ring timeout ride on the Originate ------------------------------------------


async def test_originate_asks_for_amd_only_when_the_call_does(
    ctl: AmiController, fake: FakeAmiServer
) -> None:
    await ctl.originate(request("call-amd", amd=True, ring=12.5))
    await ctl.originate(request("call-plain"))
    with_amd, plain = fake.actions("Originate")
    assert "BRIDGE_AMD=1" in with_amd.getlist("Variable")
    assert with_amd.get("Timeout") == "12500"  # the request's ring timeout, in ms
    assert not [v for v in plain.getlist("Variable") if v.startswith("BRIDGE_AMD")]
    assert plain.get("Timeout") == "5000"  # [asterisk.originate] timeout_seconds
    channel = fake.find_channel("call-amd")
    assert channel is not None
    assert channel.variables["BRIDGE_AMD"] == "1"  # on the originated channel, not inheritable


# --- least privilege: the sample manager.conf account is enough, and no more --------------------------


async def test_the_sample_manager_account_can_do_all_the_bridge_does(make: Factory) -> None:
    classes = manager_classes("bridge")
    assert "system" not in classes.read | classes.write
    sample = FakeAmiServer({"bridge": SECRET}, write={"bridge": classes.write}, read={"bridge": classes.read})
    async with sample:
        controller = make(port=sample.port)
        await controller.start()
        assert await controller.wait_ready(5.0)  # no FullyBooted without `system` read: not needed
        result = await controller.originate(request("call-lp"))  # OriginateResponse is a `call` event
        assert result.outcome is DialOutcome.ANSWERED
        assert result.channel.startswith("PJSIP/trunk-")  # learnt from Newchannel, also `call`
        outbound = ChannelRef("call-lp", outbound=True)
        await controller.send_dtmf(outbound, "1#")
        await controller.transfer(outbound, "+34911222333")
        sample.add_channel(TRUNK, uniqueid="1795212381.9")
        sample.add_channel(MEDIA, variables={"BRIDGEPEER": TRUNK})
        inbound = ChannelRef("in-lp", outbound=False, media_channel=MEDIA)
        await controller.send_dtmf(inbound, "5")
        await controller.hangup(inbound)
        audiosocket_call(sample)
        audiosocket = ChannelRef(CALL_UUID, outbound=False)
        await controller.send_dtmf(audiosocket, "7")
        await controller.transfer(audiosocket, "200")
        await controller.hangup(audiosocket)
        await controller.hangup(outbound)
        await until(lambda: controller.last_hangup_cause("call-lp") is not None)  # a `call` event
    assert controller.last_hangup_cause("in-lp") == HangupCause(16, "Normal Clearing")
    assert controller.last_hangup_cause(CALL_UUID) == HangupCause(16, "Normal Clearing")
    sent = {action.name.lower() for action in sample.received}
    assert {"originate", "playdtmf", "redirect", "getvar", "status", "hangup"} <= sent
    assert [a.get("Channel") for a in sample.actions("Redirect")][-1] == CALLER


async def test_the_fake_withholds_events_the_user_may_not_read(
    make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What makes the test above prove something: without `call` read, no OriginateResponse arrives.
    monkeypatch.setattr(ami_module, "ORIGINATE_MARGIN_S", 0.1)
    async with FakeAmiServer({"bridge": SECRET}, read={"bridge": ["system"]}) as blind:
        controller = make(port=blind.port, timeout_seconds=1.0, action_timeout=0.5)
        await controller.start()
        assert await controller.wait_ready(5.0)
        with pytest.raises(ControlError) as late:
            await controller.originate(request("call-blind"))
    assert late.value.code == "action_timeout"
    assert len(blind.actions("Originate")) == 1  # it was accepted; only the outcome was withheld


# --- the fake itself: strict where the bridge must not rely on Asterisk's leniency -------------------


class RawAmi:
    """A bare AMI client, to check the fake without panoramisk in between."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int) -> tuple[RawAmi, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        banner = (await reader.readline()).decode()
        return cls(reader, writer), banner

    async def send(self, *lines: str) -> dict[str, str]:
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        return dict(line.split(": ", 1) for line in raw.strip().split("\r\n"))

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_fake_login_rules(fake: FakeAmiServer) -> None:
    client, banner = await RawAmi.connect(fake.port)
    try:
        assert banner == "Asterisk Call Manager/11.0.0\r\n"  # as the 22.10.1 captures show
        reply = await client.send("Action: Ping", "ActionID: p1")
        assert reply == {"Response": "Error", "ActionID": "p1", "Message": "Permission denied"}
        reply = await client.send("Action: Login", "ActionID: l1", "Username: bridge", "Secret: nope")
        assert reply == {"Response": "Error", "ActionID": "l1", "Message": "Authentication failed"}
        assert await client.reader.read() == b""  # and the connection is closed
    finally:
        await client.close()


ORIGINATE = (
    "Action: Originate",
    "ActionID: o1",
    "Channel: PJSIP/15551234@trunk",
    "Context: bridge-outbound",
    "Exten: s",
    "Priority: 1",
    "Timeout: 30000",
    "ChannelId: raw-1",
)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Async": "false"}, "Fake AMI: Async must be true"),
        ({"Async": "true", "ChannelId": ""}, "Fake AMI: ChannelId is required"),
        ({"Async": "true", "Timeout": "30"}, "Fake AMI: Timeout must be whole milliseconds (>= 1000)"),
        ({"Async": "true", "Timeout": "30.5"}, "Fake AMI: Timeout must be whole milliseconds (>= 1000)"),
        ({"Async": "true", "Timeout": "soon"}, "Invalid timeout"),
        ({"Async": "true", "Channel": "nochannel"}, "Invalid channel"),
        ({"Async": "true", "Context": "elsewhere"}, "Extension does not exist."),
        ({"Async": "true", "Variable": "NOEQUALS"}, "Fake AMI: malformed Variable 'NOEQUALS'"),
    ],
)
async def test_fake_rejects_bad_originates(fake: FakeAmiServer, change: dict[str, str], message: str) -> None:
    headers = dict(line.split(": ", 1) for line in ORIGINATE) | change
    client, _ = await RawAmi.connect(fake.port)
    try:
        await client.send("Action: Login", "Username: bridge", f"Secret: {SECRET}")
        await client.reader.readuntil(b"\r\n\r\n")  # FullyBooted
        reply = await client.send(*(f"{k}: {v}" for k, v in headers.items() if v))
        assert reply == {"Response": "Error", "ActionID": "o1", "Message": message}
    finally:
        await client.close()
    assert not fake.channels


async def test_fake_status_answers_like_the_capture(fake: FakeAmiServer) -> None:
    # ami_dtmf_events.jsonl: `__CUSTOMER` set by the dialplan reads as CUSTOMER, never by its prefixed name.
    fake.add_channel(CALLER, variables={"_BRIDGE_CALL_ID": "c-9", "__CUSTOMER": "acme-42"}, bridge_id="b-9")
    client, _ = await RawAmi.connect(fake.port)
    try:
        await client.send("Action: Login", "Username: bridge", f"Secret: {SECRET}")
        await client.reader.readuntil(b"\r\n\r\n")  # FullyBooted
        first = await client.send(
            "Action: Status", "ActionID: s1", "Variables: BRIDGE_CALL_ID,CUSTOMER,__CUSTOMER"
        )
        assert first == {
            "Response": "Success",
            "ActionID": "s1",
            "EventList": "start",
            "Message": "Channel status will follow",
        }
        raw = (await client.reader.readuntil(b"\r\n\r\n")).decode().strip().split("\r\n")
        complete = (await client.reader.readuntil(b"\r\n\r\n")).decode().strip().split("\r\n")
    finally:
        await client.close()
    assert raw[:2] == ["Event: Status", "Privilege: Call"]
    assert f"Channel: {CALLER}" in raw
    assert "BridgeID: b-9" in raw
    assert [line for line in raw if line.startswith("Variable: ")] == [
        "Variable: BRIDGE_CALL_ID=c-9",
        "Variable: CUSTOMER=acme-42",
        "Variable: __CUSTOMER=(null)",
    ]
    assert raw[-1] == "ActionID: s1"
    assert complete == [
        "Event: StatusComplete",
        "ActionID: s1",
        "EventList: Complete",
        "ListItems: 1",
        "Items: 1",
    ]
