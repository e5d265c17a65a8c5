"""What the API may do with calls: dial out, look up, list, end, cancel, transfer, send keys, say.

A company sees and controls only its own calls: another company's call id is a 404,
exactly like an unknown one, so ids cannot be probed. Live calls are read from the
session (fresher than the store); finished ones from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.agents.catalog import DEFAULT_AGENT_ID, AgentCatalog
from bridge.agents.templating import call_facts
from bridge.cluster.base import ControlRequest
from bridge.errors import BadRequest, BridgeError, Conflict, NotFound, Unavailable
from bridge.logging import get_logger
from bridge.session.admission import Admission
from bridge.session.control import (
    CallController,
    ChannelRef,
    ControlError,
    ControllerHealth,
    DialOutcome,
    OriginateRequest,
)
from bridge.session.fleet import FleetLink
from bridge.session.session import CallInfo, Session
from bridge.session.state import CallState, EndedBy
from bridge.store.records import STATUSES, CallQuery, CallRecord, CallStore
from bridge.store.schema import record_to_row, row_to_record

__all__ = ["STATUSES", "CallQuery", "CallService", "ControlOutcome", "OutboundCall", "control_failure"]

ANSWER_TO_MEDIA_SECONDS = 30.0  # after the dial timeout: the answered callee's media socket must come


@dataclass(frozen=True, slots=True)
class OutboundCall:
    company_id: str
    from_number: str
    to_number: str
    call_objective: str
    first_message: str = ""
    variables: Mapping[str, str] | None = None
    ring_timeout_seconds: float | None = None  # None: [asterisk.originate] timeout_seconds
    amd: bool = False  # answering-machine detection (also on when the company's agent asks for it)
    agent_id: str = ""  # "": the company's default agent
    task_id: str = ""
    webhook_url: str = ""
    webhook_events: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    """What a control request did: the call and its state right after (on whichever node runs it)."""

    call_id: str
    status: str

    @classmethod
    def of(cls, session: Session) -> ControlOutcome:
        return cls(session.call_id, session.state.value)

    def body(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "status": self.status}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ControlOutcome:
        return cls(str(body["call_id"]), str(body["status"]))


def _text(request: ControlRequest, name: str) -> str:
    value = request.args.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{request.op}: {name} must be a string", code="bad_request")
    return value


def control_failure(exc: ControlError) -> BridgeError:
    """A refused or unanswered Asterisk action, as the API reports it."""
    if exc.code in ("channel_not_found", "channel_not_in_stasis"):
        return Conflict(f"Asterisk cannot do that on this call now: {exc}", code=exc.code)
    return Unavailable(f"Asterisk did not carry it out: {exc}", code=exc.code)


class CallService:
    def __init__(
        self,
        admission: Admission,
        store: CallStore,
        controller: CallController | None,
        *,
        dial_timeout_seconds: float,
        agents: AgentCatalog | None = None,
    ) -> None:
        self.admission = admission
        # The company's agents; None (tests building a bare service): only the config's default agent.
        self.agents = agents or AgentCatalog(admission.directory)
        self.manager = admission.manager
        self.store = store
        self.controller = controller
        self.dial_timeout_seconds = dial_timeout_seconds
        self._dials: set[asyncio.Task[None]] = set()
        self.fleet: FleetLink | None = None  # set by serve_fleet: control of calls other nodes run
        self._log = get_logger("calls")

    def serve_fleet(self, link: FleetLink) -> None:
        """Route control of calls other nodes run to them, and run what they route here."""
        self.fleet = link

        async def record(request: ControlRequest) -> Mapping[str, Any]:
            return {"row": list(record_to_row(await self._record_here(request.company_id, request.call_id)))}

        async def terminate(request: ControlRequest) -> Mapping[str, Any]:
            return {"status": self.admission.end_here(request.company_id, request.call_id)}

        async def end(request: ControlRequest) -> Mapping[str, Any]:
            return (await self._stop_here(request.company_id, request.call_id, cancel=False)).body()

        async def cancel(request: ControlRequest) -> Mapping[str, Any]:
            return (await self._stop_here(request.company_id, request.call_id, cancel=True)).body()

        async def say(request: ControlRequest) -> Mapping[str, Any]:
            interrupt = request.args.get("interrupt")
            if not isinstance(interrupt, bool):
                raise BadRequest("say: interrupt must be a boolean", code="bad_request")
            text = _text(request, "text")
            return (await self._say_here(request.company_id, request.call_id, text, interrupt)).body()

        async def transfer(request: ControlRequest) -> Mapping[str, Any]:
            target = _text(request, "to")
            return (await self._transfer_here(request.company_id, request.call_id, target)).body()

        async def dtmf(request: ControlRequest) -> Mapping[str, Any]:
            digits = _text(request, "digits")
            return (await self._dtmf_here(request.company_id, request.call_id, digits)).body()

        for op, handler in {
            "record": record,
            "terminate": terminate,
            "end": end,
            "cancel": cancel,
            "say": say,
            "transfer": transfer,
            "dtmf": dtmf,
        }.items():
            link.serve(op, handler)

    async def _routed(
        self,
        op: str,
        company_id: str,
        call_id: str,
        args: Mapping[str, Any],
        here: Callable[[], Awaitable[ControlOutcome]],
    ) -> ControlOutcome:
        """`here()` for a call of this node (or none); the owner's answer for a call another node runs."""
        if self.fleet is not None and self.manager.get(call_id) is None:
            node = await self.fleet.owner_elsewhere(company_id, call_id)
            if node is not None:
                return ControlOutcome.from_body(await self.fleet.ask(node, op, company_id, call_id, args))
        return await here()

    @property
    def controller_health(self) -> ControllerHealth | None:
        return None if self.controller is None else self.controller.health

    # -- outbound ---------------------------------------------------------------------------

    async def originate(self, request: OutboundCall) -> Session:
        """Create the call (dialing) and start dialing; the outcome arrives later on the session."""
        self.admission.check_funds(request.company_id)  # 402 before anything else is asked of it
        company = self.admission.directory().companies.get(request.company_id)
        call_id = str(uuid.uuid4())
        variables = dict(request.variables or {})
        facts = call_facts(
            call_id=call_id,
            caller=request.from_number,
            called=request.to_number,
            direction="outbound",
            caller_name="",
            company=(company.settings.name or company.id) if company is not None else request.company_id,
        )
        # Every path that dials (the API, tasks) is checked here: the agent exists and is enabled, and
        # no placeholder would be heard as "{{crm.name}}" (400 before any call exists).
        agent = self.agents.check_call(
            request.company_id,
            request.agent_id,
            variables,
            facts,
            request.call_objective,
            request.first_message,
        )
        controller = self.controller
        if controller is None or controller.health is ControllerHealth.DOWN:
            raise Unavailable("Asterisk call control is not available", code="asterisk_unavailable")
        ring_seconds = request.ring_timeout_seconds or self.dial_timeout_seconds
        info = CallInfo(
            call_id=call_id,
            company_id=request.company_id,
            direction="outbound",
            caller=request.from_number,
            called=request.to_number,
            call_objective=request.call_objective,
            first_message=request.first_message,
            variables=variables,
            amd=request.amd or agent.amd,
            agent_id="" if request.agent_id == DEFAULT_AGENT_ID else request.agent_id,
            task_id=request.task_id,
            webhook_url=request.webhook_url,
            webhook_events=request.webhook_events,
        )
        session = await self.admission.outbound(info, ring_seconds + ANSWER_TO_MEDIA_SECONDS)
        dial = asyncio.ensure_future(self._dial(controller, session, request.ring_timeout_seconds))
        self._dials.add(dial)
        dial.add_done_callback(self._dials.discard)
        return session

    async def _dial(
        self, controller: CallController, session: Session, ring_timeout_seconds: float | None
    ) -> None:
        info = session.info
        request = OriginateRequest(
            info.call_id,
            info.caller,
            info.called,
            {"BRIDGE_COMPANY": info.company_id},
            ring_timeout_seconds=ring_timeout_seconds,
            amd=info.amd,
        )
        try:
            result = await controller.originate(request)
        except ControlError as exc:
            self._log.warning("originate_failed", call_id=info.call_id, code=exc.code, error=str(exc))
            session.dial_outcome = DialOutcome.FAILED.value
            session.request_end(EndedBy.ERROR, exc.code, failed=True)
            return
        session.dial_outcome = result.outcome.value
        self._log.info(
            "dial_outcome", call_id=info.call_id, outcome=result.outcome.value, reason=result.reason
        )
        if session.handed_off:  # answered, and its media went to another node, which runs it now
            return
        if session.state.is_terminal:
            if result.outcome is DialOutcome.ANSWERED:  # ended by the API while ringing: let it go
                with contextlib.suppress(ControlError):
                    await controller.hangup(ChannelRef(info.call_id, outbound=True))
            return
        if result.outcome is not DialOutcome.ANSWERED:
            session.request_end(EndedBy.ERROR, result.outcome.value, failed=True)

    # -- lookup -----------------------------------------------------------------------------

    def _live(self, company_id: str, call_id: str) -> Session | None:
        session = self.manager.get(call_id)
        return session if session is not None and session.company_id == company_id else None

    async def record(self, company_id: str, call_id: str) -> CallRecord:
        if self.fleet is not None and self.manager.get(call_id) is None:
            node = await self.fleet.owner_elsewhere(company_id, call_id)
            if node is not None:
                with contextlib.suppress(Unavailable):  # the owner is gone: its last save stands
                    body = await self.fleet.ask(node, "record", company_id, call_id)
                    return row_to_record(tuple(body["row"]))
        return await self._record_here(company_id, call_id)

    async def _record_here(self, company_id: str, call_id: str) -> CallRecord:
        session = self._live(company_id, call_id)
        if session is not None:
            return session.record()
        record = await self.store.get(company_id, call_id)
        if record is None:
            raise NotFound(f"no call {call_id}", code="unknown_call")
        return record

    async def list(self, query: CallQuery) -> tuple[list[CallRecord], int]:
        return await self.store.list(query)

    # -- control ----------------------------------------------------------------------------

    async def _live_or_finished(self, company_id: str, call_id: str) -> Session:
        """The company's live call; 409 call_finished when it is over, 404 when it is not theirs."""
        session = self._live(company_id, call_id)
        if session is None:
            await self.record(company_id, call_id)  # 404 if it is not theirs or unknown
            raise Conflict(f"call {call_id} is already over", code="call_finished")
        return session

    async def end(self, company_id: str, call_id: str) -> ControlOutcome:
        """Drain what the bot is saying, then hang up; a call still ringing is cancelled."""
        return await self._routed(
            "end", company_id, call_id, {}, lambda: self._stop_here(company_id, call_id, cancel=False)
        )

    async def cancel(self, company_id: str, call_id: str) -> ControlOutcome:
        """Hang up at once, no goodbye: the call fails with error_code `cancelled` (a ringing one too)."""
        return await self._routed(
            "cancel", company_id, call_id, {}, lambda: self._stop_here(company_id, call_id, cancel=True)
        )

    async def _stop_here(self, company_id: str, call_id: str, *, cancel: bool) -> ControlOutcome:
        session = await self._live_or_finished(company_id, call_id)
        ringing = session.state is CallState.DIALING
        if cancel:
            session.request_end(EndedBy.API, "cancelled", cancelled=True)
        else:
            session.request_end(EndedBy.API)
        if ringing and self.controller is not None:
            with contextlib.suppress(ControlError):
                await self.controller.hangup(ChannelRef(call_id, outbound=True))
        return ControlOutcome.of(session)

    async def say(self, company_id: str, call_id: str, text: str, *, interrupt: bool) -> ControlOutcome:
        """The bot speaks `text` now: over what it is saying (`interrupt`), or once it has finished."""
        return await self._routed(
            "say",
            company_id,
            call_id,
            {"text": text, "interrupt": interrupt},
            lambda: self._say_here(company_id, call_id, text, interrupt),
        )

    async def _say_here(self, company_id: str, call_id: str, text: str, interrupt: bool) -> ControlOutcome:
        session = await self._live_or_finished(company_id, call_id)
        if session.end_request is not None:
            raise Conflict(f"call {call_id} is ending", code="call_finished")
        if session.state is not CallState.ACTIVE:
            raise Conflict(
                f"call {call_id} is {session.state.value}, not in conversation", code="call_not_active"
            )
        if not session.speaks_text:
            raise Conflict(
                f"the model of call {call_id} ({session.provider}) cannot speak a given text",
                code="say_not_supported",
            )
        session.ask_to_say(text, interrupt=interrupt)
        return ControlOutcome.of(session)

    async def _controllable(
        self, company_id: str, call_id: str
    ) -> tuple[Session, CallController, ChannelRef]:
        session = await self._live_or_finished(company_id, call_id)
        if session.end_request is not None:
            raise Conflict(f"call {call_id} is ending", code="call_finished")
        if session.state not in (CallState.CONNECTING, CallState.ACTIVE):
            raise Conflict(
                f"call {call_id} is {session.state.value}, not in conversation", code="call_not_active"
            )
        if self.controller is None or self.controller.health is ControllerHealth.DOWN:
            raise Unavailable("Asterisk call control is not available", code="asterisk_unavailable")
        return session, self.controller, session.channel_ref()

    async def transfer(self, company_id: str, call_id: str, target: str) -> ControlOutcome:
        """The caller goes to `target` through the transfer context; the bot's leg leaves."""
        return await self._routed(
            "transfer",
            company_id,
            call_id,
            {"to": target},
            lambda: self._transfer_here(company_id, call_id, target),
        )

    async def _transfer_here(self, company_id: str, call_id: str, target: str) -> ControlOutcome:
        session, controller, ref = await self._controllable(company_id, call_id)
        session.transferred_to = target  # so the media socket closing reads as a transfer
        try:
            await controller.transfer(ref, target)
        except ControlError as exc:
            session.transferred_to = None
            raise control_failure(exc) from exc
        except ValueError as exc:
            session.transferred_to = None
            raise BadRequest(str(exc), code="validation_error") from exc
        session.request_end(EndedBy.API, transfer_to=target)
        return ControlOutcome.of(session)

    async def send_dtmf(self, company_id: str, call_id: str, digits: str) -> ControlOutcome:
        return await self._routed(
            "dtmf",
            company_id,
            call_id,
            {"digits": digits},
            lambda: self._dtmf_here(company_id, call_id, digits),
        )

    async def _dtmf_here(self, company_id: str, call_id: str, digits: str) -> ControlOutcome:
        session, controller, ref = await self._controllable(company_id, call_id)
        try:
            await controller.send_dtmf(ref, digits)
        except ControlError as exc:
            raise control_failure(exc) from exc
        except ValueError as exc:
            raise BadRequest(str(exc), code="validation_error") from exc
        return ControlOutcome.of(session)

    async def close(self) -> None:
        for dial in list(self._dials):
            dial.cancel()
        if self._dials:
            await asyncio.gather(*self._dials, return_exceptions=True)
