"""The session layer's side of the fleet (bridge/cluster): keeps this node's calls in the registry, claims
new ones against the fleet's caps, takes over pending calls announced on another node, routes control
of a call to the node that owns it, and answers such requests for the calls it owns.

One process runs it over `LocalFleet` (nothing is ever elsewhere); a fleet over `RedisFleet`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import asdict
from typing import Any

from bridge.cluster.base import (
    CallEntry,
    ClaimLimits,
    ClaimRefused,
    ClusterUnavailable,
    ControlReply,
    ControlRequest,
    Fleet,
    NodeStatus,
    OwnerUnreachable,
)
from bridge.errors import AtCapacity, BridgeError, Conflict, TooManyCalls, Unavailable
from bridge.logging import get_logger
from bridge.session.manager import SessionManager
from bridge.session.session import CallInfo, Session
from bridge.session.state import CallState, EndedBy
from bridge.store.records import CallRecord

# What the owner runs for a routed request: the op's JSON body, or a BridgeError.
OpHandler = Callable[[ControlRequest], Awaitable[Mapping[str, Any]]]


class OwnerUnavailable(Unavailable):
    code = "owner_unreachable"


class RemoteRefusal(BridgeError):
    """The owner refused the routed request: its status, code and message, passed on unchanged."""

    def __init__(self, reply: ControlReply) -> None:
        super().__init__(reply.message or "the call's node refused the request", code=reply.code or None)
        self.status = reply.status  # type: ignore[misc]  # per-instance: the owner's status
        if reply.status in (429, 503):
            self.retry_after_seconds = 5  # type: ignore[misc]


def info_to_json(info: CallInfo) -> dict[str, Any]:
    data = asdict(info)
    data["variables"] = dict(info.variables)
    data["webhook_events"] = list(info.webhook_events)
    return data


def info_from_json(data: Mapping[str, Any]) -> CallInfo:
    fields = dict(data)
    fields["variables"] = {str(k): str(v) for k, v in dict(fields.get("variables") or {}).items()}
    fields["webhook_events"] = tuple(str(e) for e in fields.get("webhook_events") or ())
    return CallInfo(**fields)


def lost_record(entry: CallEntry) -> CallRecord:
    """The record of a lost node's call as the registry knew it, failed as node_lost now: what is written
    when the store never saw the call (one it saw keeps its own, failed in place)."""
    session = Session(info_from_json(entry.info))
    session.finish(EndedBy.ERROR, "node_lost", failed=True)
    return session.record()


# Writes the records of calls a lost node held (idempotent: several survivors may try); how many changed.
LostWriter = Callable[[Sequence[CallEntry]], Awaitable[int]]


class FleetLink:
    def __init__(
        self,
        fleet: Fleet,
        manager: SessionManager,
        *,
        distributed: bool,
        fleet_max_calls: int = 0,
        company_cap: Callable[[str], int] = lambda _: 0,
        control_timeout_seconds: float = 3.0,
    ) -> None:
        self.fleet = fleet
        self.manager = manager
        self.distributed = distributed  # False: LocalFleet, so nothing is ever on another node
        self.fleet_max_calls = fleet_max_calls
        self.company_cap = company_cap  # the company's [companies.limits] max_live_calls (0: none)
        self.control_timeout_seconds = control_timeout_seconds
        self.write_lost: LostWriter | None = None
        self._ops: dict[str, OpHandler] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._periodic: list[asyncio.Future[None]] = []
        self._started_at = time.time()
        self._log = get_logger("fleet")

    @property
    def node_id(self) -> str:
        return self.fleet.node_id

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.fleet.start(
            control=self._control, handed_over=self._handed_over, lost=self._lost, status=self.status
        )

    async def close(self) -> None:
        for periodic in self._periodic:
            periodic.cancel()
        await asyncio.gather(*self._periodic, return_exceptions=True)
        await self.flush()
        await self.fleet.close()

    async def flush(self) -> None:
        """Wait for the registry updates and broadcasts issued so far."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def broadcast(self, op: str) -> None:
        """Ask every other alive node to run `op` (e.g. reload what an admin changed), in the background:
        a node that does not answer catches up by its periodic refresh."""
        if self.distributed:
            self._spawn(self._broadcast(op))

    async def _broadcast(self, op: str) -> None:
        others = [n.node_id for n in await self.fleet.nodes() if n.alive and n.node_id != self.node_id]
        results = await asyncio.gather(
            *(self.ask(node, op, "", "") for node in others), return_exceptions=True
        )
        for node, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning(
                    "fleet_broadcast_unanswered", op=op, node_id=node, error=type(result).__name__
                )

    async def gather(self, op: str, args: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
        """`op`'s answer from every other alive node (one that does not answer in time is left out, and
        logged): for fleet-wide views such as every live call."""
        if not self.distributed:
            return []
        try:
            nodes = await self.fleet.nodes()
        except ClusterUnavailable as exc:
            raise Unavailable("the fleet's registry is unreachable", code="cluster_unavailable") from exc
        others = [n.node_id for n in nodes if n.alive and n.node_id != self.node_id]
        results = await asyncio.gather(
            *(self.ask(node, op, "", "", args) for node in others), return_exceptions=True
        )
        bodies: list[Mapping[str, Any]] = []
        for node, result in zip(others, results, strict=True):
            if isinstance(result, BaseException):
                self._log.warning("fleet_gather_unanswered", op=op, node_id=node, error=type(result).__name__)
            else:
                bodies.append(result)
        return bodies

    def every(self, seconds: float, work: Callable[[], Awaitable[object]]) -> None:
        """Run `work` every `seconds` while the link is open (fleet only: one process has nothing to
        catch up with)."""
        if self.distributed:
            self._periodic.append(asyncio.ensure_future(self._repeat(seconds, work)))

    async def _repeat(self, seconds: float, work: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await work()
            except Exception as exc:  # the store is away for a moment: the next round tries again
                self._log.warning("fleet_refresh_failed", error=type(exc).__name__)

    def serve(self, op: str, handler: OpHandler) -> None:
        """Run `handler` when another node routes `op` for a call of ours."""
        self._ops[op] = handler

    def status(self) -> NodeStatus:
        capacity = self.manager.capacity()
        return NodeStatus(
            node_id=self.node_id,
            live_calls=capacity.active_calls,
            max_calls=capacity.max_calls,
            draining=capacity.draining,
            started_at=self._started_at,
            last_seen=time.time(),
        )

    # -- the registry ----------------------------------------------------------------------------

    def track(self, session: Session) -> None:
        """A session hook: the registry follows the call's state and forgets it when it ends."""
        session.on_change(self._changed)
        session.on_end(self._ended)

    def _changed(self, session: Session) -> None:
        if not session.state.is_terminal:
            self._spawn(self.fleet.update(session.call_id, session.state.value))

    def _ended(self, session: Session) -> None:
        if not session.handed_off:  # a handed-off call is the new owner's; the registry says so already
            self._spawn(self.fleet.release(session.call_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(self._quietly(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quietly(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except Exception as exc:  # a Redis outage: the entry expires with the node if it comes to that
            self._log.warning("fleet_registry_update_failed", error=type(exc).__name__)

    async def claim(self, info: CallInfo, state: CallState) -> None:
        """Register a new call of this node's, refused at the fleet's caps or for an id live anywhere."""
        entry = CallEntry(info.call_id, info.company_id, self.node_id, state.value, info_to_json(info))
        limits = ClaimLimits(self.fleet_max_calls, self.company_cap(info.company_id))
        try:
            await self.fleet.claim(entry, limits)
        except ClaimRefused as refused:
            if refused.code == "duplicate_call":
                raise Conflict(f"call id {info.call_id} is already in use", code="duplicate_call") from None
            if refused.code == "too_many_calls":
                raise TooManyCalls(str(refused)) from None
            raise AtCapacity(f"the fleet is at capacity: {refused}") from None
        except ClusterUnavailable as exc:
            raise Unavailable("the fleet's registry is unreachable", code="cluster_unavailable") from exc

    async def release(self, call_id: str) -> None:
        """A claim whose call was never created here (refused after claiming)."""
        try:
            await self.fleet.release(call_id)
        except ClusterUnavailable:
            self._log.warning("fleet_release_failed", call_id=call_id)

    async def take_pending(self, call_id: str) -> CallInfo | None:
        """The pending call another node announced under this id, now ours; None if there is none."""
        if not self.distributed:
            return None
        try:
            entry = await self.fleet.take_pending(call_id)
        except ClusterUnavailable as exc:
            raise Unavailable("the fleet's registry is unreachable", code="cluster_unavailable") from exc
        if entry is None:
            return None
        self._log.info("call_taken_over", call_id=call_id, from_node=entry.node_id)
        return info_from_json(entry.info)

    def _handed_over(self, call_id: str) -> None:
        self.manager.hand_off(call_id)

    # -- control routed to the owner -------------------------------------------------------------

    async def owner_elsewhere(self, company_id: str, call_id: str) -> str | None:
        """The node running the company's live call when it is not this one (None: here, or nowhere)."""
        if not self.distributed:
            return None
        try:
            entry = await self.fleet.locate(call_id)
        except ClusterUnavailable:
            return None  # answered from this node's own knowledge: not here, so over (or unknown)
        if entry is None or entry.company_id != company_id or entry.node_id == self.node_id:
            return None
        return entry.node_id

    async def ask(
        self, node_id: str, op: str, company_id: str, call_id: str, args: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any]:
        """Run `op` on the owner; its JSON body, or its refusal raised here as it was raised there."""
        request = ControlRequest(op, call_id, company_id, dict(args or {}))
        try:
            reply = await self.fleet.ask(node_id, request, self.control_timeout_seconds)
        except (OwnerUnreachable, ClusterUnavailable) as exc:
            raise OwnerUnavailable(f"the node running call {call_id} ({node_id}) did not answer") from exc
        if reply.status != 200:
            raise RemoteRefusal(reply)
        return reply.body

    async def _control(self, request: ControlRequest) -> ControlReply:
        handler = self._ops.get(request.op)
        if handler is None:
            return ControlReply(400, "bad_request", f"unknown control op {request.op!r}")
        try:
            body = await handler(request)
        except BridgeError as exc:
            return ControlReply(exc.status, exc.code, exc.message)
        except (KeyError, TypeError, ValueError):
            return ControlReply(400, "bad_request", f"malformed {request.op} request")
        return ControlReply(200, body=dict(body))

    # -- lost nodes --------------------------------------------------------------------------------

    async def _lost(self, node_id: str, entries: Sequence[CallEntry]) -> None:
        ours = node_id == self.node_id
        self._log.warning(
            "node_lost" if not ours else "own_calls_lost_in_restart", node_id=node_id, calls=len(entries)
        )
        if self.write_lost is not None and entries:
            written = await self.write_lost(entries)
            self._log.info("node_lost_calls_failed", node_id=node_id, calls=written)
