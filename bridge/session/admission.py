"""Who may create a call or attach a media socket: the one place the webhook, both media transports and
outbound dialing ask (and, later, the fleet).

The rules:
- A call belongs to the company that owns the called number. A `companyId` that disagrees is refused
  (403 company_mismatch); a `companyId` alone is taken only when no called number is given.
- A company's `allowed_callers` holds on every path that creates an inbound call.
- A chan_websocket media socket proves itself with connector credentials; with
  `[connector] allow_unauthenticated_media` a pending call's id is proof enough. AudioSocket carries
  no credentials: its UUID (a random `${UUID()}` in the samples) is the proof.
- A call id is used once, ever: one that is live or in the store, for any company and in any state, is
  refused (409 duplicate_call), also when several arrive at once.
- Numbers are stored in one form (`+` and digits) whatever path created the call.

Every refusal is a `BridgeError` (the transports turn it into an HTTP status or a hangup) and is
counted in `bridge_calls_rejected_total{reason}`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bridge.directory import Company, Directory
from bridge.errors import (
    BadRequest,
    BridgeError,
    Conflict,
    Forbidden,
    NotFound,
    ShuttingDown,
    TooManyCalls,
    Unauthorized,
)
from bridge.keys import canonical_number
from bridge.logging import get_logger
from bridge.session.call import CallPlan, CallRunner, ProviderFactory, provider_or_refuse
from bridge.session.fleet import FleetLink
from bridge.session.leg import MediaLeg
from bridge.session.leg_tap import TappedLeg
from bridge.session.manager import SessionManager
from bridge.session.session import CallInfo, Session
from bridge.session.state import CallState, EndedBy
from bridge.store.records import CallStore

Transport = Literal["chan_websocket", "audiosocket"]
CALL_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_CALL_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
MAX_CALL_ID = 128


class FundsCheck(Protocol):
    """Raises 402 insufficient_balance for a prepaid company without credit (bridge/companies/balance.py);
    answers from memory, so admission never waits on the store for it."""

    def refuse_if_exhausted(self, company_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AdmissionPolicy:
    allow_unauthenticated_media: bool = False
    # AudioSocket carries no numbers: the company of calls no webhook announced ("" refuses them).
    webhookless_audiosocket_company: str = ""


@dataclass(frozen=True, slots=True)
class Announcement:
    """A `connect` webhook: a PBX says a call is coming (numbers as the PBX sent them)."""

    call_id: str
    caller: str
    called: str = ""
    caller_name: str = ""
    company_id: str = ""
    websocket_url: str = ""
    agent_id: str = ""  # the company's agent to answer ("": its default); chosen and checked by the route
    variables: Mapping[str, str] = field(default_factory=dict)  # the webhook's extra fields


@dataclass(frozen=True, slots=True)
class MediaClaim:
    """What a media socket presents before it is accepted."""

    transport: Transport
    call_id: str = ""
    caller: str = ""
    called: str = ""
    credentials: tuple[str, ...] = ()  # every connector key it presented (Basic password, Bearer, header)


class AdmittedCall:
    """A media socket's call, accepted but not yet running: the transport upgrades, then runs it."""

    def __init__(self, session: Session, plan: CallPlan) -> None:
        self.session = session
        self.plan = plan

    def abandon(self, code: str) -> None:
        """The transport could not complete its side (e.g. Asterisk gave up on the upgrade)."""
        self.session.finish(EndedBy.ERROR, code, failed=True)

    async def run(self, leg: MediaLeg) -> None:
        """Run the call to its end over `leg` (tapped, e.g. recorded, when the plan says so)."""
        tap = self.plan.tap() if self.plan.tap is not None else None
        if tap is None:
            await CallRunner(self.session, leg, self.plan).run()
            return
        try:
            await CallRunner(self.session, TappedLeg(leg, tap), self.plan).run()
        finally:
            await tap.aclose()


def valid_call_id(call_id: str) -> bool:
    return 0 < len(call_id) <= MAX_CALL_ID and all(ch in _CALL_ID_CHARS for ch in call_id)


def stored_number(number: str, field: str) -> str:
    try:
        return canonical_number(number)
    except ValueError as exc:
        raise BadRequest(f"{field}: {exc}", code="invalid_number") from exc


