"""The registry of live calls: admission, lookup by call id, pending expiry, drain.

Everything that wants a call (webhooks, media sockets, the API, shutdown) goes
through these public methods; nobody else keeps references to sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import AtCapacity, Conflict, NotFound, ShuttingDown
from bridge.logging import get_logger
from bridge.session.metrics import CallMetrics, CallOutcome, LiveCalls, label_reason
from bridge.session.session import CallInfo, Session
from bridge.session.state import CallState, EndedBy, InvalidTransition


@dataclass(frozen=True, slots=True)
class Capacity:
    max_calls: int
    active_calls: int
    available: int
    draining: bool


def call_outcome(session: Session) -> CallOutcome:
    """What a finished session adds to the metrics. A failed call's reason is its error code, which can
    come from a model provider: anything but a short snake_case word is "other", keeping the label small."""
    if session.state is CallState.FAILED:
        reason = label_reason(session.error_code or "unknown")
    else:
        reason = session.disconnected_by.value if session.disconnected_by else "unknown"
    stats = session.stats
    return CallOutcome(
        status=session.state.value,
        reason=reason,
        frames_in=stats.frames_in,
        frames_out=stats.frames_out,
        drops=stats.drops,
        protocol_errors=stats.protocol_errors,
        barge_ins=session.barge_ins,
        model_reconnects=session.model_reconnects,
        duration_s=session.duration_seconds if session.connected_at is not None else None,
        first_audio_s=session.first_audio_s,
        response_latencies_s=tuple(session.response_latencies_s),
        uplink=session.uplink_latency,
        downlink=session.downlink_latency,
    )


class SessionManager:
    def __init__(
        self,
        *,
        max_calls: int,
        pending_ttl_seconds: float = 60.0,
        on_new_session: Callable[[Session], None] | None = None,
    ) -> None:
        self.max_calls = max_calls
        self._on_new_session = on_new_session
        self.pending_ttl_seconds = pending_ttl_seconds
        self._live: dict[str, Session] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._draining = False
        self.outcomes: Counter[str] = Counter()
        self.metrics = CallMetrics(self._live_calls)  # a collector: register it in a CollectorRegistry
        self._log = get_logger("sessions")

    # -- admission ---------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining

    def capacity(self) -> Capacity:
        active = len(self._live)
        available = 0 if self._draining else max(0, self.max_calls - active)
        return Capacity(self.max_calls, active, available, self._draining)

    def live_for(self, company_id: str) -> int:
        """The company's calls holding a slot: pending, dialing or connected (O(live calls))."""
        return sum(1 for session in self._live.values() if session.company_id == company_id)

    def live_sessions(self) -> list[Session]:
        """Every call holding a slot (pending, dialing or connected), oldest first: a snapshot."""
        return sorted(self._live.values(), key=lambda session: session.created_at)

    def _live_calls(self) -> LiveCalls:
        capacity = self.capacity()
        sessions = self._live.values()
        return LiveCalls(
            active=capacity.active_calls,
            max_calls=capacity.max_calls,
            draining=capacity.draining,
            uplink=[session.uplink_latency for session in sessions],
            downlink=[session.downlink_latency for session in sessions],
        )

    def check_admit(self) -> None:
        """Refuse (503) when this node drains or is full: asked before the fleet is, and again at creation."""
        self._admit()

    def _admit(self) -> None:
        if self._draining:
            raise ShuttingDown("the bridge is shutting down and takes no new calls")
        if len(self._live) >= self.max_calls:
            raise AtCapacity(f"at capacity ({self.max_calls} calls)")

    def _register(self, session: Session) -> None:
        self._live[session.call_id] = session
        session.on_end(self._forget)
        if self._on_new_session is not None:
            self._on_new_session(session)
        self._log.info(
            "call_created",
            call_id=session.call_id,
            company_id=session.company_id,
            direction=session.info.direction,
            state=session.state.value,
        )

    # -- creation and attachment -----------------------------------------------------------------

    def create_pending(
        self, info: CallInfo, *, dialing: bool = False, ttl_seconds: float | None = None
    ) -> Session:
        """A call announced by a webhook, or (`dialing`) an outbound call. Without media within the TTL
        it fails. Who may create it is `session.admission`'s business; an id already live is refused."""
        self._refuse_live(info.call_id)
        self._admit()
        session = Session(info, state=CallState.DIALING if dialing else CallState.PENDING)
        self._register(session)
        loop = asyncio.get_running_loop()
        ttl = self.pending_ttl_seconds if ttl_seconds is None else ttl_seconds
        self._expiry[info.call_id] = loop.call_later(ttl, self._expire, session)
        return session

    def attach(self, call_id: str) -> Session:
        """Hand a pending call to the media socket that just arrived for it."""
        session = self._live.get(call_id)
        if session is None:
            raise NotFound(f"no pending call {call_id}", code="unknown_call")
        try:
            session.attach_owner()
        except InvalidTransition as exc:
            raise Conflict(f"call {call_id} already has a media socket", code="already_attached") from exc
        self._cancel_expiry(call_id)
        return session

    def create_attached(self, info: CallInfo) -> Session:
        """A call whose media socket arrived with no webhook before it (admission allowed it)."""
        self._refuse_live(info.call_id)
        self._admit()
        session = Session(info)
        self._register(session)
        session.attach_owner()
        return session

    def _refuse_live(self, call_id: str) -> None:
        if call_id in self._live:
            raise Conflict(f"call id {call_id} is already in use", code="duplicate_call")

    # -- lookup and ending -------------------------------------------------------------------

    def get(self, call_id: str) -> Session | None:
        return self._live.get(call_id)

    def get_pending(self, call_id: str) -> Session | None:
        session = self._live.get(call_id)
        return session if session is not None and session.state.awaits_media else None

    def end(self, call_id: str, by: EndedBy) -> Session | None:
        """Ask a live call to end; None if there is no such live call (already over is fine)."""
        session = self._live.get(call_id)
        if session is not None:
            session.request_end(by)
        return session

    def _expire(self, session: Session) -> None:
        self._expiry.pop(session.call_id, None)
        if session.state.awaits_media:
            self._log.info("pending_call_expired", call_id=session.call_id, state=session.state.value)
            session.request_end(EndedBy.TIMEOUT, "media_timeout", failed=True)

    def _cancel_expiry(self, call_id: str) -> None:
        handle = self._expiry.pop(call_id, None)
        if handle is not None:
            handle.cancel()

    def hand_off(self, call_id: str) -> Session | None:
        """Another node took this pending call over (its media socket arrived there): let it go here,
        silently. None when it is not here or no longer waiting for media."""
        session = self._live.get(call_id)
        if session is None or not session.state.awaits_media:
            return None
        session.hand_off()
        return session

    def _forget(self, session: Session) -> None:
        self._cancel_expiry(session.call_id)
        if self._live.get(session.call_id) is session:
            del self._live[session.call_id]
        if session.handed_off:  # not a call of ours any more: no outcome, no "call_ended"
            self._log.info("call_handed_off", call_id=session.call_id, company_id=session.company_id)
            return
        self.outcomes[session.state.value] += 1
        self.metrics.record(call_outcome(session))
        stats = session.stats
        self._log.info(
            "call_ended",
            call_id=session.call_id,
            company_id=session.company_id,
            status=session.state.value,
            disconnected_by=session.disconnected_by.value if session.disconnected_by else None,
            error_code=session.error_code,
            duration_seconds=session.duration_seconds,
            frames_in=stats.frames_in,
            frames_out=stats.frames_out,
            drops=stats.drops,
            first_audio_ms=round(session.first_audio_s * 1000) if session.first_audio_s is not None else None,
        )

    # -- shutdown ----------------------------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """Refuse new calls, let live ones finish for up to `seconds`, then end the rest."""
        self._draining = True
        self._log.info("draining", live_calls=len(self._live), drain_seconds=seconds)
        # Calls still waiting for media will be refused their socket anyway: end them now.
        for session in list(self._live.values()):
            if session.state.awaits_media:
                session.request_end(EndedBy.SHUTDOWN)
        # Keep part of the budget so owners can drain a goodbye and hang up once asked.
        grace = min(3.0, seconds / 4)
        await self._wait_all_ended(seconds - grace)
        for session in list(self._live.values()):
            session.request_end(EndedBy.SHUTDOWN)
        await self._wait_all_ended(grace)
        for session in list(self._live.values()):
            session.finish(EndedBy.SHUTDOWN)

    async def _wait_all_ended(self, seconds: float) -> None:
        waits = [asyncio.ensure_future(s.ended.wait()) for s in self._live.values()]
        if not waits:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*waits), timeout=seconds)
        for wait in waits:
            wait.cancel()
