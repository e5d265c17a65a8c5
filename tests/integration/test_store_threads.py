"""The store's worker threads: off the event loop, writes in issue order, nothing lost on close; the
tests taking `store_url` run on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bridge.store import CallQuery, CallRecord, Store, open_store, schema, sqlite_path
from bridge.store import sqlite as store_sqlite

T0 = 1_700_000_000.0


def version(call_id: str, n: int, company_id: str = "acme") -> CallRecord:
    """The n-th state of a call; `frames_in` carries n so the test can tell which write won."""
    return CallRecord(
        call_id=call_id,
        company_id=company_id,
        direction="inbound",
        from_number="+34600000001",
        to_number="+34987654321",
        created_at=T0,
        status="active" if n else "pending",
        frames_in=n,
    )


@contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Another connection holding the database's write lock, as a second process would."""
    if url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(url, autocommit=True) as pg:
            pg.execute("BEGIN")
            pg.execute("LOCK TABLE calls IN EXCLUSIVE MODE")  # writes wait; reads go on
            try:
                yield
            finally:
                pg.execute("COMMIT")
        return
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("COMMIT")
        conn.close()


async def test_database_work_runs_on_one_thread_off_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    real_save, real_get = store_sqlite._save, store_sqlite._get

    def save(*args: Any) -> None:
        threads.append(threading.get_ident())
        real_save(*args)

    def get(*args: Any) -> CallRecord | None:
        threads.append(threading.get_ident())
        return real_get(*args)

    monkeypatch.setattr(store_sqlite, "_save", save)
    monkeypatch.setattr(store_sqlite, "_get", get)
    async with await open_store(f"sqlite:///{tmp_path}/calls.db") as store:
        await store.save(version("c", 1))
        assert await store.get("acme", "c") == version("c", 1)
    assert len(threads) == 2
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