class Admission:
    def __init__(
        self,
        manager: SessionManager,
        store: CallStore,
        directory: Callable[[], Directory],
        plan_call: ProviderFactory,
        policy: AdmissionPolicy | None = None,
    ) -> None:
        self.manager = manager
        self.store = store
        self.directory = directory
        self.plan_call = plan_call
        self.policy = policy or AdmissionPolicy()
        self._claiming: set[str] = set()  # call ids between the duplicate check and registration
        self.funds: FundsCheck | None = None  # prepaid balances; None: no company is ever refused for it
        # The fleet's registry (duplicates and caps fleet-wide, pending calls of other nodes); None: this
        # process alone, checked in memory (tests that build a bare Admission).
        self.link: FleetLink | None = None
        self._log = get_logger("admission")

    # -- the one ownership rule --------------------------------------------------------------------

    def company_for_call(self, called: str, company_id: str = "") -> Company:
        """The company a call belongs to: the owner of the called number."""
        directory = self.directory()
        if called:
            company = directory.company_for_phone(called)
            if company is None:
                raise NotFound(f"no company has the number {called}", code="unknown_number")
            if company_id and company_id != company.id:
                raise Forbidden(
                    f"{called} belongs to another company than {company_id}", code="company_mismatch"
                )
            return company
        if company_id:
            by_id = directory.companies.get(company_id)
            if by_id is None:
                raise NotFound(f"unknown company {company_id}", code="unknown_company")
            return by_id
        raise BadRequest("the called number (or a companyId) is required", code="validation_error")

    # -- webhooks ---------------------------------------------------------------------------

    async def announce(self, announcement: Announcement) -> Session:
        """A `connect` webhook: a pending call, waiting for its media socket."""
        with self._counting("webhook"):
            company = self.company_for_call(announcement.called, announcement.company_id)
            caller = stored_number(announcement.caller, "callerPhone")
            self._check_caller(company, caller)
            self._check_funds(company.id)
            async with self._new_call_id(announcement.call_id):
                info = CallInfo(
                    call_id=announcement.call_id,
                    company_id=company.id,
                    direction="inbound",
                    caller=caller,
                    called=stored_number(announcement.called, "b_number") if announcement.called else "",
                    caller_name=announcement.caller_name,
                    websocket_url=announcement.websocket_url,
                    variables=dict(announcement.variables),
                    agent_id=announcement.agent_id,
                )
                return await self._register(info, CallState.PENDING, self.manager.create_pending)

    async def terminate(self, call_id: str, called: str, company_id: str = "") -> str | None:
        """A `terminate` webhook: end the company's call (on whichever node runs it); its state, or None
        when there is no such live call."""
        company = self.company_for_call(called, company_id)
        session = self.manager.get(call_id)
        if session is None and self.link is not None:
            node = await self.link.owner_elsewhere(company.id, call_id)
            if node is not None:
                body = await self.link.ask(node, "terminate", company.id, call_id)
                status = body.get("status")
                return status if isinstance(status, str) else None
        return self.end_here(company.id, call_id)

    def end_here(self, company_id: str, call_id: str) -> str | None:
        session = self.manager.get(call_id)
        if session is None or session.company_id != company_id:
            return None
        session.request_end(EndedBy.CALLER)
        return session.state.value

    async def _register(
        self, info: CallInfo, state: CallState, create: Callable[[CallInfo], Session]
    ) -> Session:
        """Check the company's cap here, claim the call in the fleet (its id and every cap, atomically
        fleet-wide), then create it; a claim whose creation fails is released."""
        self.manager.check_admit()
        self._check_live_calls(info.company_id)
        if self.link is None:
            return create(info)
        await self.link.claim(info, state)
        try:
            return create(info)
        except BaseException:
            await self.link.release(info.call_id)
            raise

    # -- outbound ---------------------------------------------------------------------------

    async def outbound(self, info: CallInfo, ttl_seconds: float) -> Session:
        """A call the API dials out (the route already checked the company owns `from`)."""
        with self._counting("outbound"):
            self._check_funds(info.company_id)
            return await self._register(
                info,
                CallState.DIALING,
                lambda each: self.manager.create_pending(each, dialing=True, ttl_seconds=ttl_seconds),
            )

    # -- media sockets -------------------------------------------------------------------------

    async def admit_media(self, claim: MediaClaim) -> AdmittedCall:
        """Find or create the call a media socket belongs to, with its model plan; or refuse."""
        with self._counting(claim.transport):
            session = await self._media_session(claim)
            return AdmittedCall(session, provider_or_refuse(session, self.plan_call))

    async def _media_session(self, claim: MediaClaim) -> Session:
        if self.manager.draining:
            raise ShuttingDown("the bridge is shutting down and takes no new calls")
        trusted = self._media_trusted(claim)
        if claim.call_id and not valid_call_id(claim.call_id):
            raise BadRequest("callId: 1 to 128 letters, digits or . _ : -", code="validation_error")
        pending = self._pending(claim)
        if pending is not None:
            return self.manager.attach(pending.call_id)
        if claim.call_id and self.manager.get(claim.call_id) is not None:
            raise Conflict(f"call {claim.call_id} already has a media socket", code="already_attached")
        adopted = await self._take_over(claim)
        if adopted is not None:
            return adopted
        if not trusted:
            if claim.call_id:
                raise NotFound(f"no pending call {claim.call_id}", code="unknown_call")
            raise Unauthorized("connector credentials are required")
        company, caller, called = self._webhookless_company(claim)
        self._check_funds(company.id)
        call_id = claim.call_id or str(uuid.uuid4())
        async with self._new_call_id(call_id):
            info = CallInfo(
                call_id=call_id, company_id=company.id, direction="inbound", caller=caller, called=called
            )
            return await self._register(info, CallState.PENDING, self.manager.create_attached)

    async def _take_over(self, claim: MediaClaim) -> Session | None:
        """The pending (or dialing) call another node of the fleet announced, now run here."""
        if self.link is None or not self.link.distributed or not claim.call_id:
            return None
        self.manager.check_admit()  # a full or draining node leaves it to another (Asterisk tries the next)
        candidates = [claim.call_id]
        if claim.transport == "audiosocket":  # Asterisk writes the UUID in lower case
            candidates.append(claim.call_id.upper())
        for candidate in candidates:
            info = await self.link.take_pending(candidate)
            if info is None:
                continue
            try:
                session = self.manager.create_attached(info)
            except BaseException:
                await self.link.release(info.call_id)
                raise
            if info.direction == "outbound":
                session.dial_outcome = "answered"  # its media came: the node that dialed saw no more
            return session
        return None

    def _media_trusted(self, claim: MediaClaim) -> bool:
        """Whether the socket may create a call; raises when it may not even attach to one."""
        if claim.credentials:
            directory = self.directory()
            if not all([directory.is_connector_key(key) for key in claim.credentials]):
                raise Unauthorized("invalid connector credentials")
            return True
        if claim.transport == "audiosocket":
            return bool(self.policy.webhookless_audiosocket_company)
        if not self.policy.allow_unauthenticated_media:
            raise Unauthorized("connector credentials are required (websocket_client.conf username/password)")
        return False

    def _pending(self, claim: MediaClaim) -> Session | None:
        if not claim.call_id:
            return None
        candidates = [claim.call_id]
        if claim.transport == "audiosocket":  # Asterisk writes the UUID in lower case
            candidates.append(claim.call_id.upper())
        for candidate in candidates:
            session = self.manager.get_pending(candidate)
            if session is not None:
                return session
        return None

    def _webhookless_company(self, claim: MediaClaim) -> tuple[Company, str, str]:
        """(company, caller, called) of a call no webhook announced."""
        if claim.transport == "audiosocket":
            company_id = self.policy.webhookless_audiosocket_company
            company = self.directory().companies.get(company_id)
            if company is None:
                raise NotFound(f"no pending call {claim.call_id}", code="unknown_call")
            self._check_caller(company, "")  # AudioSocket never says who is calling
            return company, "", ""
        if not claim.called:
            raise NotFound(
                "the socket names no called number (bNumberE164): no company", code="unknown_number"
            )
        called = stored_number(claim.called, "bNumberE164")
        caller = stored_number(claim.caller, "aNumberE164")
        company = self.company_for_call(called)
        self._check_caller(company, caller)
        return company, caller, called

    # -- shared checks ----------------------------------------------------------------------------

    def check_funds(self, company_id: str) -> None:
        """402 insufficient_balance when a prepaid company has no credit left (counted as a refusal)."""
        with self._counting("funds"):
            self._check_funds(company_id)

    def _check_funds(self, company_id: str) -> None:
        if self.funds is not None:
            self.funds.refuse_if_exhausted(company_id)

    def _check_live_calls(self, company_id: str) -> None:
        """429 too_many_calls at the company's `[companies.limits] max_live_calls` (0: only the server's
        max_calls), counted on this node. Without a fleet link it runs right before the call is registered,
        with no await between, so calls that arrive together cannot overshoot the cap; with one, the
        fleet's claim checks the same cap atomically across every node."""
        company = self.directory().companies.get(company_id)
        cap = company.settings.limits.max_live_calls if company is not None else 0
        if cap and self.manager.live_for(company_id) >= cap:
            raise TooManyCalls(f"{company_id} already has {cap} live calls")

    @staticmethod
    def _check_caller(company: Company, caller: str) -> None:
        if not company.allows_caller(caller):
            shown = caller or "a caller with no number"
            raise Forbidden(f"{shown} may not call {company.id}", code="caller_not_allowed")

    @contextlib.asynccontextmanager
    async def _new_call_id(self, call_id: str) -> AsyncIterator[None]:
        """Hold `call_id` while the store is asked whether it was ever used; the body registers it."""
        if call_id in self._claiming or self.manager.get(call_id) is not None:
            raise Conflict(f"call id {call_id} is already in use", code="duplicate_call")
        self._claiming.add(call_id)
        try:
            if await self.store.call_exists(call_id):
                raise Conflict(f"call id {call_id} was already used", code="duplicate_call")
            yield
        finally:
            self._claiming.discard(call_id)

    @contextlib.contextmanager
    def _counting(self, path: str) -> Iterator[None]:
        try:
            yield
        except BridgeError as refusal:
            self.manager.metrics.reject(refusal.code)
            self._log.info("call_refused", path=path, code=refusal.code, status=refusal.status)
            raise
