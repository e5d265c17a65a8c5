"""The call life cycle of contract section 6, as a pure transition table.

pending -> connecting -> active -> ended | failed; an outbound call starts as
`dialing` instead of `pending` (ringing the callee). Terminal states absorb every
later event, which is what makes `terminate`, hangups and API ends idempotent.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


class CallState(enum.StrEnum):
    PENDING = "pending"
    DIALING = "dialing"
    CONNECTING = "connecting"
    ACTIVE = "active"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in (CallState.ENDED, CallState.FAILED)

    @property
    def awaits_media(self) -> bool:
        """Announced (inbound) or ringing (outbound): no media socket yet."""
        return self in (CallState.PENDING, CallState.DIALING)


class EndedBy(enum.StrEnum):
    CALLER = "caller"
    BOT = "bot"
    API = "api"
    TIMEOUT = "timeout"
    ERROR = "error"
    SHUTDOWN = "shutdown"


class CallEvent(enum.StrEnum):
    MEDIA_ATTACHED = "media_attached"
    MODEL_READY = "model_ready"
    END = "end"
    FAIL = "fail"


_S, _E = CallState, CallEvent
TRANSITIONS: Final = MappingProxyType(
    {
        (_S.PENDING, _E.MEDIA_ATTACHED): _S.CONNECTING,
        (_S.PENDING, _E.END): _S.ENDED,
        (_S.PENDING, _E.FAIL): _S.FAILED,
        (_S.DIALING, _E.MEDIA_ATTACHED): _S.CONNECTING,
        (_S.DIALING, _E.END): _S.ENDED,
        (_S.DIALING, _E.FAIL): _S.FAILED,
        (_S.CONNECTING, _E.MODEL_READY): _S.ACTIVE,
        (_S.CONNECTING, _E.END): _S.ENDED,
        (_S.CONNECTING, _E.FAIL): _S.FAILED,
        (_S.ACTIVE, _E.END): _S.ENDED,
        (_S.ACTIVE, _E.FAIL): _S.FAILED,
    }
)


@dataclass(frozen=True, slots=True)
class Transition:
    before: CallState
    after: CallState

    @property
    def changed(self) -> bool:
        return self.before is not self.after


class InvalidTransition(Exception):
    def __init__(self, state: CallState, event: CallEvent) -> None:
        super().__init__(f"{event.value} is not allowed while the call is {state.value}")
        self.state = state
        self.event = event


def next_state(state: CallState, event: CallEvent) -> Transition:
    """The transition `event` causes from `state`; terminal states absorb everything.

    Raises InvalidTransition for an event that makes no sense now (e.g. a second
    media socket for a call that already has one).
    """
    if state.is_terminal:
        return Transition(state, state)
    after = TRANSITIONS.get((state, event))
    if after is None:
        raise InvalidTransition(state, event)
    return Transition(state, after)
