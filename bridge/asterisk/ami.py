"""`CallController` over AMI, with panoramisk 1.4 (spec: asterisk-control-ami-ari.md, Part A).

One long-lived panoramisk `Manager`, built inside the running loop (pitfall 4). panoramisk's own
reconnect (a fixed integer timer, replaying unanswered actions) is switched off: a supervisor task
connects, waits for the login to be *accepted* (`on_login`, pitfall 1), and reconnects with
exponential backoff. Every action races the reply against the connection ending and the action
timeout, so nothing waits on a dead socket and nothing is replayed on the next connection (pitfall 5).

Channels: an outbound call's trunk channel has the call id as its uniqueid (`ChannelId`); its name is
learnt from `Newchannel` (or the OriginateResponse). Until then the call id itself is sent as `Channel`:
Asterisk's channel lookup (`ast_channel_get_by_name`) falls back to the uniqueid when no name matches.
An inbound call's trunk channel is the bridge peer of the media channel: `Getvar BRIDGEPEER` on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol

from bridge.asterisk.ami_mapping import (
    AUTH_RETRY_S,
    BACKOFF_INITIAL_S,
    DTMF_GAP_S,
    HANGUP_CAUSE_NORMAL,
    HangupCause,
    check_dtmf,
    check_endpoint_template,
    check_header_value,
    compute_health,
    dial_result_of,
    dialable,
    error_code,
    find_error,
    find_event,
    hangup_cause_of,
    next_backoff,
    originate_action,
)
from bridge.logging import get_logger
from bridge.session.control import (
    ChannelRef,
    ControlError,
    ControllerHealth,
    DialOutcome,
    DialResult,
    OriginateRequest,
)
from bridge.settings import AmiSettings, OriginateSettings

__all__ = ["AmiController", "HangupCause"]

ORIGINATE_MARGIN_S = 10.0  # beyond the dial timeout, for Asterisk to report the outcome
KEEPALIVE_S = 10.0  # Ping this often while idle; no reply within the action timeout = dead connection
_NO_PANORAMISK_PING = 10**9  # seconds: panoramisk pings but never checks replies; ours does
_MEMORY = 4096  # calls remembered (channel names, hangup causes): bounded, oldest forgotten first
# Never replayed after a reconnect: the controller fails them itself when the connection ends.
_FORGETABLE = ("ping", "login", "logoff", "originate", "hangup", "redirect", "playdtmf", "getvar")

Message = Mapping[str, Any]  # panoramisk.message.Message: case-insensitive, missing keys read as ''


class _Outcome(Enum):
    FAILED = "failed"  # TCP refused/timed out, or the connection ended before a login reply
    REFUSED = "refused"  # Asterisk rejected the credentials
    WAS_UP = "was_up"  # logged in, then the connection ended


class _Protocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's protocol plus a future that resolves when the socket is really closed."""

    ended: asyncio.Future[None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ended = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        except Exception:  # a drop before the manager adopted the protocol: nothing to notify
            logging.getLogger(__name__).debug("ami protocol teardown failed", exc_info=True)
        finally:
            if not self.ended.done():
                self.ended.set_result(None)


class _Manager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    def __init__(self, on_refused: Callable[[str], None], **config: Any) -> None:
        super().__init__(**config)
        self._on_refused = on_refused

    def login(self, future: asyncio.Future[Any]) -> bool:
        ok = bool(super().login(future))
        if not ok:  # panoramisk only calls on_login on success; a refusal would go unnoticed
            self._on_refused(str(future.result().get("Message", "")))
        return ok

    def connection_lost(self, exc: Any) -> None:
        # panoramisk would reconnect on its own fixed timer; the controller's supervisor does it.
        self._connected = False
        self.authenticated = False
        pinger = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
            self.pinger = None


class _SecretFilter(logging.Filter):
    """panoramisk logs `%r` of an action it failed to write, Login included: keep the secret out."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        hidden = text
        for secret in self.secrets:
            hidden = hidden.replace(secret, "[redacted]")
        if hidden != text:
            record.msg, record.args = hidden, ()
        return True

    @classmethod
    def install(cls, log: logging.Logger, secret: str) -> None:
        found = next((f for f in log.filters if isinstance(f, cls)), None)
        if found is None:
            found = cls()
            log.addFilter(found)
        if secret:
            found.secrets.add(secret)


def _remember(store: OrderedDict[str, Any], key: str, value: Any) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _MEMORY:
        store.popitem(last=False)


class AmiController:
    """`bridge.session.control.CallController` over one AMI session."""

    def __init__(
        self,
        ami: AmiSettings,
        originate: OriginateSettings,
        transfer_context: str,
        *,
        connect_timeout: float = 5.0,
        action_timeout: float = 5.0,
    ) -> None:
        self._ami = ami
        self._originate = originate
        self._endpoint = check_endpoint_template(originate.endpoint)
        self._transfer_context = check_header_value(transfer_context, "transfer_context")
        self._connect_timeout = connect_timeout
        self._action_timeout = action_timeout
        self._log = get_logger("ami")
        self._manager: _Manager | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._protocol: _Protocol | None = None  # the live connection, logged in or not
        self._logged_in = False
        self._ready = asyncio.Event()
        self._login_waiter: asyncio.Future[bool] | None = None
        self._refusal = ""
        self._auth_refused = False
        self._was_up = False
        self._closed = False
        self._started_at: float | None = None
        self._logged_health: ControllerHealth | None = None
        self._outbound: OrderedDict[str, str] = OrderedDict()  # call id -> trunk channel name ("" = not yet)
        self._inbound_peer: OrderedDict[str, str] = OrderedDict()  # call id -> trunk channel (BRIDGEPEER)
        self._call_of_channel: OrderedDict[str, str] = OrderedDict()  # trunk channel name -> call id
        self._causes: OrderedDict[str, HangupCause] = OrderedDict()  # uniqueid or call id -> cause

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def health(self) -> ControllerHealth:
        return compute_health(
            closed=self._closed,
            logged_in=self._logged_in,
            auth_refused=self._auth_refused,
            was_up=self._was_up,
            started=self._started_at is not None,
            since_start_s=time.monotonic() - (self._started_at or 0.0),
            connect_timeout_s=self._connect_timeout,
        )

    async def start(self) -> None:
        if self._supervisor is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        log = logging.getLogger("bridge.ami.panoramisk")
        _SecretFilter.install(log, self._ami.secret.get_secret_value())
        self._manager = _Manager(
            self._login_refused,
            host=self._ami.host,
            port=self._ami.port,
            username=self._ami.username,
            secret=self._ami.secret.get_secret_value(),
            events="on",
            ping_delay=_NO_PANORAMISK_PING,
            ping_interval=_NO_PANORAMISK_PING,
            loop=loop,
            protocol_factory=_Protocol,
            forgetable_actions=_FORGETABLE,
            on_login=self._login_accepted,
            log=log,
        )
        self._manager.register_event("Newchannel", self._on_newchannel)
        self._manager.register_event("Hangup", self._on_hangup)
        self._started_at = time.monotonic()
        self._note_health()
        self._supervisor = loop.create_task(self._supervise(), name="ami-supervisor")

    async def wait_ready(self, seconds: float) -> bool:
        """Wait until logged in (True) or `seconds` pass (False). Startup and tests use it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), seconds)
        return self._logged_in

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._manager is not None:
            protocol = getattr(self._manager, "protocol", None)
            self._manager.close()
            if isinstance(protocol, _Protocol):
                await asyncio.shield(protocol.ended)  # the socket is closed once this resolves
        self._logged_in = False
        self._ready.clear()
        self._note_health()

    def last_hangup_cause(self, call_id: str) -> HangupCause | None:
        """The cause of the call's trunk channel `Hangup` event, if one was seen."""
        return self._causes.get(call_id)

    # --- connection supervision ------------------------------------------------------------------

    async def _supervise(self) -> None:
        delay = 0.0
        while not self._closed:
            if delay:
                await asyncio.sleep(delay)
            outcome = await self._connect_once()
            if outcome is _Outcome.REFUSED:
                delay = AUTH_RETRY_S
            elif outcome is _Outcome.WAS_UP:
                delay = BACKOFF_INITIAL_S
            else:
                delay = next_backoff(delay)
            self._note_health()

    async def _connect_once(self) -> _Outcome:
        assert self._manager is not None
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(_Protocol, self._ami.host, self._ami.port), self._connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            self._log.debug("ami_connect_failed", host=self._ami.host, port=self._ami.port, error=repr(exc))
            return _Outcome.FAILED
        self._protocol = protocol
        self._login_waiter = loop.create_future()
        done = loop.create_future()
        done.set_result((protocol.transport, protocol))
        self._manager.connection_made(done)  # panoramisk adopts the protocol and sends Login
        try:
            login_or_end: set[asyncio.Future[Any]] = {self._login_waiter, protocol.ended}
            await asyncio.wait(
                login_or_end,
                timeout=self._connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
            accepted = self._login_waiter.done() and self._login_waiter.result()
            if accepted and not protocol.ended.done():
                self._auth_refused = False
                self._was_up = self._logged_in = True
                self._ready.set()
                self._note_health()
                await self._keepalive(protocol)
                self._log.warning("ami_connection_lost", host=self._ami.host, port=self._ami.port)
                return _Outcome.WAS_UP
            if self._login_waiter.done() and not accepted:
                self._auth_refused = True
                self._log.error("ami_login_refused", username=self._ami.username, reason=self._refusal)
                outcome = _Outcome.REFUSED
            else:
                self._log.debug("ami_no_login_reply", host=self._ami.host, port=self._ami.port)
                outcome = _Outcome.FAILED
            self._manager.close()
            await asyncio.shield(protocol.ended)
            return outcome
        finally:
            self._logged_in = False
            self._ready.clear()
            self._protocol = None
            self._login_waiter = None

    async def _keepalive(self, protocol: _Protocol) -> None:
        """Return when the connection ends; end it when Asterisk stops answering (a peer that vanished
        without closing TCP would otherwise look logged in forever)."""
        assert self._manager is not None
        while True:
            done, _ = await asyncio.wait({protocol.ended}, timeout=KEEPALIVE_S)
            if done:
                return
            try:
                await self._send({"Action": "Ping"}, "Ping")
            except ControlError as exc:
                if exc.code == "action_timeout":
                    self._log.warning("ami_keepalive_unanswered", host=self._ami.host, port=self._ami.port)
                    self._manager.close()
                    await asyncio.shield(protocol.ended)
                    return

    def _login_accepted(self, _manager: Any) -> None:
        if self._login_waiter is not None and not self._login_waiter.done():
            self._login_waiter.set_result(True)

    def _login_refused(self, message: str) -> None:
        self._refusal = message
        if self._login_waiter is not None and not self._login_waiter.done():
            self._login_waiter.set_result(False)

    def _note_health(self) -> None:
        health = self.health
        if health is self._logged_health:
            return
        self._logged_health = health
        fields = {"health": health.value, "host": self._ami.host, "port": self._ami.port}
        if health is ControllerHealth.OK:
            self._log.info("ami_state", **fields)
        else:
            self._log.warning("ami_state", **fields)

    # --- events ----------------------------------------------------------------------------------

    def _on_newchannel(self, _manager: Any, event: Message) -> None:
        uniqueid = str(event.get("Uniqueid", ""))
        if uniqueid in self._outbound and not self._outbound[uniqueid]:
            channel = str(event.get("Channel", ""))
            self._outbound[uniqueid] = channel
            _remember(self._call_of_channel, channel, uniqueid)

    def _on_hangup(self, _manager: Any, event: Message) -> None:
        cause = hangup_cause_of(event)
        if cause is None:
            return
        uniqueid = str(event.get("Uniqueid", ""))
        if uniqueid:
            _remember(self._causes, uniqueid, cause)
        call_id = self._call_of_channel.get(str(event.get("Channel", "")))
        if call_id and call_id != uniqueid:
            _remember(self._causes, call_id, cause)

    # --- actions ---------------------------------------------------------------------------------

    def _require(self) -> tuple[_Manager, _Protocol]:
        if not self._logged_in or self._manager is None or self._protocol is None:
            raise ControlError("Asterisk AMI is not connected", code="asterisk_unavailable")
        return self._manager, self._protocol

    def _forget(self, manager: _Manager, action: Any) -> None:
        # A reply that never came would otherwise stay in panoramisk's table until the connection ends.
        responses = getattr(manager, "responses", None)
        if isinstance(responses, dict):
            responses.pop(action.id, None)

    async def _send(self, headers: dict[str, Any], what: str) -> Message:
        """One request/response action (not Originate), bounded by the action timeout."""
        manager, protocol = self._require()
        action = Action(headers)
        # as_list=False: a single reply completes it, even "DTMF successfully queued" (pitfall 8).
        future = manager.send_action(action, as_list=False)
        try:
            await asyncio.wait(
                {future, protocol.ended}, timeout=self._action_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            if not future.done():
                future.cancel()
                self._forget(manager, action)
        if future.cancelled():
            if protocol.ended.done():
                raise ControlError(f"AMI connection lost during {what}", code="asterisk_unavailable")
            raise ControlError(
                f"{what}: no reply from Asterisk within {self._action_timeout:g}s", code="action_timeout"
            )
        reply: Message = future.result()
        if str(reply.get("Response", "")).lower() == "error":
            message = str(reply.get("Message", ""))
            raise ControlError(f"{what} refused by Asterisk: {message}", code=error_code(message))
        return reply

    async def originate(self, request: OriginateRequest) -> DialResult:
        headers = originate_action(
            request,
            endpoint=self._endpoint,
            context=self._originate.context,
            exten=self._originate.exten,
            timeout_s=self._originate.timeout_seconds,
        )
        manager, protocol = self._require()
        call_id = request.call_id
        _remember(self._outbound, call_id, self._outbound.get(call_id, ""))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._originate.timeout_seconds + ORIGINATE_MARGIN_S
        action = Action(headers)
        # Async: true makes this a two-part action: the ack, then OriginateResponse (pitfalls 2, 3).
        future = manager.send_action(action)
        waiting = {future, protocol.ended}
        try:
            await asyncio.wait(waiting, timeout=self._action_timeout, return_when=asyncio.FIRST_COMPLETED)
            if not future.done() and not protocol.ended.done():
                if not action.responses:
                    raise ControlError(
                        f"Originate: no reply from Asterisk within {self._action_timeout:g}s",
                        code="action_timeout",
                    )
                remaining = max(0.0, deadline - loop.time())
                await asyncio.wait(waiting, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if not future.done():
                if protocol.ended.done():
                    raise ControlError(
                        "AMI connection lost while dialing; the call's outcome is unknown",
                        code="asterisk_unavailable",
                    )
                raise ControlError(
                    "Originate: no OriginateResponse before the dial timeout", "action_timeout"
                )
        finally:
            if not future.done():
                future.cancel()
                self._forget(manager, action)
        result = future.result()
        messages: list[Message] = result if isinstance(result, list) else [result]
        error = find_error(messages)
        if error is not None:
            message = str(error.get("Message", ""))
            raise ControlError(
                f"Originate refused by Asterisk: {message}", code=error_code(message, "originate_failed")
            )
        event = find_event(messages, "OriginateResponse")
        if event is None:
            raise ControlError("Originate: unexpected reply without OriginateResponse", "originate_failed")
        outcome, reason = dial_result_of(event)
        channel = self._outbound.get(call_id, "")
        if not channel and outcome is DialOutcome.ANSWERED and event.get("Uniqueid") == call_id:
            channel = str(event.get("Channel", ""))  # on failure it is the dial string, not a channel
            _remember(self._outbound, call_id, channel)
            _remember(self._call_of_channel, channel, call_id)
        self._log.info("ami_originate_result", call_id=call_id, outcome=outcome.value, reason=reason)
        return DialResult(outcome=outcome, reason=reason, channel=channel)

    async def _trunk_channel(self, ref: ChannelRef) -> str:
        check_header_value(ref.call_id, "call_id")
        if ref.outbound:
            channel = self._outbound.get(ref.call_id) or ref.call_id  # uniqueid lookup fallback
        else:
            channel = self._inbound_peer.get(ref.call_id, "")
            if not channel:
                channel = await self._bridge_peer(ref)
        if not channel or channel.startswith("/"):  # '/…/' would be a Hangup regex
            raise ControlError(f"no trunk channel for call {ref.call_id}", code="channel_not_found")
        return channel

    async def _bridge_peer(self, ref: ChannelRef) -> str:
        if not ref.media_channel:
            raise ControlError("inbound call without a media channel name", code="channel_not_found")
        reply = await self._send(
            {
                "Action": "Getvar",
                "Channel": check_header_value(ref.media_channel, "media_channel"),
                "Variable": "BRIDGEPEER",
            },
            "Getvar BRIDGEPEER",
        )
        # In a multi-party bridge BRIDGEPEER lists the others comma-separated; the media leg's is two-party.
        peer = str(reply.get("Value", "")).split(",")[0].strip()
        if not peer:
            raise ControlError(
                f"media channel {ref.media_channel} is not bridged to a caller", code="channel_not_found"
            )
        _remember(self._inbound_peer, ref.call_id, peer)
        _remember(self._call_of_channel, peer, ref.call_id)
        return peer

    async def hangup(self, ref: ChannelRef) -> None:
        channel = await self._trunk_channel(ref)
        await self._send(
            {"Action": "Hangup", "Channel": channel, "Cause": str(HANGUP_CAUSE_NORMAL)}, "Hangup"
        )

    async def transfer(self, ref: ChannelRef, target: str) -> None:
        # E.164 keeps its '+': the transfer context sends only '+' numbers to the trunk (extensions.conf).
        exten = ("+" if target.strip().startswith("+") else "") + dialable(target, "transfer target")
        channel = await self._trunk_channel(ref)
        await self._send(
            {
                "Action": "Redirect",
                "Channel": channel,
                "Context": self._transfer_context,
                "Exten": exten,
                "Priority": "1",
            },
            "Redirect",
        )

    async def send_dtmf(self, ref: ChannelRef, digits: str) -> None:
        check_dtmf(digits)
        channel = await self._trunk_channel(ref)
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(DTMF_GAP_S)  # PlayDTMF takes one digit; space them like a keypad
            await self._send({"Action": "PlayDTMF", "Channel": channel, "Digit": digit}, "PlayDTMF")
