"""Sends the outbox's deliveries: a background task, off the call path (a slow receiver only ever
holds its own delivery task).

Each due delivery is POSTed as JSON with `X-Bridge-Signature` (the company's secret; unsigned when the
company has none) and `X-Bridge-Delivery` (its id: the receiver's idempotency key; a retry carries the
same id and body). A 2xx marks it delivered; anything else retries with exponential backoff and
jitter until its retry window (a day) is over, then it is dead (visible and retryable through the
API). One delivery per call and destination is in flight at a time, oldest first, so a receiver sees
a call's events in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from collections.abc import Callable
from typing import Final

import aiohttp

from bridge.directory import Directory
from bridge.integrations.signing import DELIVERY_HEADER, SIGNATURE_HEADER, signature_header
from bridge.integrations.webhook_store import Due, WebhookStore
from bridge.logging import get_logger
from bridge.settings import WebhookDeliverySettings

BATCH: Final = 100
MAX_IN_FLIGHT: Final = 64


def backoff_seconds(
    attempts: int, base: float, ceiling: float, rng: Callable[[], float] = random.random
) -> float:
    """The wait after `attempts` failed attempts: base * 2^(attempts-1), at most `ceiling`, then
    scaled by a random 0.5..1 so receivers coming back up are not hit by every sender at once."""
    delay = min(base * 2.0 ** min(attempts - 1, 40), ceiling)
    return delay * (0.5 + rng() / 2)


class WebhookSender:
    def __init__(
        self,
        store: WebhookStore,
        http: aiohttp.ClientSession,
        directory: Callable[[], Directory],
        settings: WebhookDeliverySettings,
    ) -> None:
        self.store = store
        self.http = http
        self.directory = directory
        self.settings = settings
        self.sent = 0  # attempts made by this process
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._log = get_logger("webhooks")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        """Something was written or finished: look for due deliveries now."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._send_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store failing must not stop the sender for good
                self._log.error("webhook_sender_error", error=type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll_seconds)

    async def _send_due(self) -> None:
        room = MAX_IN_FLIGHT - len(self._in_flight)
        if room <= 0:
            return
        for due in await self.store.due(time.time(), list(self._in_flight), min(room, BATCH)):
            delivery_id = due.delivery.id
            task = asyncio.ensure_future(self._deliver(due))
            self._in_flight[delivery_id] = task
            task.add_done_callback(functools.partial(self._done, delivery_id))

    def _done(self, delivery_id: str, _: object) -> None:
        self._in_flight.pop(delivery_id, None)
        self.wake()  # the next event of that call and destination may go now

    def _secret(self, due: Due) -> str:
        if due.override_secret is not None:
            return due.override_secret
        company = self.directory().companies.get(due.delivery.company_id)
        return company.settings.webhooks.secret.get_secret_value() if company is not None else ""

    async def _deliver(self, due: Due) -> None:
        delivery = due.delivery
        body = due.body.encode("utf-8")
        headers = {"Content-Type": "application/json", DELIVERY_HEADER: delivery.id}
        secret = self._secret(due)
        if secret:
            headers[SIGNATURE_HEADER] = signature_header(secret, int(time.time()), body)
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        status: int | None = None
        self.sent += 1
        try:
            async with self.http.post(
                delivery.url, data=body, headers=headers, timeout=timeout, allow_redirects=False
            ) as reply:
                status = reply.status
                await reply.read()
            error = "" if 200 <= status < 300 else f"the receiver answered {status}"
        except TimeoutError:
            error = f"no answer within {self.settings.timeout_seconds:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            error = f"cannot reach the receiver: {type(exc).__name__}"
        try:
            await self._record(due, status, error)
        except Exception as exc:  # logged; the delivery stays pending and is sent again
            self._log.error("webhook_record_failed", delivery_id=delivery.id, error=type(exc).__name__)

    async def _record(self, due: Due, status: int | None, error: str) -> None:
        delivery = due.delivery
        now = time.time()
        if not error and status is not None:
            await self.store.delivered(delivery.id, status, now)
            self._log.info(
                "webhook_delivered",
                delivery_id=delivery.id,
                type=delivery.event_type,
                call_id=delivery.call_id,
            )
            return
        attempts = delivery.attempts + 1
        settings = self.settings
        retry_at = now + backoff_seconds(attempts, settings.retry_base_seconds, settings.retry_max_seconds)
        if retry_at > delivery.give_up_at:
            await self.store.failed(delivery.id, status, error, None)
            self._log.warning("webhook_dead", delivery_id=delivery.id, attempts=attempts, error=error)
            return
        await self.store.failed(delivery.id, status, error, retry_at)
        self._log.info("webhook_retry", delivery_id=delivery.id, attempts=attempts, error=error)

    async def close(self) -> None:
        task, self._task = self._task, None
        running = [*self._in_flight.values(), *([task] if task is not None else [])]
        for each in running:
            each.cancel()
        await asyncio.gather(*running, return_exceptions=True)
