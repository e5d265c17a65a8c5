"""What the session layer asks of Asterisk's call control (AMI or ARI), independent of which one.

`asterisk/ami.py` and `asterisk/ari.py` implement `CallController`; the session layer
(outbound dialing, the call-control API, the model's tools) uses only this interface.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class ControllerHealth(StrEnum):
    OK = "ok"  # connected and logged in
    DEGRADED = "degraded"  # lost the connection, reconnecting
    DOWN = "down"  # never connected, or gave up / closed


class DialOutcome(StrEnum):
    ANSWERED = "answered"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"
    REJECTED = "rejected"  # hung up before answer
    FAILED = "failed"  # no route, channel unavailable, refused by Asterisk, ...


class ControlError(Exception):
    """An action Asterisk refused or never answered. `code` is the API's machine code."""

    def __init__(self, message: str, code: str = "asterisk_error") -> None:
        super().__init__(message)
        self.code = (
            code  # asterisk_unavailable | action_timeout | permission_denied | channel_not_found | ...
        )


@dataclass(frozen=True, slots=True)
class OriginateRequest:
    call_id: str  # becomes the channel's uniqueid (AMI ChannelId / ARI channelId) and BRIDGE_CALL_ID
    from_number: str  # E.164 with '+': the caller id the callee sees
    to_number: str  # E.164 with '+' or an extension: fills `{to}` in [asterisk.originate] endpoint
    variables: Mapping[str, str] = field(default_factory=dict)  # extra channel variables
    # How long the callee may ring: overrides [asterisk.originate] timeout_seconds when set (AMI Originate
    # `Timeout` in ms, ARI `timeout` in s).
    ring_timeout_seconds: float | None = None
    # Ask Asterisk for answering-machine detection (AMD()) on the answered channel; its AMDSTATUS comes
    # back on the media socket as `amd` (see `bridge.session.leg.MediaLeg.call_variables`).
    amd: bool = False


@dataclass(frozen=True, slots=True)
class DialResult:
    outcome: DialOutcome
    reason: str = ""  # Asterisk's own words (OriginateResponse Reason, ARI dialstatus/cause), for the record
    channel: str = ""  # the callee's (trunk) channel name, when known


@dataclass(frozen=True, slots=True)
class ChannelRef:
    """How a controller finds a call's channels.

    Outbound calls: the trunk channel's uniqueid is the call id. Inbound calls: the media channel's name
    (chan_websocket MEDIA_START `channel`), from which the controller finds the caller's trunk channel.
    """

    call_id: str
    outbound: bool
    media_channel: str = ""


@dataclass(frozen=True, slots=True)
class InboundCall:
    """A caller that entered the controller's Stasis app from the dialplan (ARI mode,
    `Stasis(<app>,inbound,${EXTEN})`): admitted like a `connect` webhook before any media is set up."""

    call_id: str  # the id to register: the caller channel's id, or the AudioSocket leg's UUID
    channel_id: str  # the caller's channel in Asterisk
    caller: str  # its CALLERID(num) as `+` and digits ("" when it has none), like the webhook's
    called: str  # the dialled extension (the Stasis argument), likewise
    caller_name: str = ""


# Admits an inbound call; raises (a BridgeError) to refuse it, and the caller goes to the failover context.
InboundHandler = Callable[[InboundCall], Awaitable[None]]


class CallController(Protocol):
    @property
    def health(self) -> ControllerHealth: ...

    async def start(self) -> None:
        """Begin connecting (does not wait for Asterisk: health says how it goes)."""

    async def close(self) -> None: ...

    async def originate(self, request: OriginateRequest) -> DialResult:
        """Dial, and return once the callee answered or the dial failed (may take the dial timeout).

        Raises ControlError when Asterisk refuses at once or cannot be reached.
        """
        ...

    async def hangup(self, ref: ChannelRef) -> None:
        """Hang up the call's trunk channel (also cancels a dial still ringing)."""

    async def transfer(self, ref: ChannelRef, target: str) -> None:
        """Send the caller's trunk channel to the transfer context with `target` as the extension."""

    async def send_dtmf(self, ref: ChannelRef, digits: str) -> None:
        """Play DTMF digits to the far party (on the trunk channel, not the media channel)."""
