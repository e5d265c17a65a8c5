"""The fleet on Redis: the call registry in hashes and sets changed only by Lua scripts (atomic checks
and writes), node liveness as keys with a TTL rewritten each heartbeat, and a bus on pub/sub (one
channel per node) for control requests, their replies and hand-over notices.

A Redis outage never ends a live call: claims and look-ups raise ClusterUnavailable (the session layer
answers 503), updates are logged and releases retried by the next beat, and the bus reconnects itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from bridge.cluster import redis_scripts as scripts
from bridge.cluster.base import (
    CallEntry,
    ClaimLimits,
    ClaimRefused,
    ClusterUnavailable,
    ControlHandler,
    ControlReply,
    ControlRequest,
    HandedOver,
    LostHandler,
    NodeStatus,
    OwnerUnreachable,
    StatusReader,
)
from bridge.cluster.messages import (
    entry_from_registry,
    status_from_json,
    status_to_json,
)
from bridge.cluster.redis_bus import OutageLog, RedisBus, TaskSet
from bridge.logging import get_logger
from bridge.settings import ClusterSettings

_POOL_SIZE = 32  # connections for commands per node; Redis answers each in well under a millisecond
_REFUSALS = {
    "duplicate_call": "call {} is already live in the fleet",
    "at_capacity": "the fleet is at its call capacity",
    "too_many_calls": "the company has reached its live call limit",
}


class RedisFleet:
    """One node of a fleet sharing a Redis. See bridge.cluster.base.Fleet for the contract."""

    def __init__(
        self, settings: ClusterSettings, *, prefix: str = "bridge", clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._node_id = settings.node_id
        self._p = prefix
        self._clock = clock
        # A command must fail well inside the TTL so a hung Redis cannot stall the heartbeat past it;
        # one quick retry only: a claim during an outage should become a 503 now, not in ten seconds.
        io_timeout = max(0.5, min(5.0, settings.node_ttl_seconds / 2))
        common: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": io_timeout}
        # A blocking pool: a burst of calls waits a moment for a connection instead of failing as
        # "too many connections" (redis-py's default pool raises past 100).
        pool = BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=_POOL_SIZE,
            timeout=io_timeout,
            socket_timeout=io_timeout,
            retry=Retry(NoBackoff(), 1),
            **common,
        )
        self._redis = Redis.from_pool(pool)
        # The subscriber waits for messages indefinitely, so no read timeout; its loop reconnects.
        subscriber = Redis.from_url(settings.redis_url, retry=Retry(NoBackoff(), 0), **common)
        self._claim = self._redis.register_script(scripts.CLAIM)
        self._update = self._redis.register_script(scripts.UPDATE)
        self._release = self._redis.register_script(scripts.RELEASE)
        self._take = self._redis.register_script(scripts.TAKE_PENDING)
        self._remove = self._redis.register_script(scripts.REMOVE_NODE_CALLS)
        self._unlock = self._redis.register_script(scripts.UNLOCK)
        self._restore = self._redis.register_script(scripts.RESTORE)
        self._bus = RedisBus(self._redis, subscriber, prefix, self._node_id)
        self._log = get_logger("fleet")
        self._control: ControlHandler | None = None
        self._handed_over: HandedOver | None = None
        self._lost: LostHandler | None = None
        self._status: StatusReader | None = None
        self._tasks = TaskSet()
        self._unreleased: set[str] = set()  # releases that failed in an outage; retried each beat
        # This node's calls as it knows them: never released by a retry, and written back to a Redis
        # that lost them (restarted without persistence) so caps and control routing see them again.
        self._own: dict[str, CallEntry] = {}
        self._outage = OutageLog(self._node_id, "registry")
        self._closed = False

    @property
    def node_id(self) -> str:
        return self._node_id

    # --- keys ---------------------------------------------------------------------------------

    def _k(self, *parts: str) -> str:
        return ":".join((self._p, *parts))

    # --- life cycle ---------------------------------------------------------------------------

    async def start(
        self, *, control: ControlHandler, handed_over: HandedOver, lost: LostHandler, status: StatusReader
    ) -> None:
        """Raises ClusterUnavailable when Redis cannot be reached: a node cannot join a fleet it cannot
        see. Exceptions of `lost` for this node's own leftovers propagate."""
        self._control, self._handed_over, self._lost, self._status = control, handed_over, lost, status
        try:
            await self._handle_lost_node(self._node_id)
            await self._bus.start(control, self._on_handed_over)
            await self._write_liveness()
        except RedisError as exc:
            await self._bus.stop()
            raise ClusterUnavailable("the fleet's Redis cannot be reached") from exc
        self._tasks.spawn(self._heartbeat())

    async def close(self) -> None:
        """Leave the fleet. A clean stop is not a loss: the session layer has ended its calls already."""
        if self._closed:
            return
        await self._stop_tasks()
        try:
            await self._remove(args=[self._p, self._node_id, "1"])
        except RedisError as exc:
            self._log.warning("fleet_leave_failed", node=self._node_id, error=type(exc).__name__)
        await self._close_connections()

    async def abandon(self) -> None:
        """Stop as a crash would: tasks and connections end, the registry keeps this node's calls until a
        survivor finds the node silent for the TTL (tests use it; nothing else should)."""
        if self._closed:
            return
        await self._stop_tasks()
        await self._close_connections()

    async def _stop_tasks(self) -> None:
        self._closed = True  # the loops also check it: a client library may swallow a cancellation
        await self._tasks.stop()
        await self._bus.stop()

    async def _close_connections(self) -> None:
        await self._redis.aclose()

    def _on_handed_over(self, call_id: str) -> None:
        self._own.pop(call_id, None)
        if self._handed_over is not None:
            self._handed_over(call_id)

    # --- registry -----------------------------------------------------------------------------

    async def claim(self, entry: CallEntry, limits: ClaimLimits) -> None:
        info = json.dumps(dict(entry.info), separators=(",", ":"))
        args = [self._p, entry.call_id, self._node_id, entry.company_id, entry.state, info]
        try:
            result = await self._claim(args=[*args, limits.fleet_max_calls, limits.company_max_live_calls])
        except RedisError as exc:
            # The script may have run before the connection failed: release it later unless it is
            # claimed again meanwhile (release only ever removes this node's own entry).
            self._unreleased.add(entry.call_id)
            raise ClusterUnavailable("the fleet's Redis cannot be reached") from exc
        if result != "ok":
            raise ClaimRefused(result, _REFUSALS[result].format(entry.call_id))
        self._own[entry.call_id] = replace(entry, node_id=self._node_id)
        self._unreleased.discard(entry.call_id)

    async def update(self, call_id: str, state: str) -> None:
        """Never raises for an outage (the call goes on); the registry keeps the previous state."""
        if call_id in self._own:
            self._own[call_id] = replace(self._own[call_id], state=state)
        try:
            await self._update(args=[self._p, call_id, self._node_id, state])
        except RedisError as exc:
            self._log.warning("fleet_update_failed", call_id=call_id, error=type(exc).__name__)

    async def release(self, call_id: str) -> None:
        """Never raises for an outage: the release is retried by each heartbeat until Redis is back."""
        self._own.pop(call_id, None)
        try:
            await self._release(args=[self._p, call_id, self._node_id])
        except RedisError as exc:
            self._unreleased.add(call_id)
            self._log.warning("fleet_release_deferred", call_id=call_id, error=type(exc).__name__)

    async def take_pending(self, call_id: str) -> CallEntry | None:
        try:
            found = await self._take(args=[self._p, call_id, self._node_id])
        except RedisError as exc:
            raise ClusterUnavailable("the fleet's Redis cannot be reached") from exc
        if not found:
            return None
        raw, info = cast(list[str], found)
        previous = entry_from_registry(call_id, raw, info)
        if previous is None:
            return None
        taken = self._own[call_id] = replace(previous, node_id=self._node_id)
        self._unreleased.discard(call_id)
        await self._bus.notify_handed_over(previous.node_id, call_id)
        return taken

    async def locate(self, call_id: str) -> CallEntry | None:
        try:
            raw = await self._redis.hget(self._k("calls"), call_id)
            if raw is None:
                return None
            info = await self._redis.hget(self._k("info"), call_id)
            # A lost node's call is returned until reaped: asking its node then fails (503
            # owner_unreachable) rather than the call looking over or unknown.
            return entry_from_registry(call_id, _opt(raw), _opt(info))
        except RedisError as exc:
            raise ClusterUnavailable("the fleet's Redis cannot be reached") from exc

    async def nodes(self) -> list[NodeStatus]:
        try:
            known = sorted(map(_str, await self._redis.smembers(self._k("nodes"))))
            if not known:
                return []
            statuses = await self._redis.hmget(self._k("status"), known)
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in known:
                    pipe.exists(self._k("alive", node))
                alive = await pipe.execute()
        except RedisError as exc:
            raise ClusterUnavailable("the fleet's Redis cannot be reached") from exc
        return [
            status_from_json(n, _opt(s), alive=bool(a))
            for n, s, a in zip(known, statuses, alive, strict=True)
        ]

    async def live_calls(self, company_id: str | None = None) -> int:
        try:
            if company_id is None:
                return int(await self._redis.hlen(self._k("calls")))
            return int(await self._redis.scard(self._k("company", company_id, "calls")))
        except RedisError as exc:
            raise ClusterUnavailable("the fleet's Redis cannot be reached") from exc

    # --- bus ----------------------------------------------------------------------------------

    async def ask(
        self,
        node_id: str,
        request: ControlRequest,
        timeout: float,  # noqa: ASYNC109 (the Fleet protocol's signature)
    ) -> ControlReply:
        if node_id == self._node_id and self._control is not None:
            try:
                return await asyncio.wait_for(self._control(request), timeout)
            except TimeoutError as exc:
                raise OwnerUnreachable(f"node {node_id} did not answer in time") from exc
        try:
            alive = await self._redis.exists(self._k("alive", node_id))
        except RedisError as exc:
            raise OwnerUnreachable("the fleet's Redis cannot be reached") from exc
        if not alive:
            raise OwnerUnreachable(f"node {node_id} is not alive")
        return await self._bus.request(node_id, request, timeout)

    # --- heartbeat and reaping ------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        reaping: asyncio.Task[None] | None = None
        while not self._closed:
            await asyncio.sleep(self._settings.heartbeat_seconds)
            try:
                if await self._write_liveness():
                    await self._restore_own()
                self._outage.up()
                for call_id in list(self._unreleased - self._own.keys()):
                    await self._release(args=[self._p, call_id, self._node_id])
                    self._unreleased.discard(call_id)
            except (RedisError, OSError) as exc:
                self._outage.down(exc)
                continue
            except Exception as exc:
                # A failing status reader must not end the heartbeat: the node would look lost.
                self._log.error("fleet_heartbeat_failed", node=self._node_id, error=type(exc).__name__)
                continue
            # Reaping runs beside the beat, one round at a time: a slow `lost` handler must never delay
            # this node's own liveness, or the survivors would take it for lost as well.
            if reaping is None or reaping.done():
                reaping = self._tasks.spawn(self._reap())

    async def _write_liveness(self) -> bool:
        """Beat; True when this node was missing from the known nodes (Redis lost its data, or a
        survivor took this node for lost)."""
        assert self._status is not None
        status = status_to_json(replace(self._status(), last_seen=self._clock()))
        ttl_ms = max(1, int(self._settings.node_ttl_seconds * 1000))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("alive", self._node_id), status, px=ttl_ms)
            pipe.hset(self._k("status"), self._node_id, status)
            pipe.sadd(self._k("nodes"), self._node_id)
            results = await pipe.execute()
        return bool(results[2])

    async def _restore_own(self) -> None:
        restored = 0
        for entry in list(self._own.values()):
            info = json.dumps(dict(entry.info), separators=(",", ":"))
            args = [self._p, entry.call_id, self._node_id, entry.company_id, entry.state, info]
            restored += int(await self._restore(args=args))
        if restored:
            self._log.warning("fleet_registry_restored", node=self._node_id, calls=restored)

    async def _reap(self) -> None:
        try:
            known = sorted(map(_str, await self._redis.smembers(self._k("nodes"))))
        except (RedisError, OSError) as exc:
            self._outage.down(exc)
            return
        for node in known:
            try:
                if node != self._node_id and not await self._redis.exists(self._k("alive", node)):
                    await self._handle_lost_node(node)
            except (RedisError, OSError) as exc:
                self._outage.down(exc)
                return
            except Exception as exc:
                # Its calls stay registered, the lock is freed: the next beat tries again.
                self._log.error("fleet_lost_handler_failed", lost_node=node, error=type(exc).__name__)

    async def _handle_lost_node(self, node: str) -> None:
        """Under the reaper lock (one survivor at a time), hand the node's calls to `lost`, and remove
        from the registry those calls only once it returned. For this node's own id at start, these
        are the calls of a previous run that ended within the TTL."""
        assert self._lost is not None
        lock = self._k("reap", node)
        lock_ms = int(max(6 * self._settings.node_ttl_seconds, 30.0) * 1000)
        if not await self._redis.set(lock, self._node_id, nx=True, px=lock_ms):
            return  # another survivor is on it
        try:
            if node != self._node_id:
                # Re-checked under the lock: another survivor may have finished it a moment ago.
                if not await self._redis.sismember(self._k("nodes"), node):
                    return
                if await self._redis.exists(self._k("alive", node)):
                    return
            ids = sorted(map(_str, await self._redis.smembers(self._k("node", node, "calls"))))
            if node == self._node_id and not ids:
                return
            entries = await self._read_entries(node, ids)
            await self._lost(node, entries)
            await self._remove(args=[self._p, node, "0", *ids])
            self._log.info("fleet_node_reaped", lost_node=node, calls=len(entries))
        finally:
            with contextlib.suppress(RedisError):  # else the lock expires by itself
                await self._unlock(keys=[lock], args=[self._node_id])

    async def _read_entries(self, node: str, ids: list[str]) -> list[CallEntry]:
        if not ids:
            return []
        raws = await self._redis.hmget(self._k("calls"), ids)
        infos = await self._redis.hmget(self._k("info"), ids)
        found = zip(ids, raws, infos, strict=True)
        entries = (entry_from_registry(i, _opt(r), _opt(n)) for i, r, n in found)
        return [e for e in entries if e is not None and e.node_id == node]


def _str(value: bytes | str) -> str:
    # The clients decode responses (decode_responses=True); redis-py's types cannot know that.
    return value if isinstance(value, str) else value.decode()


def _opt(value: bytes | str | None) -> str | None:
    return None if value is None else _str(value)
