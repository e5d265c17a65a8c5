"""The fleet's interface: a registry of live calls (which node owns each, for which company, in which
state) and a bus between nodes (control requests to a call's owner, hand-over of pending calls, lost
nodes). `local.py` is the embedded default (one process); `redis.py` the fleet on Redis.

No asyncio or sockets here: only the types both implementations and the session layer share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RefusalCode = Literal["duplicate_call", "at_capacity", "too_many_calls"]


class ClaimRefused(Exception):
    """The fleet will not take this call: its id is live somewhere, or a cap is reached."""

    def __init__(self, code: RefusalCode, message: str) -> None:
        super().__init__(message)
        self.code: RefusalCode = code


class OwnerUnreachable(Exception):
    """The node that owns a call did not answer in time, or is gone."""


class ClusterUnavailable(Exception):
    """The fleet's shared registry cannot be reached (a Redis outage): new calls cannot be admitted
    fleet-wide, so the session layer answers 503; calls already live carry on."""


@dataclass(frozen=True, slots=True)
class CallEntry:
    """One live call in the registry. `info` is the call's CallInfo as JSON (what another node needs to
    take a pending call over, or to write the record of a call whose node was lost)."""

    call_id: str
    company_id: str
    node_id: str
    state: str  # a CallState value: pending, dialing, connecting, active, ...
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClaimLimits:
    """Caps checked atomically with the claim, fleet-wide; 0 means no cap of that kind."""

    fleet_max_calls: int = 0
    company_max_live_calls: int = 0


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node_id: str
    live_calls: int
    max_calls: int
    draining: bool
    started_at: float  # unix seconds
    last_seen: float  # unix seconds of its last heartbeat
    alive: bool = True


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """What another node asks of a call's owner: op is end, cancel, transfer, dtmf, say, terminate or
    record; args are the op's arguments (JSON values)."""

    op: str
    call_id: str
    company_id: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The owner's answer: HTTP-like `status` (200 done; else the error envelope's `code` and
    `message`), and `body` (JSON) for the asking route."""

    status: int
    code: str = ""
    message: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)


ControlHandler = Callable[[ControlRequest], Awaitable[ControlReply]]
# Called on the node that had a pending call when another node took it over: drop it without a record.
HandedOver = Callable[[str], None]
# Called on ONE surviving node with the calls a lost node held; must be idempotent (see Fleet.start).
LostHandler = Callable[[str, Sequence[CallEntry]], Awaitable[None]]
StatusReader = Callable[[], NodeStatus]


class Fleet(Protocol):
    """One node's view of the fleet. All calls except `start`/`close` may be made concurrently."""

    @property
    def node_id(self) -> str: ...

    async def start(
        self, *, control: ControlHandler, handed_over: HandedOver, lost: LostHandler, status: StatusReader
    ) -> None:
        """Join the fleet: heartbeat (`status()` each beat), serve control requests for this node's
        calls, watch for lost nodes. A node silent for the TTL is lost: one survivor gets `lost(node_id,
        its calls)` (retried by the next beat if it raises; the handler's writes must be idempotent),
        then the node and its calls leave the registry. A node starting with calls of its own id still
        registered (a restart within the TTL) hands them to `lost` itself first."""
        ...

    async def close(self) -> None:
        """Leave the fleet: stop beating, release this node's calls, remove it from the node list."""
        ...

    async def claim(self, entry: CallEntry, limits: ClaimLimits) -> None:
        """Register a new call owned by this node, atomically with the duplicate and cap checks.
        Raises ClaimRefused (duplicate_call, at_capacity for limits.fleet_max_calls, too_many_calls for
        limits.company_max_live_calls)."""
        ...

    async def update(self, call_id: str, state: str) -> None:
        """The call's new state (only the owner updates; a call not owned here is left alone)."""
        ...

    async def release(self, call_id: str) -> None:
        """The call is over: remove it (only if this node still owns it)."""
        ...

    async def take_pending(self, call_id: str) -> CallEntry | None:
        """Become the owner of a call another node holds in state pending or dialing (its media socket
        arrived here); the old owner gets `handed_over(call_id)`. None when no other node holds such a
        call under this id. Atomic: of two nodes asking at once, one gets it."""
        ...

    async def locate(self, call_id: str) -> CallEntry | None:
        """The call's registry entry, wherever it lives (a lost node's too, until it is reaped: asking
        that node fails); None when the registry holds no such call."""
        ...

    async def ask(
        self,
        node_id: str,
        request: ControlRequest,
        timeout: float,  # noqa: ASYNC109 (a deadline both implementations and the bus carry)
    ) -> ControlReply:
        """Send a control request to `node_id` and wait for its reply; OwnerUnreachable when the node
        is not alive or does not answer within `timeout` seconds."""
        ...

    async def nodes(self) -> list[NodeStatus]:
        """Every node the fleet knows, alive or (until reaped) lost."""
        ...

    async def live_calls(self, company_id: str | None = None) -> int:
        """Calls in the registry, fleet-wide or for one company."""
        ...
