"""The fleet's bus on Redis pub/sub: one channel per node carrying control requests, their replies and
hand-over notices. The reader never waits for a handler (each request runs in its own task), drops
what it cannot read, and resubscribes with backoff after an outage."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from bridge.cluster.base import ControlHandler, ControlReply, ControlRequest, HandedOver, OwnerUnreachable
from bridge.cluster.messages import (
    HandedOverMessage,
    Malformed,
    ReplyMessage,
    RequestMessage,
    decode,
    encode,
)
from bridge.logging import get_logger

_INTERNAL = ControlReply(500, "internal_error", "the call's node failed to handle the request")
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0


class OutageLog:
    """One warning when Redis goes away, one line when it is back: an outage never floods the log."""

    def __init__(self, node_id: str, part: str) -> None:
        self._node_id = node_id
        self._part = part
        self._down = False
        self._log = get_logger("fleet")

    def down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            error = type(exc).__name__
            self._log.warning("fleet_redis_unavailable", node=self._node_id, part=self._part, error=error)

    def up(self) -> None:
        if self._down:
            self._down = False
            self._log.info("fleet_redis_restored", node=self._node_id, part=self._part)


class TaskSet:
    """Background tasks that all end on stop(), even if a library swallows one cancellation."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        while running := [task for task in self._tasks if not task.done()]:
            for task in running:
                task.cancel()
            await asyncio.wait(running, timeout=1.0)


class RedisBus:
    def __init__(self, commands: Redis, subscriber: Redis, prefix: str, node_id: str) -> None:
        self._redis = commands
        self._sub = subscriber  # its own client: it waits for messages without a read timeout
        self._prefix = prefix
        self._node_id = node_id
        self._control: ControlHandler | None = None
        self._handed_over: HandedOver | None = None
        self._tasks = TaskSet()
        self._waiting: dict[str, asyncio.Future[ControlReply]] = {}
        self._malformed_logged: set[str] = set()
        self._outage = OutageLog(node_id, "bus")
        self._log = get_logger("fleet")
        self._closed = False

    def channel(self, node_id: str) -> str:
        return f"{self._prefix}:bus:{node_id}"

    async def start(self, control: ControlHandler, handed_over: HandedOver) -> None:
        """Subscribed when this returns (RedisError if it cannot be), so a request cannot be missed."""
        self._control, self._handed_over = control, handed_over
        pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.channel(self._node_id))
        self._tasks.spawn(self._read(pubsub))

    async def stop(self) -> None:
        self._closed = True  # the loops check it too
        await self._tasks.stop()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(OwnerUnreachable("this node is leaving the fleet"))
        await self._sub.aclose()

    async def request(self, node_id: str, request: ControlRequest, timeout: float) -> ControlReply:  # noqa: ASYNC109
        if self._closed:
            raise OwnerUnreachable("this node has left the fleet")
        message_id = secrets.token_hex(16)
        payload = encode(RequestMessage(message_id, self._node_id, request))
        reply: asyncio.Future[ControlReply] = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = reply  # before publishing: the reply may come back at once
        try:
            try:
                if not await self._redis.publish(self.channel(node_id), payload):
                    raise OwnerUnreachable(f"node {node_id} is not listening")
            except RedisError as exc:
                raise OwnerUnreachable("the fleet's Redis cannot be reached") from exc
            try:
                return await asyncio.wait_for(reply, timeout)
            except TimeoutError as exc:
                raise OwnerUnreachable(f"node {node_id} did not answer in time") from exc
        finally:
            self._waiting.pop(message_id, None)

    async def notify_handed_over(self, node_id: str, call_id: str) -> None:
        try:
            await self._redis.publish(self.channel(node_id), encode(HandedOverMessage(call_id)))
        except RedisError as exc:
            # The old owner then drops its pending call only when its pending TTL ends.
            self._log.warning("fleet_handover_notice_failed", call_id=call_id, error=type(exc).__name__)

    async def _read(self, pubsub: PubSub | None) -> None:
        delay = _BACKOFF_FIRST
        try:
            while not self._closed:
                try:
                    if pubsub is None:
                        pubsub = self._sub.pubsub(ignore_subscribe_messages=True)
                        await pubsub.subscribe(self.channel(self._node_id))
                        self._outage.up()
                    delay = _BACKOFF_FIRST
                    while not self._closed:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and message.get("type") == "message":
                            self._dispatch(message["data"])
                except (RedisError, OSError) as exc:
                    self._outage.down(exc)
                    if pubsub is not None:
                        await _quietly_close(pubsub)
                        pubsub = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _BACKOFF_MAX)
        finally:
            if pubsub is not None:
                await _quietly_close(pubsub)

    def _dispatch(self, raw: str | bytes) -> None:
        try:
            message = decode(raw)
        except Malformed as exc:
            if str(exc) not in self._malformed_logged:  # once per reason: a noisy publisher cannot flood
                self._malformed_logged.add(str(exc))
                self._log.warning("fleet_bus_malformed", node=self._node_id, reason=str(exc))
            return
        if isinstance(message, RequestMessage):
            self._tasks.spawn(self._serve(message))  # the reader never waits for a handler
        elif isinstance(message, ReplyMessage):
            waiting = self._waiting.get(message.id)
            if waiting is not None and not waiting.done():
                waiting.set_result(message.reply)
        elif self._handed_over is not None:
            try:
                self._handed_over(message.call_id)
            except Exception as exc:
                error = type(exc).__name__
                self._log.error("fleet_handed_over_failed", call_id=message.call_id, error=error)

    async def _serve(self, message: RequestMessage) -> None:
        assert self._control is not None
        try:
            reply = await self._control(message.request)
            payload = encode(ReplyMessage(message.id, reply))
        except Exception as exc:
            # Only the exception's type is logged and nothing of it travels: no traceback, no secret.
            self._log.error("fleet_control_failed", op=message.request.op, error=type(exc).__name__)
            payload = encode(ReplyMessage(message.id, _INTERNAL))
        try:
            await self._redis.publish(self.channel(message.reply_to), payload)
        except RedisError as exc:
            self._log.warning("fleet_reply_failed", op=message.request.op, error=type(exc).__name__)


async def _quietly_close(pubsub: PubSub) -> None:
    with contextlib.suppress(RedisError, OSError):
        await pubsub.aclose()
