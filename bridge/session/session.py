"""One call: its identity, its life-cycle state, its counters and its end.

The task that owns the call's media (once a socket attaches) runs it; everyone
else (webhooks, the API, shutdown) only *asks* it to end through `request_end`,
and the owner decides how (drain the goodbye, then hang up). A call without an
owner yet (pending) ends at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.session.state import CallEvent, CallState, EndedBy, Transition, next_state

Direction = Literal["inbound", "outbound"]


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_id: str
    company_id: str
    direction: Direction
    caller: str
    called: str
    caller_name: str = ""
    websocket_url: str = ""


@dataclass(slots=True)
class CallStats:
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    protocol_errors: int = 0


@dataclass(slots=True)
class EndRequest:
    by: EndedBy
    error_code: str | None = None
    failed: bool = False


EndListener = Callable[["Session"], None]


@dataclass(eq=False)
class Session:
    info: CallInfo
    created_at: float = field(default_factory=time.time)
    state: CallState = CallState.PENDING
    connected_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    disconnected_by: EndedBy | None = None
    error_code: str | None = None
    stats: CallStats = field(default_factory=CallStats)
    end_request: EndRequest | None = None
    has_owner: bool = False
    barge_ins: int = 0
    dtmf_digits: str = ""
    played_ms_estimated: bool = False  # playout position guessed from the send clock (no marks)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_requested: asyncio.Event = field(default_factory=asyncio.Event)
    _listeners: list[EndListener] = field(default_factory=list)

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def company_id(self) -> str:
        return self.info.company_id

    def on_end(self, listener: EndListener) -> None:
        self._listeners.append(listener)

    def _apply(self, event: CallEvent) -> Transition:
        transition = next_state(self.state, event)
        self.state = transition.after
        return transition

    def attach_owner(self) -> None:
        """A media socket now owns the call (raises InvalidTransition if it is not pending)."""
        self._apply(CallEvent.MEDIA_ATTACHED)
        self.has_owner = True
        self.connected_at = time.time()

    def mark_active(self) -> None:
        if self._apply(CallEvent.MODEL_READY).changed:
            self.answered_at = time.time()

    def request_end(self, by: EndedBy, error_code: str | None = None, *, failed: bool = False) -> None:
        """Ask the call to end (`failed`: it never became a conversation). The first request wins."""
        if self.state.is_terminal or self.end_request is not None:
            return
        self.end_request = EndRequest(by, error_code, failed)
        self.end_requested.set()
        if not self.has_owner:
            self.finish(by, error_code, failed=failed)

    def finish(self, by: EndedBy, error_code: str | None = None, *, failed: bool = False) -> None:
        """Record the end. Called by the owner once teardown is done (or directly when there is none)."""
        if not self._apply(CallEvent.FAIL if failed else CallEvent.END).changed:
            return
        self.ended_at = time.time()
        self.disconnected_by = by
        self.error_code = error_code
        self.ended.set()
        self.end_requested.set()
        for listener in self._listeners:
            listener(self)

    @property
    def duration_seconds(self) -> float:
        if self.connected_at is None:
            return 0.0
        return round((self.ended_at or time.time()) - self.connected_at, 3)

    def snapshot(self) -> dict[str, Any]:
        """The call as the API shows it (no secrets, no audio)."""
        return {
            "call_id": self.info.call_id,
            "company_id": self.info.company_id,
            "direction": self.info.direction,
            "from": self.info.caller,
            "to": self.info.called,
            "status": self.state.value,
            "created_at": self.created_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "duration_seconds": self.duration_seconds,
            "disconnected_by": self.disconnected_by.value if self.disconnected_by else None,
            "error_code": self.error_code,
            "barge_ins": self.barge_ins,
            "played_ms_estimated": self.played_ms_estimated,
        }
