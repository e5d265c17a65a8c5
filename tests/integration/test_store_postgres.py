"""What only the PostgreSQL store has: the translated migrations on a real server, migrating once under
an advisory lock however many nodes open together, its reader pool, and a lost connection replaced."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from bridge.store import CallQuery, CallRecord, SchemaTooNew, StoreError, open_store
from bridge.store import postgres as store_postgres
from bridge.store import sqlite as store_sqlite
from bridge.store.dialect import translate_migration
from bridge.store.schema import MIGRATIONS, SCHEMA_VERSION

T0 = 1_700_000_000.0


def record(call_id: str, n: int = 1) -> CallRecord:
    return CallRecord(
        call_id=call_id,
        company_id="acme",
        direction="inbound",
        from_number="+34600000001",
        to_number="+34987654321",
        created_at=T0,
        frames_in=n,
    )


@pytest.fixture
def pg(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def _sqlite_shape() -> dict[str, list[str]]:
    conn = sqlite3.connect(":memory:")
    try:
        for step in MIGRATIONS:
            for statement in step:
                conn.execute(statement)
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            t: [c[1] for c in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables
            if not t.startswith("sqlite_")
        }
    finally:
        conn.close()


def test_every_translated_migration_runs_on_a_real_server(pg: psycopg.Connection[Any]) -> None:
    for step in MIGRATIONS:
        with pg.transaction():
            for statement in step:
                pg.execute(translate_migration(statement))
    shape: dict[str, list[str]] = {}
    for table, column, kind, collation in pg.execute(
        "SELECT table_name, column_name, data_type, collation_name FROM information_schema.columns "
        "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
    ):
        shape.setdefault(table, []).append(column)
        # 8-byte numbers as SQLite keeps them: never PostgreSQL's 4-byte REAL or INTEGER.
        assert kind in ("text", "bigint", "double precision", "bytea"), (table, column, kind)
        # Text in code-point order, as SQLite compares it, whatever the server's locale.
        assert collation == ("C" if kind == "text" else None), (table, column, collation)
    assert shape == _sqlite_shape()


async def test_nodes_opening_together_migrate_once(
    postgres_url: str, pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A step that fails if it runs twice: only one of the openers may run it.
    steps = (*MIGRATIONS, ("CREATE TABLE once_only (x INTEGER)",))
    monkeypatch.setattr(store_postgres, "MIGRATIONS", steps)
    monkeypatch.setattr(store_postgres, "SCHEMA_VERSION", len(steps))
    stores = await asyncio.gather(*(open_store(postgres_url) for _ in range(4)))
    for store in stores:
        await store.close()
    assert pg.execute("SELECT version FROM bridge_schema_version").fetchall() == [(len(steps),)]


async def test_a_newer_schema_is_refused(postgres_url: str, pg: psycopg.Connection[Any]) -> None:
    async with await open_store(postgres_url):
        pass
    pg.execute("UPDATE bridge_schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        await open_store(postgres_url)


async def test_a_failing_step_rolls_back_whole(
    postgres_url: str, pg: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = (*MIGRATIONS, ("CREATE TABLE extra (x INTEGER)", "CREATE TABLE calls (x INTEGER)"))
    monkeypatch.setattr(store_postgres, "MIGRATIONS", steps)
    monkeypatch.setattr(store_postgres, "SCHEMA_VERSION", len(steps))
    with pytest.raises(psycopg.errors.DuplicateTable):
        await open_store(postgres_url)
    tables = {r[0] for r in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "calls" in tables
    assert "extra" not in tables
    assert pg.execute("SELECT version FROM bridge_schema_version").fetchall() == [(SCHEMA_VERSION,)]


async def test_reads_go_to_the_reader_pool_unless_writes_are_queued(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: dict[str, list[str]] = {"save": [], "get": [], "exists": []}
    real: dict[str, Callable[..., Any]] = {
        "save": store_sqlite._save,
        "get": store_sqlite._get,
        "exists": store_sqlite._exists,
    }

    def spy(name: str) -> Any:
        def run(*args: Any) -> Any:
            threads[name].append(threading.current_thread().name)
            return real[name](*args)

        return run

    for name in real:
        monkeypatch.setattr(store_sqlite, f"_{name}", spy(name))
    async with await open_store(postgres_url) as store:
        await store.save(record("c1"))
        assert await store.get("acme", "c1") == record("c1")
        assert await store.call_exists("c1")
        assert not await store.call_exists("c2")
        # A read issued behind a queued save waits for it: it never misses a save issued before it.
        saving = asyncio.create_task(store.save(record("c1", 2)))
        await asyncio.sleep(0)
        assert await store.get("acme", "c1") == record("c1", 2)
        await saving
    assert {t.split("_")[0] for t in threads["save"]} == {"bridge-pg"}
    assert threads["get"][0].startswith("bridge-pg-read")
    assert threads["get"][1].startswith("bridge-pg_")  # the writer's, behind the save
    assert all(t.startswith("bridge-pg-read") for t in threads["exists"])


async def test_a_lost_connection_is_an_error_then_replaced(
    postgres_url: str, pg: psycopg.Connection[Any]
) -> None:
    async with await open_store(postgres_url) as store:
        await store.save(record("before"))
        killed = pg.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'bridge'"
        ).fetchall()
        assert len(killed) == 1 + store_postgres.READERS
        # The write that meets the dead connection fails (it may or may not have committed: the
        # caller decides); the next one reconnects. Reads run again on a fresh connection at once.
        with pytest.raises(StoreError, match="lost the connection") as lost:
            await store.save(record("after"))
        assert "postgres@" not in str(lost.value)
        await store.save(record("after"))
        assert await store.call_exists("before")
        assert await store.get("acme", "after") == record("after")
        _, total = await store.list(CallQuery(company_id="acme"))
        assert total == 2


async def test_numbers_come_back_as_sqlite_gives_them(postgres_url: str) -> None:
    def probe(conn: Any) -> tuple[Any, ...]:
        conn.execute(
            translate_migration("CREATE TABLE probe (n INTEGER, x REAL, b BLOB, flag INTEGER, note TEXT)")
        )
        conn.execute("INSERT INTO probe VALUES (?, ?, ?, ?, ?)", (2**40, 0.25, b"\x00\xff", True, "5%"))
        conn.execute("INSERT INTO probe VALUES (?, ?, ?, ?, ?)", (3, 0.5, b"", False, "100%"))
        row = conn.execute(
            "SELECT SUM(n), SUM(x), SUM(flag), COUNT(*) FROM probe WHERE note LIKE '%\\%' ESCAPE '\\'"
        ).fetchone()
        blob = conn.execute("SELECT b FROM probe WHERE n = ?", (2**40,)).fetchone()
        assert row is not None
        assert blob is not None
        return (*row, blob[0])

    async with await open_store(postgres_url) as store:
        total, floats, flags, count, blob = await store.run(probe)
    assert (total, type(total)) == (2**40 + 3, int)
    assert (floats, type(floats)) == (0.75, float)
    assert (flags, count, blob) == (1, 2, b"\x00\xff")
