"""The embedded fleet of one process: the registry in memory, no bus (there is no other node)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from bridge.cluster.base import (
    CallEntry,
    ClaimLimits,
    ClaimRefused,
    ControlHandler,
    ControlReply,
    ControlRequest,
    HandedOver,
    LostHandler,
    NodeStatus,
    OwnerUnreachable,
    StatusReader,
)


class LocalFleet:
    """A fleet of one node. Every method runs without awaiting between its check and its write, so the
    claim's duplicate and cap checks are as atomic here as the Redis script makes them there."""

    def __init__(self, node_id: str = "local", *, clock: Callable[[], float] = time.time) -> None:
        self._node_id = node_id
        self._clock = clock
        self._calls: dict[str, CallEntry] = {}
        self._control: ControlHandler | None = None
        self._status: StatusReader | None = None

    @property
    def node_id(self) -> str:
        return self._node_id

    async def start(
        self, *, control: ControlHandler, handed_over: HandedOver, lost: LostHandler, status: StatusReader
    ) -> None:
        # No other node can take a call over or be lost: handed_over and lost are never called here.
        self._control = control
        self._status = status

    async def close(self) -> None:
        self._calls.clear()
        self._control = None
        self._status = None

    async def claim(self, entry: CallEntry, limits: ClaimLimits) -> None:
        if entry.call_id in self._calls:
            raise ClaimRefused("duplicate_call", f"call {entry.call_id} is already live")
        if limits.fleet_max_calls > 0 and len(self._calls) >= limits.fleet_max_calls:
            raise ClaimRefused("at_capacity", "the fleet is at its call capacity")
        if (
            limits.company_max_live_calls > 0
            and self._count(entry.company_id) >= limits.company_max_live_calls
        ):
            raise ClaimRefused("too_many_calls", "the company has reached its live call limit")
        self._calls[entry.call_id] = CallEntry(
            entry.call_id, entry.company_id, self._node_id, entry.state, dict(entry.info)
        )

    async def update(self, call_id: str, state: str) -> None:
        entry = self._calls.get(call_id)
        if entry is not None:
            self._calls[call_id] = CallEntry(call_id, entry.company_id, entry.node_id, state, entry.info)

    async def release(self, call_id: str) -> None:
        self._calls.pop(call_id, None)

    async def take_pending(self, call_id: str) -> CallEntry | None:
        return None  # every call here is already this node's

    async def locate(self, call_id: str) -> CallEntry | None:
        return self._calls.get(call_id)

    async def ask(
        self,
        node_id: str,
        request: ControlRequest,
        timeout: float,  # noqa: ASYNC109 (the Fleet protocol's signature)
    ) -> ControlReply:
        if node_id != self._node_id or self._control is None:
            raise OwnerUnreachable(f"node {node_id} is not in this fleet")
        try:
            return await asyncio.wait_for(self._control(request), timeout)
        except TimeoutError as exc:
            raise OwnerUnreachable(f"node {node_id} did not answer in time") from exc

    async def nodes(self) -> list[NodeStatus]:
        if self._status is None:
            return []
        status = self._status()
        return [
            NodeStatus(
                node_id=self._node_id,
                live_calls=status.live_calls,
                max_calls=status.max_calls,
                draining=status.draining,
                started_at=status.started_at,
                last_seen=self._clock(),
                alive=True,
            )
        ]

    async def live_calls(self, company_id: str | None = None) -> int:
        return len(self._calls) if company_id is None else self._count(company_id)

    def _count(self, company_id: str) -> int:
        return sum(1 for entry in self._calls.values() if entry.company_id == company_id)
