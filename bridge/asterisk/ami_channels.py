"""Which Asterisk channel is a call's far party, for the AMI controller (`ami.py`), and how it hung up.

Outbound: the trunk channel's uniqueid is the call id (`ChannelId`); its name is learnt from `Newchannel`
(or the OriginateResponse). Until then the call id itself is sent as `Channel`: Asterisk's channel
lookup (`ast_channel_get_by_name`) falls back to the uniqueid when no name matches.

Inbound: the caller's channel. With a media channel name (chan_websocket MEDIA_START) it is that
channel's `BRIDGEPEER` (`Getvar`). Without one (AudioSocket never names its channel), or when the media
channel is not bridged (yet), it is the channel the sample dialplan marked with `_BRIDGE_CALL_ID`: one
`Status` with `Variables: BRIDGE_CALL_ID` lists every channel with the variable read on each, and the
caller is the one carrying the call id that is not a media channel (`ami_mapping.caller_channel`).
Each answer is remembered, so a call costs at most one lookup.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from bridge.asterisk.ami_mapping import (
    CALL_ID_VARIABLE,
    HangupCause,
    caller_channel,
    check_header_value,
    hangup_cause_of,
    status_action,
)
from bridge.logging import get_logger
from bridge.session.control import ChannelRef, ControlError

Message = Mapping[str, Any]  # panoramisk.message.Message: case-insensitive, missing keys read as ''
SendAction = Callable[[dict[str, Any], str], Awaitable[Message]]
SendListAction = Callable[[dict[str, Any], str], Awaitable[list[Message]]]

_MEMORY = 4096  # calls remembered (channel names, hangup causes): bounded, oldest forgotten first


def _remember(store: OrderedDict[str, Any], key: str, value: Any) -> None:
    store[key] = value
    store.move_to_end(key)
    while len(store) > _MEMORY:
        store.popitem(last=False)


class CallChannels:
    """The channel names and hangup causes the controller has learnt, and the look-ups that learn them."""

    def __init__(self, send: SendAction, send_list: SendListAction) -> None:
        self._send = send
        self._send_list = send_list
        self._log = get_logger("ami")
        self._outbound: OrderedDict[str, str] = OrderedDict()  # call id -> trunk channel name ("" = not yet)
        self._inbound: OrderedDict[str, str] = OrderedDict()  # call id -> the caller's channel
        self._call_of_channel: OrderedDict[str, str] = OrderedDict()  # channel name -> call id
        self._causes: OrderedDict[str, HangupCause] = OrderedDict()  # uniqueid or call id -> cause

    # --- what events and Originate say --------------------------------------------------------------

    def dialing(self, call_id: str) -> None:
        """An Originate with `ChannelId: call_id` is about to go out."""
        _remember(self._outbound, call_id, self._outbound.get(call_id, ""))

    def outbound_channel(self, call_id: str) -> str:
        return self._outbound.get(call_id, "")

    def answered(self, call_id: str, channel: str) -> None:
        _remember(self._outbound, call_id, channel)
        _remember(self._call_of_channel, channel, call_id)

    def on_newchannel(self, event: Message) -> None:
        uniqueid = str(event.get("Uniqueid", ""))
        if uniqueid in self._outbound and not self._outbound[uniqueid]:
            self.answered(uniqueid, str(event.get("Channel", "")))

    def on_hangup(self, event: Message) -> None:
        cause = hangup_cause_of(event)
        if cause is None:
            return
        uniqueid = str(event.get("Uniqueid", ""))
        if uniqueid:
            _remember(self._causes, uniqueid, cause)
        call_id = self._call_of_channel.get(str(event.get("Channel", "")))
        if call_id and call_id != uniqueid:
            _remember(self._causes, call_id, cause)

    def last_hangup_cause(self, call_id: str) -> HangupCause | None:
        return self._causes.get(call_id)

    # --- look-ups -------------------------------------------------------------------------------------

    async def trunk_channel(self, ref: ChannelRef) -> str:
        """The channel to hang up, redirect or play DTMF to: the callee's, or the caller's."""
        check_header_value(ref.call_id, "call_id")
        if ref.outbound:
            channel = self._outbound.get(ref.call_id) or ref.call_id  # uniqueid lookup fallback
        else:
            channel = self._inbound.get(ref.call_id, "") or await self._find_caller(ref)
        if not channel or channel.startswith("/"):  # '/…/' would be a Hangup regex
            raise ControlError(f"no trunk channel for call {ref.call_id}", code="channel_not_found")
        return channel

    async def _find_caller(self, ref: ChannelRef) -> str:
        if ref.media_channel:
            try:
                return self._learn(ref.call_id, await self._bridge_peer(ref.media_channel))
            except ControlError as exc:
                if exc.code != "channel_not_found":
                    raise
                self._log.info("ami_bridgepeer_missing", call_id=ref.call_id, reason=str(exc))
        return self._learn(ref.call_id, await self._marked_caller(ref.call_id))

    def _learn(self, call_id: str, channel: str) -> str:
        _remember(self._inbound, call_id, channel)
        _remember(self._call_of_channel, channel, call_id)
        return channel

    async def _bridge_peer(self, media_channel: str) -> str:
        reply = await self._send(
            {
                "Action": "Getvar",
                "Channel": check_header_value(media_channel, "media_channel"),
                "Variable": "BRIDGEPEER",
            },
            "Getvar BRIDGEPEER",
        )
        # In a multi-party bridge BRIDGEPEER lists the others comma-separated; the media leg's is two-party.
        peer = str(reply.get("Value", "")).split(",")[0].strip()
        if not peer:
            raise ControlError(
                f"media channel {media_channel} is not bridged to a caller", "channel_not_found"
            )
        return peer

    async def _marked_caller(self, call_id: str) -> str:
        events = await self._send_list(status_action(CALL_ID_VARIABLE), f"Status {CALL_ID_VARIABLE}")
        try:
            return caller_channel(events, call_id)
        except LookupError as exc:
            raise ControlError(f"call {call_id}: {exc}", code="channel_not_found") from exc
