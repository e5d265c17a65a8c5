"""Jobs claimed in the store: two stores on one database (as two bridge processes are) competing for
the same due tasks and webhook deliveries hand each job to exactly one of them, on SQLite and on
PostgreSQL (where the claims lock rows with SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.agents.task_store import TaskStore
from bridge.agents.tasks import Task
from bridge.integrations import webhook_store
from bridge.integrations.webhook_store import WebhookStore
from bridge.store import Store, open_store

JOBS = 60
ROUNDS = 4


@pytest.fixture
async def two_stores(store_url: str) -> AsyncIterator[tuple[Store, Store]]:
    first = await open_store(store_url)
    try:
        second = await open_store(store_url)
        try:
            yield first, second
        finally:
            await second.close()
    finally:
        await first.close()


def task(n: int, now: float) -> Task:
    return Task(
        id=f"task-{n:03d}",
        company_id="acme" if n % 2 else "globex",
        to_number="+15551230000",
        from_number="+34987654321",
        call_objective="Confirm",
        scheduled_at=now - 1,
        created_at=now,
        updated_at=now,
        priority=n % 3,
    )


async def test_two_processes_claim_each_due_task_once(two_stores: tuple[Store, Store]) -> None:
    now = time.time()
    stores = [TaskStore(s) for s in two_stores]
    for n in range(JOBS):
        await stores[0].insert(task(n, now))

    async def scheduler(store: TaskStore) -> list[str]:
        # What TaskScheduler._tick does: find the due tasks, then claim them one by one.
        won: list[str] = []
        for _ in range(ROUNDS):
            for found in await store.due(time.time(), limit=JOBS):
                claimed = await store.claim(found.id, time.time(), due=True)
                if claimed is not None:
                    assert (claimed.status, claimed.attempts) == ("in_progress", 1)
                    won.append(claimed.id)
        return won

    results = await asyncio.gather(*(scheduler(s) for s in stores for _ in range(2)))
    claims = Counter(task_id for won in results for task_id in won)
    assert set(claims) == {f"task-{n:03d}" for n in range(JOBS)}
    assert set(claims.values()) == {1}
    assert len(await stores[1].in_progress()) == JOBS
    assert await stores[1].due(time.time(), limit=JOBS) == []


def _seed_deliveries(conn: Any, now: float) -> None:
    conn.execute("BEGIN")
    for n in range(JOBS):
        call_id, event_id = f"call-{n:03d}", f"evt-{n:03d}"
        webhook_store.insert_event(conn, event_id, "acme", call_id, "call_completed", now, "{}")
        webhook_store.insert_delivery(
            conn, f"dlv-{n:03d}", event_id, "acme", call_id, "http://127.0.0.1:9/hook", now - 1, now + 3600
        )
    conn.execute("COMMIT")


async def test_two_processes_claim_each_due_delivery_once(two_stores: tuple[Store, Store]) -> None:
    now = time.time()
    await two_stores[0].run(_seed_deliveries, now)
    stores = [WebhookStore(s) for s in two_stores]

    async def sender(store: WebhookStore) -> list[str]:
        won: list[str] = []
        for _ in range(ROUNDS):
            won += [due.delivery.id for due in await store.due(time.time(), [], 7)]
        return won

    results = await asyncio.gather(*(sender(s) for s in stores for _ in range(2)))
    claims = Counter(delivery_id for won in results for delivery_id in won)
    # Each delivery went to one sender only, and none is due again until its lease runs out.
    assert set(claims.values()) == {1}
    rest = len(claims)
    while rest < JOBS:
        more = await stores[0].due(time.time(), [], JOBS)
        assert more
        assert not {d.delivery.id for d in more} & set(claims)
        rest += len(more)
    assert await stores[1].due(time.time(), [], JOBS) == []
    # Past the lease (a sender lost mid-attempt), a delivery is due again, to one sender.
    later = time.time() + webhook_store.LEASE_SECONDS + 1
    again = await asyncio.gather(*(s.due(later, [], JOBS) for s in stores))
    assert sorted(d.delivery.id for batch in again for d in batch) == [f"dlv-{n:03d}" for n in range(JOBS)]


async def test_an_attempts_outcome_ends_the_lease(two_stores: tuple[Store, Store]) -> None:
    now = time.time()
    await two_stores[0].run(_seed_deliveries, now)
    first, second = (WebhookStore(s) for s in two_stores)
    (claimed,) = await first.due(time.time(), [], 1)
    await first.failed(claimed.delivery.id, 503, "the receiver answered 503", time.time() - 0.5)
    retried = await second.due(time.time(), [], JOBS)
    assert claimed.delivery.id in {d.delivery.id for d in retried}
    (delivery,) = [d.delivery for d in retried if d.delivery.id == claimed.delivery.id]
    assert (delivery.attempts, delivery.last_status, delivery.status) == (1, 503, "pending")
