"""Shared pieces of the fleet tests: handlers that record what a node was told, and a pool of nodes
that are always closed (or were crashed on purpose) when a test ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from bridge.cluster.base import CallEntry, ControlReply, ControlRequest, NodeStatus
from bridge.cluster.redis import RedisFleet
from bridge.settings import ClusterSettings

HEARTBEAT = 0.2
TTL = 1.0
WAIT = 20.0  # a bound for "eventually" on a loaded machine, never a speed claim


async def eventually(check: Callable[[], bool], *, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def eventually_true(check: Callable[[], Awaitable[bool]], *, within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


class Node:
    """One node's handlers: control answers with its own id; lost may be told to fail or to wait."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.requests: list[ControlRequest] = []
        self.handed_over: list[str] = []
        self.lost: list[tuple[str, list[CallEntry]]] = []
        self.lost_attempts = 0
        self.fail_lost = 0
        self.release_lost = asyncio.Event()
        self.release_lost.set()
        self.control_gate = asyncio.Event()
        self.control_gate.set()
        self.control_raises = False
        self.status_raises = False

    async def control(self, request: ControlRequest) -> ControlReply:
        self.requests.append(request)
        await self.control_gate.wait()
        if self.control_raises:
            raise RuntimeError("secret-token-123 in a traceback")
        return ControlReply(200, body={"node": self.node_id, "op": request.op, "args": dict(request.args)})

    def on_handed_over(self, call_id: str) -> None:
        self.handed_over.append(call_id)

    async def on_lost(self, node_id: str, entries: Sequence[CallEntry]) -> None:
        self.lost_attempts += 1
        await self.release_lost.wait()
        if self.fail_lost > 0:
            self.fail_lost -= 1
            raise RuntimeError("the store is down")
        self.lost.append((node_id, list(entries)))

    def status(self) -> NodeStatus:
        if self.status_raises:
            raise RuntimeError("the session layer failed")
        return NodeStatus(
            self.node_id, live_calls=1, max_calls=50, draining=False, started_at=1.0, last_seen=0.0
        )


def cluster_settings(url: str, node_id: str, **overrides: float) -> ClusterSettings:
    values: dict[str, float] = {"heartbeat_seconds": HEARTBEAT, "node_ttl_seconds": TTL}
    values |= overrides
    return ClusterSettings(redis_url=url, node_id=node_id, control_timeout_seconds=2.0, **values)


class Pool:
    """Starts RedisFleet nodes on one URL and prefix; closes every one still running at the end."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.fleets: list[RedisFleet] = []

    async def start(
        self, node_id: str, node: Node | None = None, **overrides: float
    ) -> tuple[RedisFleet, Node]:
        node = node or Node(node_id)
        fleet = RedisFleet(cluster_settings(self.url, node_id, **overrides), prefix=self.prefix)
        self.fleets.append(fleet)
        await fleet.start(
            control=node.control, handed_over=node.on_handed_over, lost=node.on_lost, status=node.status
        )
        return fleet, node

    async def close(self) -> None:
        for fleet in self.fleets:
            await fleet.close()
