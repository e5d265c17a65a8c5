"""`CallController` over AMI, with panoramisk 1.4 (spec: asterisk-control-ami-ari.md, Part A).

One long-lived panoramisk `Manager`, built inside the running loop (pitfall 4). panoramisk's own
reconnect (a fixed integer timer, replaying unanswered actions) is switched off: a supervisor task
connects, waits for the login to be *accepted* (`on_login`, pitfall 1), and reconnects with
exponential backoff. Every action races the reply against the connection ending and the action
timeout, so nothing waits on a dead socket and nothing is replayed on the next connection (pitfall 5).

Which channel an action goes to (the callee's, the caller's) is `ami_channels.CallChannels`' business;
the panoramisk adapters are in `ami_panoramisk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from enum import Enum
from typing import Any

from panoramisk.actions import Action

from bridge.asterisk.ami_channels import CallChannels
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
    next_backoff,
    originate_action,
)
from bridge.asterisk.ami_panoramisk import SecretFilter, SessionProtocol, SupervisedManager
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
# Never replayed after a reconnect: the controller fails them itself when the connection ends.
_FORGETABLE = ("ping", "login", "logoff", "originate", "hangup", "redirect", "playdtmf", "getvar", "status")

Message = Mapping[str, Any]  # panoramisk.message.Message: case-insensitive, missing keys read as ''


class _Outcome(Enum):
    FAILED = "failed"  # TCP refused/timed out, or the connection ended before a login reply
    REFUSED = "refused"  # Asterisk rejected the credentials
    WAS_UP = "was_up"  # logged in, then the connection ended


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
        self._manager: SupervisedManager | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._protocol: SessionProtocol | None = None  # the live connection, logged in or not
        self._logged_in = False
        self._ready = asyncio.Event()
        self._login_waiter: asyncio.Future[bool] | None = None
        self._refusal = ""
        self._auth_refused = False
        self._was_up = False
        self._closed = False
        self._started_at: float | None = None
        self._logged_health: ControllerHealth | None = None
        self._channels = CallChannels(self._send, self._send_list)

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
        SecretFilter.install(log, self._ami.secret.get_secret_value())
        self._manager = SupervisedManager(
            self._login_refused,
            host=self._ami.host,
            port=self._ami.port,
            username=self._ami.username,
            secret=self._ami.secret.get_secret_value(),
            events="on",
            ping_delay=_NO_PANORAMISK_PING,
            ping_interval=_NO_PANORAMISK_PING,
            loop=loop,
            protocol_factory=SessionProtocol,
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
            if isinstance(protocol, SessionProtocol):
                await asyncio.shield(protocol.ended)  # the socket is closed once this resolves
        self._logged_in = False
        self._ready.clear()
        self._note_health()

    def last_hangup_cause(self, call_id: str) -> HangupCause | None:
        """The cause of the call's trunk channel `Hangup` event, if one was seen."""
        return self._channels.last_hangup_cause(call_id)

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
                loop.create_connection(SessionProtocol, self._ami.host, self._ami.port), self._connect_timeout
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

    async def _keepalive(self, protocol: SessionProtocol) -> None:
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
        self._channels.on_newchannel(event)

    def _on_hangup(self, _manager: Any, event: Message) -> None:
        self._channels.on_hangup(event)

    # --- actions ---------------------------------------------------------------------------------

    def _require(self) -> tuple[SupervisedManager, SessionProtocol]:
        if not self._logged_in or self._manager is None or self._protocol is None:
            raise ControlError("Asterisk AMI is not connected", code="asterisk_unavailable")
        return self._manager, self._protocol

    def _forget(self, manager: SupervisedManager, action: Any) -> None:
        # A reply that never came would otherwise stay in panoramisk's table until the connection ends.
        responses = getattr(manager, "responses", None)
        if isinstance(responses, dict):
            responses.pop(action.id, None)

    async def _send(self, headers: dict[str, Any], what: str) -> Message:
        """One request/response action (not Originate), bounded by the action timeout."""
        # as_list=False: a single reply completes it, even "DTMF successfully queued" (pitfall 8).
        reply = await self._request(headers, what, as_list=False)
        if isinstance(reply, list):  # as_list=False completes on the first reply: never a list
            raise ControlError(f"{what}: unexpected event list from Asterisk")
        return reply

    async def _send_list(self, headers: dict[str, Any], what: str) -> list[Message]:
        """An action answered by an event list (`Status`): the reply, the events, the `...Complete`."""
        # as_list=None: panoramisk collects "EventList: start" until the list's Complete event, and
        # completes an error reply at once.
        reply = await self._request(headers, what, as_list=None)
        return reply if isinstance(reply, list) else [reply]

    async def _request(
        self, headers: dict[str, Any], what: str, *, as_list: bool | None
    ) -> Message | list[Message]:
        manager, protocol = self._require()
        action = Action(headers)
        future = manager.send_action(action, as_list=as_list)
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
        reply: Message | list[Message] = future.result()
        first: Message = (reply[0] if reply else {}) if isinstance(reply, list) else reply
        if str(first.get("Response", "")).lower() == "error":
            message = str(first.get("Message", ""))
            raise ControlError(f"{what} refused by Asterisk: {message}", code=error_code(message))
        return reply

    async def originate(self, request: OriginateRequest) -> DialResult:
        ring_s = request.ring_timeout_seconds or self._originate.timeout_seconds
        headers = originate_action(
            request,
            endpoint=self._endpoint,
            context=self._originate.context,
            exten=self._originate.exten,
            timeout_s=ring_s,
        )
        manager, protocol = self._require()
        call_id = request.call_id
        self._channels.dialing(call_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ring_s + ORIGINATE_MARGIN_S
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
        channel = self._channels.outbound_channel(call_id)
        if not channel and outcome is DialOutcome.ANSWERED and event.get("Uniqueid") == call_id:
            channel = str(event.get("Channel", ""))  # on failure it is the dial string, not a channel
            self._channels.answered(call_id, channel)
        self._log.info("ami_originate_result", call_id=call_id, outcome=outcome.value, reason=reason)
        return DialResult(outcome=outcome, reason=reason, channel=channel)

    async def hangup(self, ref: ChannelRef) -> None:
        channel = await self._channels.trunk_channel(ref)
        await self._send(
            {"Action": "Hangup", "Channel": channel, "Cause": str(HANGUP_CAUSE_NORMAL)}, "Hangup"
        )

    async def transfer(self, ref: ChannelRef, target: str) -> None:
        # E.164 keeps its '+': the transfer context sends only '+' numbers to the trunk (extensions.conf).
        exten = ("+" if target.strip().startswith("+") else "") + dialable(target, "transfer target")
        channel = await self._channels.trunk_channel(ref)
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
        channel = await self._channels.trunk_channel(ref)
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(DTMF_GAP_S)  # PlayDTMF takes one digit; space them like a keypad
            await self._send({"Action": "PlayDTMF", "Channel": channel, "Digit": digit}, "PlayDTMF")
