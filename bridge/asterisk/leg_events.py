"""What a chan_websocket media leg reports to its driver, what it asks the driver to write, and its
counters. Plain records: the state machine is `chan_websocket_leg.ChanWebsocketLeg`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from bridge.asterisk.chan_websocket import MediaStart, Status


# --------------------------------------------------------------------------- what the leg reports
@dataclass(frozen=True, slots=True)
class Started:
    media_start: MediaStart


@dataclass(frozen=True, slots=True)
class AudioReceived:
    data: bytes
    received_at: float | None = None  # when the driver read it (the `now` it passed)


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    digit: str


@dataclass(frozen=True, slots=True)
class Drained:
    """Asterisk's queue ran empty (QUEUE_DRAINED, or the hangup drain mark was reached)."""


@dataclass(frozen=True, slots=True)
class Xoff:
    pass


@dataclass(frozen=True, slots=True)
class Xon:
    pass


@dataclass(frozen=True, slots=True)
class PlayedUpTo:
    """Asterisk confirmed playout up to here: `ms` of response number `response`, `total_ms` overall."""

    response: int
    ms: float
    total_ms: float


@dataclass(frozen=True, slots=True)
class StatusReceived:
    status: Status


@dataclass(frozen=True, slots=True)
class ProtocolErrorSeen:
    reason: str


@dataclass(frozen=True, slots=True)
class AsteriskErrorSeen:
    text: str


LegEvent: TypeAlias = (
    Started
    | AudioReceived
    | DtmfReceived
    | Drained
    | Xoff
    | Xon
    | PlayedUpTo
    | StatusReceived
    | ProtocolErrorSeen
    | AsteriskErrorSeen
)


# --------------------------------------------------------------------------- what the driver writes
@dataclass(frozen=True, slots=True)
class TextMessage:
    text: str


@dataclass(frozen=True, slots=True)
class BinaryMessage:
    """Whole frames (and, inside a buffering bracket, a response's short tail); `received_at`: those
    of the queued chunks whose first byte is in this message (for the downlink latency); `audible`:
    Asterisk's modelled queue was empty when it went, so any wait before it was heard as silence
    (behind queued audio a wait costs the caller nothing, and is not latency)."""

    data: bytes
    received_at: tuple[float, ...] = ()
    audible: bool = True


@dataclass(frozen=True, slots=True)
class CloseSocket:
    """Close the WebSocket (code 1000): hangup before any control channel existed."""


Outgoing: TypeAlias = TextMessage | BinaryMessage | CloseSocket


@dataclass(slots=True)
class LegCounters:
    frames_in: int = 0  # binary messages from Asterisk
    frames_out: int = 0  # queue entries (frames) sent to Asterisk
    drops_prestart: int = 0  # inbound messages dropped before MEDIA_START
    drops_local_overflow: int = 0  # bytes of model audio refused: local queue full
    drops_stale: int = 0  # bytes of model audio refused: from before an interrupt
    xoff_count: int = 0
    protocol_errors: int = 0
