"""Call control through ARI (REST plus the events WebSocket), over one aiohttp ClientSession.

Outbound design: the callee stays in our Stasis app for the whole call.
  1. `POST /ari/channels?endpoint=..&app=<app>&channelId=<call id>&callerId=..&timeout=..` with body
     `{"variables": {BRIDGE_CALL_ID, BRIDGE_FROM, BRIDGE_TO, ...}}`. The outcome comes from events:
     `StasisStart` = answered; `Dial` dialstatus / `ChannelDestroyed` cause before that = the failure.
  2. On answer: `POST /ari/channels/externalMedia` (transport=websocket, encapsulation=none, client mode,
     external_host = the websocket_client.conf section, transport_data `f(json)v(callId=..,aNumberE164=..,
     bNumberE164=..)`) so Asterisk dials our media socket with the same query the dialplan would send.
     externalMedia originates with `app`, so its StasisStart comes only once our socket answered.
  3. A mixing bridge (`bridgeId=<call id>-bridge`) joins the callee and the media channel.
  Why not `continue` into [asterisk.originate] context (the AMI flow)? Once the callee leaves Stasis,
  ARI's `continue`, `redirect` and `dtmf` answer 409 (res/ari/resource_channels.c `find_control`), so
  transfer and DTMF could never work. Cost: the outbound dialplan context is not used in ARI mode, and the
  media section/format are constructor arguments (defaults match asterisk-sample-conf).
  While in Stasis nothing hangs up for us: when either leg leaves the app (hangup, transfer, the media
  socket closing) the other leg and the bridge are removed here.

Transfer = `continue` of the trunk channel into the transfer context (leaves Stasis; the media leg is then
hung up). DTMF = `POST /channels/{id}/dtmf`. Inbound calls (dialplan `Dial(WebSocket/..)`, never in
Stasis): the trunk is found by listing channels (`GET /ari/channels`), taking the media channel's id by
name and reading its BRIDGEPEER (`GET /channels/{id}/variable` works on any channel). Hangup then works;
transfer and DTMF get a clear `channel_not_in_stasis`, because ARI cannot move a non-Stasis channel.

Events socket: reconnected with backoff (0.25 s doubling to 10 s). If another consumer takes the app
(`ApplicationReplaced`), health goes DOWN and we take it back only after the longest backoff, so two
misconfigured daemons alternate slowly instead of fighting in a tight loop. After a reconnect, calls whose
events may have been missed are reconciled with `GET /channels/{id}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from bridge.asterisk import ari_mapping as mapping
from bridge.logging import get_logger
from bridge.session.control import (
    ChannelRef,
    ControlError,
    ControllerHealth,
    DialOutcome,
    DialResult,
    OriginateRequest,
)
from bridge.settings import AriSettings, OriginateSettings

log = get_logger("ari")

_STARTED, _ENDED = "started", "ended"
_DIAL_MARGIN = 10.0  # seconds past the dial timeout before we stop waiting for Asterisk's verdict
_CAUSES_KEPT = 2048
_STATUS_CODES = {
    401: "permission_denied",
    403: "permission_denied",
    404: "channel_not_found",
    409: "channel_not_in_stasis",
    412: "channel_not_answered",
}


@dataclass(eq=False)
class _Leg:
    channel_id: str
    outcome: asyncio.Future[str]  # _STARTED on StasisStart, _ENDED when destroyed first
    name: str = ""
    ringing: bool = False
    dialstatus: str = ""
    cause: int | None = None
    cause_txt: str = ""
    left: bool = False  # left our Stasis app (hung up, or continued into the dialplan)


@dataclass(eq=False)
class _Call:
    call_id: str
    trunk: _Leg
    media: _Leg | None = None
    bridge_id: str = ""
    cancelled: bool = False
    teardown: asyncio.Task[None] | None = None
    legs: list[_Leg] = field(default_factory=list)


class AriController:
    """`CallController` over ARI. See the module docstring for the call flows."""

    def __init__(
        self,
        ari: AriSettings,
        originate: OriginateSettings,
        transfer_context: str,
        *,
        action_timeout: float = 5.0,
        media_connection: str = "bridge_media",
        media_format: str = "ulaw",
        media_timeout: float = 10.0,
        reconnect_initial: float = 0.25,
        reconnect_max: float = 10.0,
    ) -> None:
        self._ari = ari
        self._originate = originate
        self._transfer_context = transfer_context
        self._action_timeout = action_timeout
        self._media_connection = media_connection
        self._media_format = media_format
        self._media_timeout = media_timeout
        self._backoff = (reconnect_initial, reconnect_max)
        self._base = ari.url.rstrip("/") + "/ari/"
        self._health = ControllerHealth.DOWN
        self._health_logged = False
        self._session: aiohttp.ClientSession | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False
        self._calls: dict[str, _Call] = {}
        self._legs: dict[str, tuple[_Call, _Leg]] = {}
        self._causes: OrderedDict[str, int] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def health(self) -> ControllerHealth:
        return self._health

    def last_hangup_cause(self, call_id: str) -> int | None:
        """The Q.850 cause of the call's trunk channel (from ChannelDestroyed), once it is gone."""
        return self._causes.get(call_id)

    async def start(self) -> None:
        if self._runner is None:
            # A default header, not BasicAuth (deprecated in aiohttp 3.14); the session only talks to ARI.
            auth = aiohttp.encode_basic_auth(self._ari.username, self._ari.password.get_secret_value())
            self._session = aiohttp.ClientSession(headers={"Authorization": auth})
            self._runner = asyncio.create_task(self._run_events(), name="ari-events")

    async def close(self) -> None:
        self._closing = True
        tasks = [t for t in (self._runner, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for call in list(self._calls.values()):
            for leg in call.legs:
                if not leg.outcome.done():
                    leg.outcome.set_exception(
                        ControlError("the ARI controller closed", "asterisk_unavailable")
                    )
        if self._session is not None:
            await self._session.close()
        self._set_health(ControllerHealth.DOWN, "closed")

    # --- operations ---------------------------------------------------------------------------------

    async def originate(self, request: OriginateRequest) -> DialResult:
        if self._health is not ControllerHealth.OK:
            raise ControlError("the ARI events socket is not connected", "asterisk_unavailable")
        endpoint = mapping.format_endpoint(self._originate.endpoint, request.to_number)
        params = {
            "endpoint": endpoint,
            "app": self._ari.app,
            "channelId": request.call_id,
            "callerId": mapping.caller_id(request.from_number),
            "timeout": str(max(1, math.ceil(self._originate.timeout_seconds))),
        }
        variables = self._variables(request)
        if request.call_id in self._calls or request.call_id in self._legs:
            raise ControlError(f"call {request.call_id} is already being dialled", "originate_failed")
        call = _Call(request.call_id, self._new_leg(request.call_id))
        self._track(call, call.trunk)
        try:
            channel = await self._request(
                "POST",
                "channels",
                params,
                {"variables": variables},
                {400: "originate_failed", 409: "originate_failed"},
            )
        except ControlError:
            self._forget(call)
            raise
        trunk = call.trunk
        trunk.name = str(channel.get("name", "")) if isinstance(channel, dict) else ""
        wait = self._originate.timeout_seconds + _DIAL_MARGIN
        try:
            outcome = await asyncio.wait_for(asyncio.shield(trunk.outcome), wait)
        except TimeoutError:
            await self._finish(call)
            return DialResult(
                DialOutcome.FAILED, f"no dial outcome from Asterisk in {wait:.0f} s", trunk.name
            )
        if outcome == _ENDED:
            self._forget(call)
            reason = mapping.describe_end(trunk.dialstatus, trunk.cause, trunk.cause_txt)
            if call.cancelled:
                return DialResult(DialOutcome.FAILED, f"cancelled ({reason})", trunk.name)
            result = mapping.dial_outcome(trunk.dialstatus, trunk.cause, ringing=trunk.ringing)
            return DialResult(result, reason, trunk.name)
        try:
            await self._attach_media(call, request, variables)
        except ControlError as exc:
            await self._finish(call)
            return DialResult(DialOutcome.FAILED, f"answered, but no media: {exc}", trunk.name)
        return DialResult(DialOutcome.ANSWERED, "answered", trunk.name)

    async def hangup(self, ref: ChannelRef) -> None:
        if ref.outbound and (call := self._calls.get(ref.call_id)) is not None:
            call.cancelled = not call.trunk.outcome.done()
        channel_id = await self._trunk_id(ref)
        await self._request("DELETE", f"channels/{quote(channel_id, safe='')}", {"reason": "normal"})

    async def transfer(self, ref: ChannelRef, target: str) -> None:
        extension = mapping.transfer_extension(target)
        channel_id = await self._trunk_id(ref)
        params = {"context": self._transfer_context, "extension": extension, "priority": "1"}
        await self._request("POST", f"channels/{quote(channel_id, safe='')}/continue", params)

    async def send_dtmf(self, ref: ChannelRef, digits: str) -> None:
        params = {"dtmf": mapping.validate_dtmf(digits), "between": "100"}
        channel_id = await self._trunk_id(ref)
        await self._request("POST", f"channels/{quote(channel_id, safe='')}/dtmf", params)

    # --- outbound helpers ---------------------------------------------------------------------------

    @staticmethod
    def _variables(request: OriginateRequest) -> dict[str, str]:
        return {
            "BRIDGE_CALL_ID": request.call_id,
            "BRIDGE_FROM": request.from_number,
            "BRIDGE_TO": request.to_number,
            **request.variables,
        }

    async def _attach_media(self, call: _Call, request: OriginateRequest, variables: dict[str, str]) -> None:
        media = call.media = self._new_leg(f"{call.call_id}-media")
        self._track(call, media)
        params = {
            "app": self._ari.app,
            "external_host": self._media_connection,
            "format": self._media_format,
            "encapsulation": "none",
            "transport": "websocket",
            "connection_type": "client",
            "transport_data": mapping.media_transport_data(
                request.call_id, request.from_number, request.to_number
            ),
            "channelId": media.channel_id,
        }
        self._check_alive(call)
        await self._request("POST", "channels/externalMedia", params, {"variables": variables})
        try:
            outcome = await asyncio.wait_for(asyncio.shield(media.outcome), self._media_timeout)
        except TimeoutError as exc:
            raise ControlError("the media socket did not connect in time", "media_failed") from exc
        if outcome == _ENDED:
            raise ControlError(f"the media channel ended (cause {media.cause})", "media_failed")
        self._check_alive(call)
        call.bridge_id = f"{call.call_id}-bridge"
        await self._request("POST", "bridges", {"type": "mixing", "bridgeId": call.bridge_id})
        self._check_alive(call)
        channels = f"{call.trunk.channel_id},{media.channel_id}"
        await self._request(
            "POST", f"bridges/{quote(call.bridge_id, safe='')}/addChannel", {"channel": channels}
        )

    @staticmethod
    def _check_alive(call: _Call) -> None:
        if call.teardown is not None:
            raise ControlError("the callee hung up during media setup", "channel_not_found")

    async def _finish(self, call: _Call) -> None:
        """Tear the call down now (failed setup) and wait until it is done."""
        self._end_call(call)
        if call.teardown is not None:
            await asyncio.shield(call.teardown)
        if any(not leg.left for leg in call.legs):  # created while the first pass ran (e.g. the media leg)
            await self._teardown(call)

    def _end_call(self, call: _Call) -> None:
        if call.teardown is None:
            call.teardown = self._spawn(self._teardown(call))

    async def _teardown(self, call: _Call) -> None:
        for leg in call.legs:
            if not leg.left:  # a leg that left Stasis alive (transfer) is the dialplan's now
                with contextlib.suppress(ControlError):
                    await self._request(
                        "DELETE", f"channels/{quote(leg.channel_id, safe='')}", {"reason": "normal"}
                    )
                    leg.left = True
        if call.bridge_id:
            with contextlib.suppress(ControlError):
                await self._request("DELETE", f"bridges/{quote(call.bridge_id, safe='')}")
        self._forget(call)

    def _new_leg(self, channel_id: str) -> _Leg:
        return _Leg(channel_id, asyncio.get_running_loop().create_future())

    def _track(self, call: _Call, leg: _Leg) -> None:
        self._calls[call.call_id] = call
        call.legs.append(leg)
        self._legs[leg.channel_id] = (call, leg)

    def _forget(self, call: _Call) -> None:
        if self._calls.get(call.call_id) is call:
            del self._calls[call.call_id]
        for leg in call.legs:
            self._legs.pop(leg.channel_id, None)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _trunk_id(self, ref: ChannelRef) -> str:
        if ref.outbound:
            return ref.call_id
        if not ref.media_channel:
            raise ControlError(
                f"call {ref.call_id}: no media channel name to find the caller by", "channel_not_found"
            )
        listing = await self._request("GET", "channels")
        channels = listing if isinstance(listing, list) else []
        ids = {str(c.get("name")): str(c.get("id")) for c in channels if isinstance(c, dict)}
        media_id = ids.get(ref.media_channel)
        if media_id is None:
            raise ControlError(f"no channel named {ref.media_channel}", "channel_not_found")
        peer = await self._request(
            "GET", f"channels/{quote(media_id, safe='')}/variable", {"variable": "BRIDGEPEER"}
        )
        peer_name = str(peer.get("value", "")) if isinstance(peer, dict) else ""
        if peer_name not in ids:
            raise ControlError(f"{ref.media_channel} is not bridged to a caller", "channel_not_found")
        return ids[peer_name]

    # --- REST ---------------------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        codes: Mapping[int, str] | None = None,
    ) -> Any:
        session = self._session
        if session is None or session.closed:
            raise ControlError("the ARI controller is not running", "asterisk_unavailable")
        timeout = aiohttp.ClientTimeout(total=self._action_timeout)
        try:
            async with session.request(
                method, self._base + path, params=params, json=body, timeout=timeout
            ) as response:
                status, text = response.status, await response.text()
        except TimeoutError as exc:
            raise ControlError(f"ARI {method} {path} timed out", "action_timeout") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ControlError(f"ARI is unreachable: {exc}", "asterisk_unavailable") from exc
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        if status < 300:
            return data
        message = data.get("message", "") if isinstance(data, dict) else ""
        code = {**_STATUS_CODES, **(codes or {})}.get(status, "asterisk_error")
        raise ControlError(f"ARI {method} {path}: {status} {message or text[:200]}".rstrip(), code)

    # --- events -------------------------------------------------------------------------------------

    def _set_health(self, health: ControllerHealth, reason: str) -> None:
        # Once per change, plus the first failure while still DOWN (e.g. a 401 at startup), not per retry.
        if health is self._health and self._health_logged:
            return
        self._health, self._health_logged = health, True
        level = {ControllerHealth.OK: log.info, ControllerHealth.DEGRADED: log.warning}.get(health, log.error)
        level("ari_health", health=health.value, reason=reason, url=self._ari.url, app=self._ari.app)

    async def _run_events(self) -> None:
        assert self._session is not None
        initial, longest = self._backoff
        delay, was_up, replaced = initial, False, False
        params = {"app": self._ari.app, "subscribeAll": "false"}
        while not self._closing:
            # Replaced by another consumer stays DOWN until we hold the app again.
            lost = ControllerHealth.DEGRADED if was_up and not replaced else ControllerHealth.DOWN
            try:
                ws = await self._session.ws_connect(
                    self._base + "events", params=params, protocols=("ari",), heartbeat=20.0
                )
            except aiohttp.WSServerHandshakeError as exc:
                refused = exc.status in (401, 403)
                self._set_health(
                    ControllerHealth.DOWN if refused else lost, f"events socket refused: {exc.status}"
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self._set_health(lost, f"cannot reach ARI: {type(exc).__name__}")
            else:
                async with ws:
                    was_up, delay = True, initial
                    self._set_health(ControllerHealth.OK, "events socket connected")
                    self._spawn(self._reconcile())
                    replaced = await self._read_events(ws)
                if self._closing:
                    break
                if replaced:
                    self._set_health(ControllerHealth.DOWN, "another consumer took over the ARI app")
                    delay = longest
                else:
                    self._set_health(ControllerHealth.DEGRADED, "events socket lost")
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def _read_events(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Dispatch events until the socket closes; True when another consumer replaced us."""
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                event = json.loads(message.data)
            except ValueError:
                log.warning("ari_bad_event", size=len(message.data))
                continue
            if isinstance(event, dict):
                if event.get("type") == "ApplicationReplaced":
                    return True
                self._on_event(event)
        return False

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        channel = event.get("peer" if kind == "Dial" else "channel")
        if not isinstance(channel, dict):
            return
        channel_id = str(channel.get("id", ""))
        if kind == "ChannelDestroyed" and isinstance(event.get("cause"), int):
            self._causes[channel_id] = event["cause"]
            while len(self._causes) > _CAUSES_KEPT:
                self._causes.popitem(last=False)
        found = self._legs.get(channel_id)
        if found is None:
            return
        call, leg = found
        leg.name = str(channel.get("name", leg.name))
        if kind == "ChannelStateChange" and channel.get("state") == "Ringing":
            leg.ringing = True
        elif kind == "Dial":
            status = str(event.get("dialstatus", ""))
            if status == "RINGING":
                leg.ringing = True
            elif status not in ("", "ANSWER", "PROGRESS", "PROCEEDING"):
                leg.dialstatus = status
        elif kind == "StasisStart" and not leg.outcome.done():
            leg.outcome.set_result(_STARTED)
        elif kind in ("StasisEnd", "ChannelDestroyed"):
            if kind == "ChannelDestroyed":
                leg.cause, leg.cause_txt = event.get("cause"), str(event.get("cause_txt", ""))
            self._leg_left(call, leg)

    def _leg_left(self, call: _Call, leg: _Leg) -> None:
        leg.left = True
        if not leg.outcome.done():
            leg.outcome.set_result(_ENDED)
        else:  # an established leg left: the call is over for us, remove what remains
            self._end_call(call)

    async def _reconcile(self) -> None:
        """Events may have been missed while the socket was down: ask Asterisk about each live leg."""
        for call in list(self._calls.values()):
            for leg in list(call.legs):
                if leg.left:
                    continue
                try:
                    channel = await self._request("GET", f"channels/{quote(leg.channel_id, safe='')}")
                except ControlError as exc:
                    if exc.code != "channel_not_found":
                        return  # unreachable again; the next reconnect retries
                    self._leg_left(call, leg)
                    continue
                in_stasis = (
                    isinstance(channel, dict) and channel.get("dialplan", {}).get("app_name") == "Stasis"
                )
                if in_stasis and channel.get("state") == "Up" and not leg.outcome.done():
                    leg.outcome.set_result(_STARTED)