async def test_rows_are_encoded_on_the_worker_thread(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A long transcript's JSON is built beside the event loop, not on it (the loop carries the audio).
    threads: list[int] = []

    def record_to_row(record: CallRecord) -> tuple[object, ...]:
        threads.append(threading.get_ident())
        return schema.record_to_row(record)

    monkeypatch.setattr(store_sqlite, "record_to_row", record_to_row)
    async with await open_store(store_url) as store:
        await store.save(version("c", 1))
        await store.save(version("c", 2))
        assert await store.get("acme", "c") == version("c", 2)
    assert len(threads) == 2
    assert threading.get_ident() not in threads


async def test_a_locked_database_does_not_block_the_loop(store_url: str) -> None:
    async with await open_store(store_url) as store:
        with write_lock(store_url):
            saving = asyncio.create_task(store.save(version("c", 1)))
            for _ in range(20):
                await asyncio.sleep(0)  # the loop keeps turning while the worker waits for the lock
            assert not saving.done()
        await saving  # busy_timeout outlasts the lock
        assert await store.get("acme", "c") == version("c", 1)


async def test_concurrent_saves_keep_the_last_write_per_call(store_url: str) -> None:
    async def one_call(store: Store, call_id: str) -> None:
        for n in range(25):
            await store.save(version(call_id, n))

    async with await open_store(store_url) as store:
        async with asyncio.TaskGroup() as group:
            for i in range(20):
                group.create_task(one_call(store, f"call-{i}"))
        records, total = await store.list(CallQuery(company_id="acme", limit=100))
    assert total == 20
    assert {r.call_id: r.frames_in for r in records} == {f"call-{i}": 24 for i in range(20)}


async def test_saves_land_in_the_order_they_were_issued(store_url: str) -> None:
    async with await open_store(store_url) as store:
        # Fire-and-forget from many tasks, created in version order, never awaited in between.
        tasks = [asyncio.create_task(store.save(version("c", n))) for n in range(200)]
        await asyncio.gather(*tasks)
        assert await store.get("acme", "c") == version("c", 199)


async def test_close_finishes_writes_already_issued(store_url: str) -> None:
    url = store_url
    store = await open_store(url)
    tasks = [asyncio.create_task(store.save(version(f"call-{i}", 1))) for i in range(50)]
    await asyncio.sleep(0)  # every task has now issued its write
    await store.close()
    await asyncio.gather(*tasks)
    async with await open_store(url) as reopened:
        _, total = await reopened.list(CallQuery(company_id="acme"))
    assert total == 50


async def test_a_cancelled_save_still_lands(store_url: str) -> None:
    url = store_url
    store = await open_store(url)
    with write_lock(store_url):
        first = asyncio.create_task(store.save(version("first", 1)))
        queued = asyncio.create_task(store.save(version("queued", 1)))
        await asyncio.sleep(0)  # both issued; the worker is stuck on the lock with `first`
        queued.cancel()
        await asyncio.gather(queued, return_exceptions=True)
        assert queued.cancelled()
    await first
    await store.close()
    async with await open_store(url) as reopened:
        assert await reopened.get("acme", "queued") == version("queued", 1)


async def test_mark_interrupted_after_a_crash(store_url: str) -> None:
    url = store_url
    crashed = await open_store(url)
    for n in range(1, 4):  # checkpoints of a live call
        await crashed.save(
            dataclasses.replace(version("live", n), updated_at=T0 + 10 * n, duration_seconds=n)
        )
    await crashed.save(
        dataclasses.replace(version("done", 3), status="ended", ended_at=T0 + 9, updated_at=T0 + 9)
    )
    await crashed.close()  # as far as the file goes, a crash after the last commit looks the same
    async with await open_store(url) as restarted:
        assert await restarted.mark_interrupted(T0 + 100) == 1
        live = await restarted.get("acme", "live")
        assert live is not None
        assert (live.status, live.error_code, live.ended_at) == ("failed", "bridge_restarted", T0 + 30)
        assert (live.frames_in, live.duration_seconds) == (3, 3)  # what the last checkpoint held
        done = await restarted.get("acme", "done")
        assert done == dataclasses.replace(
            version("done", 3), status="ended", ended_at=T0 + 9, updated_at=T0 + 9
        )


# -- call setup's lookup: its own connection and thread, never behind queued writes -----------------


async def test_call_lookups_do_not_wait_behind_queued_writes(store_url: str) -> None:
    async with await open_store(store_url) as store:
        await store.save(version("earlier", 1))  # committed: e.g. a call of a previous run
        with write_lock(store_url):
            # The writer is stuck on the lock with a save, and more are queued behind it.
            saves = [asyncio.create_task(store.save(version(f"queued-{n}", 1))) for n in range(5)]
            await asyncio.sleep(0)
            assert await store.call_exists("earlier")
            assert not await store.call_exists("never-used")
            # Issued but not yet committed: already used, answered without reading the file.
            assert await store.call_exists("queued-3")
            assert not any(save.done() for save in saves)
        await asyncio.gather(*saves)
        assert await store.call_exists("queued-3")  # committed now, and found by the reader


async def test_lookups_run_on_their_own_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[int] = []
    lookups: list[int] = []
    real_save, real_exists = store_sqlite._save, store_sqlite._exists

    def save(*args: Any) -> None:
        writes.append(threading.get_ident())
        real_save(*args)

    def exists(*args: Any) -> bool:
        lookups.append(threading.get_ident())
        return real_exists(*args)

    monkeypatch.setattr(store_sqlite, "_save", save)
    monkeypatch.setattr(store_sqlite, "_exists", exists)
    async with await open_store(f"sqlite:///{tmp_path}/calls.db") as store:
        await store.save(version("c", 1))
        assert await store.call_exists("c")
        assert not await store.call_exists("d")
    assert len(set(writes)) == len(set(lookups)) == 1  # one thread each
    assert len({writes[0], lookups[0], threading.get_ident()}) == 3  # and neither is the loop's


async def test_an_id_from_a_previous_run_is_found_after_a_restart(store_url: str) -> None:
    url = store_url
    async with await open_store(url) as first_run:
        await first_run.save(version("old-1", 1, company_id="globex"))
    async with await open_store(url) as second_run:
        assert await second_run.call_exists("old-1")
        assert not await second_run.call_exists("old-2")


async def test_lookups_after_close_raise(store_url: str) -> None:
    store = await open_store(store_url)
    await store.close()
    with pytest.raises(store_sqlite.StoreClosed):
        await store.call_exists("c")
