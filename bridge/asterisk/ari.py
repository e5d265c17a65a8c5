"""Call control through ARI: every call the bridge serves in ARI mode stays in our Stasis app, so it can be
hung up, transferred (`continue`) and sent DTMF. REST and the events socket are in `ari_client.py`.

Outbound: the callee stays in Stasis for the whole call.
  1. `POST /ari/channels?endpoint=..&app=<app>&channelId=<call id>&callerId=..&timeout=..` with body
     `{"variables": {BRIDGE_CALL_ID, BRIDGE_FROM, BRIDGE_TO, ...}}`. The outcome comes from events:
     `StasisStart` = answered; `Dial` dialstatus / `ChannelDestroyed` cause before that = the failure.
  2. With `amd`: `continue` the answered callee into [asterisk.ari] amd_context, which runs AMD() and
     comes back with `Stasis(<app>,amd,${AMDSTATUS},${AMDCAUSE})`; the status goes to the media socket
     as `v(amd=..)`. While it is in the dialplan its StasisEnd is expected, not the end of the call.
  3. The media leg (below), then a mixing bridge (`bridgeId=<trunk id>-bridge`) with both.
  Why not `continue` into [asterisk.originate] context (the AMI flow)? Once the callee leaves Stasis,
  ARI's `continue`, `redirect` and `dtmf` answer 409 (res/ari/resource_channels.c `find_control`).

Inbound: the dialplan sends the caller in with `Stasis(<app>,inbound,${EXTEN})`. The session layer admits
it (`on_inbound`, the webhook's rules); refused, or if its media leg fails, the caller `continue`s into
[asterisk.ari] failover_context, never left in silence. Admitted: answer, media leg, bridge, as above.
The call id is the caller channel's id; with AudioSocket media, a fresh UUID (AudioSocket names calls by
UUID only), which is also the media leg's `data`, so the leg attaches to the call admission registered.

The media leg: `POST /ari/channels/externalMedia`, chan_websocket (client mode, the websocket_client.conf
section, transport_data `f(json)v(callId=..,aNumberE164=..,bNumberE164=..[,amd=..])`: the dialplan's
query) or AudioSocket (`encapsulation=audiosocket`, `transport=tcp`, `data=<uuid>`). Its body sets
CALLERID(num)/CALLERID(name) to the Stasis channel's own: the bridge copies each side's caller id into the
other's connected line, and a media channel without one blanks it (captures: ari_callerid_propagation).
externalMedia originates with `app`, so its StasisStart comes only once our socket answered.

Transfer = `continue` of the trunk into the transfer context; DTMF = `POST /channels/{id}/dtmf`; the
legs' lifecycle (what happens when one leaves Stasis) is in `ari_calls.py`. Inbound calls that came by
dialplan `Dial(WebSocket/..)` or `Dial(AudioSocket/..)` are never in Stasis: the caller is found by listing
channels (the media channel by its name, or `AudioSocket/<host:port>-<uuid>` for the call's UUID) and
reading the media channel's BRIDGEPEER. Hangup then works; transfer and DTMF get `channel_not_in_stasis`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Awaitable, Mapping
from typing import Any
from urllib.parse import quote

from bridge.asterisk import ari_mapping as mapping
from bridge.asterisk.ari_calls import ENDED, STARTED, Call, StasisCalls, channel_path
from bridge.asterisk.ari_client import AriClient
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.session.control import (
    ChannelRef,
    ControlError,
    ControllerHealth,
    DialOutcome,
    DialResult,
    InboundCall,
    InboundHandler,
    OriginateRequest,
)
from bridge.settings import AriSettings, OriginateSettings

log = get_logger("ari")

_DIAL_MARGIN = 10.0  # seconds past the dial timeout before we stop waiting for Asterisk's verdict


async def _quietly(action: Awaitable[Any]) -> None:
    """A best-effort request nobody waits for: a refusal (the channel already gone) is no news."""
    with contextlib.suppress(ControlError):
        await action


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
        audiosocket_address: str = "127.0.0.1:9092",
        audiosocket_format: str = "slin16",
        media_timeout: float = 10.0,
        amd_timeout: float = 30.0,
        reconnect_initial: float = 0.25,
        reconnect_max: float = 10.0,
    ) -> None:
        self._ari = ari
        self._originate = originate
        self._transfer_context = transfer_context
        self._media_connection = media_connection
        self._media_format = media_format
        self._audiosocket_address = audiosocket_address
        self._audiosocket_format = audiosocket_format
        self._media_timeout = media_timeout
        self._amd_timeout = amd_timeout
        self._client = AriClient(
            ari,
            self._on_event,
            self._reconnected,
            action_timeout=action_timeout,
            reconnect_initial=reconnect_initial,
            reconnect_max=reconnect_max,
        )
        # Set by the composition root: admits callers that enter Stasis(<app>,inbound,..). None: all refused.
        self.on_inbound: InboundHandler | None = None
        self._closing = False
        self._stasis = StasisCalls(self._client)

    @property
    def health(self) -> ControllerHealth:
        return self._client.health

    @property
    def audiosocket_media(self) -> bool:
        return self._ari.media_transport == "audiosocket"

    def last_hangup_cause(self, call_id: str) -> int | None:
        """The Q.850 cause of the call's trunk channel (from ChannelDestroyed), once it is gone."""
        return self._stasis.last_hangup_cause(call_id)

    async def start(self) -> None:
        await self._client.start()

    async def close(self) -> None:
        self._closing = True
        await self._stasis.close()
        await self._client.close()

    # --- operations ---------------------------------------------------------------------------------

    async def originate(self, request: OriginateRequest) -> DialResult:
        if self.health is not ControllerHealth.OK:
            raise ControlError("the ARI events socket is not connected", "asterisk_unavailable")
        if self.audiosocket_media:
            mapping.audiosocket_uuid(request.call_id)  # the media leg's `data`: refuse before dialling
            if request.amd:
                raise ControlError(
                    'answering-machine detection needs [asterisk.ari] media_transport = "websocket": '
                    "an AudioSocket leg cannot carry its result",
                    "amd_unsupported",
                )
        ring_seconds = request.ring_timeout_seconds or self._originate.timeout_seconds
        params = {
            "endpoint": mapping.format_endpoint(self._originate.endpoint, request.to_number),
            "app": self._ari.app,
            "channelId": request.call_id,
            "callerId": mapping.caller_id(request.from_number),
            "timeout": str(max(1, math.ceil(ring_seconds))),
        }
        variables = {
            "BRIDGE_CALL_ID": request.call_id,
            "BRIDGE_FROM": request.from_number,
            "BRIDGE_TO": request.to_number,
            **request.variables,
        }
        if self._stasis.knows(request.call_id):
            raise ControlError(f"call {request.call_id} is already being dialled", "originate_failed")
        call = Call(request.call_id, self._stasis.new_leg(request.call_id))
        self._stasis.track(call, call.trunk)
        try:
            channel = await self._client.request(
                "POST",
                "channels",
                params,
                {"variables": variables},
                {400: "originate_failed", 409: "originate_failed"},
            )
        except ControlError:
            self._stasis.forget(call)
            raise
        trunk = call.trunk
        trunk.name = str(channel.get("name", "")) if isinstance(channel, dict) else ""
        wait = ring_seconds + _DIAL_MARGIN
        try:
            outcome = await asyncio.wait_for(asyncio.shield(trunk.outcome), wait)
        except TimeoutError:
            await self._stasis.finish(call)
            return DialResult(
                DialOutcome.FAILED, f"no dial outcome from Asterisk in {wait:.0f} s", trunk.name
            )
        if outcome == ENDED:
            self._stasis.forget(call)
            reason = mapping.describe_end(trunk.dialstatus, trunk.cause, trunk.cause_txt)
            if call.cancelled:
                return DialResult(DialOutcome.FAILED, f"cancelled ({reason})", trunk.name)
            result = mapping.dial_outcome(trunk.dialstatus, trunk.cause, ringing=trunk.ringing)
            return DialResult(result, reason, trunk.name)
        amd = ""
        try:
            if request.amd:
                amd = await self._detect_machine(call)
        except ControlError as exc:
            await self._stasis.finish(call)
            return DialResult(DialOutcome.FAILED, f"answered, but no AMD result: {exc}", trunk.name)
        try:
            await self._attach_media(call, request.from_number, request.to_number, variables, amd)
        except ControlError as exc:
            await self._stasis.finish(call)
            return DialResult(DialOutcome.FAILED, f"answered, but no media: {exc}", trunk.name)
        return DialResult(DialOutcome.ANSWERED, "answered", trunk.name)

    async def hangup(self, ref: ChannelRef) -> None:
        if ref.outbound and (call := self._stasis.calls.get(ref.call_id)) is not None:
            call.cancelled = not call.trunk.outcome.done()
        channel_id = await self._trunk_id(ref)
        await self._client.request("DELETE", channel_path(channel_id), {"reason": "normal"})

    async def transfer(self, ref: ChannelRef, target: str) -> None:
        params = {
            "context": self._transfer_context,
            "extension": mapping.transfer_extension(target),
            "priority": "1",
        }
        await self._on_trunk(ref, "continue", params, "transfer")

    async def send_dtmf(self, ref: ChannelRef, digits: str) -> None:
        params = {"dtmf": mapping.validate_dtmf(digits), "between": "100"}
        await self._on_trunk(ref, "dtmf", params, "send DTMF to")

    async def _on_trunk(self, ref: ChannelRef, action: str, params: dict[str, str], verb: str) -> None:
        channel_id = await self._trunk_id(ref)
        try:
            await self._client.request("POST", channel_path(channel_id, action), params)
        except ControlError as exc:
            if exc.code != "channel_not_in_stasis" or ref.outbound or ref.call_id in self._stasis.calls:
                raise
            hint = "the caller came in by dialplan Dial(), not Stasis(): ARI can hang it up but cannot"
            raise ControlError(f"{exc} ({hint} {verb} it)", exc.code) from exc

    async def _trunk_id(self, ref: ChannelRef) -> str:
        call = self._stasis.calls.get(ref.call_id)
        if call is not None:  # ours in Stasis: inbound through [bridge-inbound-ari], or outbound
            return call.trunk.channel_id
        if ref.outbound:
            return ref.call_id
        listing = await self._client.request("GET", "channels")
        channels = listing if isinstance(listing, list) else []
        ids = {str(c.get("name")): str(c.get("id")) for c in channels if isinstance(c, dict)}
        media_name = ref.media_channel or mapping.audiosocket_channel(ids, ref.call_id) or ""
        if not media_name:
            raise ControlError(
                f"call {ref.call_id}: no media channel to find the caller by", "channel_not_found"
            )
        media_id = ids.get(media_name)
        if media_id is None:
            raise ControlError(f"no channel named {media_name}", "channel_not_found")
        peer = await self._client.request(
            "GET", channel_path(media_id, "variable"), {"variable": "BRIDGEPEER"}
        )
        peer_name = str(peer.get("value", "")) if isinstance(peer, dict) else ""
        if peer_name not in ids:
            raise ControlError(f"{media_name} is not bridged to a caller", "channel_not_found")
        return ids[peer_name]

    # --- inbound (dialplan Stasis(<app>,inbound,${EXTEN})) --------------------------------------------

    async def _inbound(self, channel: Mapping[str, Any], extension: str) -> None:
        channel_id = str(channel.get("id", ""))
        number, name = mapping.party(channel.get("caller"))
        caller, called = mapping.plus_digits(number), mapping.plus_digits(extension)
        call_id = str(uuid.uuid4()) if self.audiosocket_media else channel_id
        trunk = self._stasis.new_leg(channel_id)
        trunk.name, trunk.caller = str(channel.get("name", "")), (number, name)
        trunk.outcome.set_result(STARTED)  # it is in Stasis already
        call = Call(call_id, trunk)
        self._stasis.track(call, trunk)
        try:
            if self.on_inbound is None:
                raise ControlError("nothing admits inbound Stasis calls", "inbound_disabled")
            await self.on_inbound(InboundCall(call_id, channel_id, caller, called, name))
        except (BridgeError, ControlError) as refusal:
            log.info("ari_inbound_refused", call_id=call_id, code=refusal.code)
            await self._failover(call)
            return
        except Exception:
            log.exception("ari_inbound_admission_failed", call_id=call_id)
            await self._failover(call)
            return
        try:
            call.check_alive()
            await self._client.request("POST", channel_path(channel_id, "answer"))
            variables = {"BRIDGE_CALL_ID": call_id, "BRIDGE_FROM": caller, "BRIDGE_TO": called}
            await self._attach_media(call, caller, called, variables)
        except ControlError as exc:
            log.warning("ari_inbound_media_failed", call_id=call_id, code=exc.code, error=str(exc))
            await self._failover(call)

    async def _failover(self, call: Call) -> None:
        """Never silence: a refused caller, or one whose media leg failed, continues in the failover
        context (the rest of the call is removed)."""
        trunk = call.trunk
        if not trunk.left:
            params = {"context": self._ari.failover_context, "extension": "s", "priority": "1"}
            try:
                await self._client.request("POST", channel_path(trunk.channel_id, "continue"), params)
                trunk.left = True  # the dialplan's now: the teardown must not hang it up
            except ControlError as exc:
                gone = exc.code == "channel_not_found"  # the caller hung up meanwhile: nothing to do
                (log.info if gone else log.warning)(
                    "ari_failover_failed", call_id=call.call_id, code=exc.code, error=str(exc)
                )
        await self._stasis.finish(call)

    # --- call setup ---------------------------------------------------------------------------------

    async def _detect_machine(self, call: Call) -> str:
        """Send the answered callee through the AMD context; its AMDSTATUS once it is back in Stasis."""
        trunk = call.trunk
        call.amd = asyncio.get_running_loop().create_future()
        try:
            call.check_alive()
            params = {"context": self._ari.amd_context, "extension": "s", "priority": "1"}
            await self._client.request("POST", channel_path(trunk.channel_id, "continue"), params)
            status, cause = await asyncio.wait_for(asyncio.shield(call.amd), self._amd_timeout)
        except TimeoutError as exc:
            trunk.left = False  # still ours, somewhere in the dialplan: the teardown hangs it up
            raise ControlError(f"AMD gave no result in {self._amd_timeout:.0f} s", "amd_timeout") from exc
        finally:
            call.amd = None
        call.check_alive()
        log.info("ari_amd", call_id=call.call_id, status=status, cause=cause)
        return status

    async def _attach_media(
        self, call: Call, from_number: str, to_number: str, variables: dict[str, str], amd: str = ""
    ) -> None:
        trunk = call.trunk
        media = call.media = self._stasis.new_leg(f"{trunk.channel_id}-media")
        self._stasis.track(call, media)
        number, name = trunk.caller
        body = {"variables": {**variables, **mapping.caller_id_variables(number or from_number, name)}}
        params = {"app": self._ari.app, "channelId": media.channel_id}
        if self.audiosocket_media:
            params |= {
                "external_host": self._audiosocket_address,
                "format": self._audiosocket_format,
                "encapsulation": "audiosocket",
                "transport": "tcp",
                "data": mapping.audiosocket_uuid(call.call_id),
            }
        else:
            params |= {
                "external_host": self._media_connection,
                "format": self._media_format,
                "encapsulation": "none",
                "transport": "websocket",
                "connection_type": "client",
                "transport_data": mapping.media_transport_data(call.call_id, from_number, to_number, amd),
            }
        call.check_alive()
        await self._client.request("POST", "channels/externalMedia", params, body)
        try:
            outcome = await asyncio.wait_for(asyncio.shield(media.outcome), self._media_timeout)
        except TimeoutError as exc:
            raise ControlError("the media socket did not connect in time", "media_failed") from exc
        if outcome == ENDED:
            raise ControlError(f"the media channel ended (cause {media.cause})", "media_failed")
        call.check_alive()
        call.bridge_id = f"{trunk.channel_id}-bridge"
        await self._client.request("POST", "bridges", {"type": "mixing", "bridgeId": call.bridge_id})
        call.check_alive()
        channels = f"{trunk.channel_id},{media.channel_id}"
        await self._client.request(
            "POST", f"bridges/{quote(call.bridge_id, safe='')}/addChannel", {"channel": channels}
        )

    # --- events -------------------------------------------------------------------------------------

    def _reconnected(self) -> None:
        self._stasis.spawn(self._stasis.reconcile())

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._stasis.apply(event) or self._closing or event.get("type") != "StasisStart":
            return
        channel = event.get("channel")
        if not isinstance(channel, dict):
            return
        called = mapping.inbound_called(event.get("args"))
        if called is not None:
            self._stasis.spawn(self._inbound(channel, called))
            return
        # Unannounced: a media leg of a call already torn down is hung up; anything else (a dialplan that
        # calls Stasis() some other way) goes to the failover context rather than sit in silence.
        name, channel_id = str(channel.get("name", "")), str(channel.get("id", ""))
        log.warning("ari_unexpected_stasis_channel", channel=name, args=str(event.get("args"))[:120])
        if name.startswith(("WebSocket/", "AudioSocket/")):
            action = self._client.request("DELETE", channel_path(channel_id), {"reason": "normal"})
        else:
            params = {"context": self._ari.failover_context, "extension": "s", "priority": "1"}
            action = self._client.request("POST", channel_path(channel_id, "continue"), params)
        self._stasis.spawn(_quietly(action))
