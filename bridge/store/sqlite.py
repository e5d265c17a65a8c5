"""Call records in SQLite, on dedicated worker threads so the event loop never waits on disk.

Every write (and the API's reads) runs on a single-thread executor that owns the writing connection:
writes are serialized in the order they were issued, and `close()` runs after everything already
queued. `call_exists`, which call setup asks, has a read-only connection on a thread of its own (WAL
lets it read while the writer writes): a burst of calls never waits behind the saves and checkpoints
queued on the writer, and ids whose saves are still queued are answered from memory. The schema is
migrated by the app itself, tracked by `PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, TypeVar

from bridge.store.base import AlsoFailed, SchemaTooNew, StoreClosed, StoreError
from bridge.store.records import CallQuery, CallRecord, StoreWrite
from bridge.store.schema import (
    EXISTS,
    INTERRUPT,
    MIGRATIONS,
    SCHEMA_VERSION,
    SELECT,
    UPSERT,
    record_to_row,
    row_to_record,
    stored_text,
)
from bridge.store.url import MEMORY, sqlite_path

__all__ = [
    "AlsoFailed",
    "SchemaTooNew",
    "SqliteCallStore",
    "StoreClosed",
    "StoreError",
    "open_store",
]

T = TypeVar("T")

BUSY_TIMEOUT_MS: Final = 5000


# --- the synchronous side, run only on the worker thread -----------------------------------------


def _connect(path: str) -> sqlite3.Connection:
    if path != MEMORY:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: autocommit; transactions are explicit (BEGIN ... COMMIT) below.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if path != MEMORY:
            conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL under WAL: a power cut may lose the last commits, never corrupt the file.
        conn.execute("PRAGMA synchronous = NORMAL")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_reader(path: str) -> sqlite3.Connection:
    """A second connection to an already migrated file, for lookups only."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    while True:
        # IMMEDIATE takes the write lock first, so two processes opening one file never both migrate.
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = _user_version(conn)
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"call store {path!r} has schema version {version}, newer than this bridge knows "
                    f"({SCHEMA_VERSION}); upgrade the bridge or point [storage] url at another file"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _save(conn: sqlite3.Connection, record: CallRecord, also: StoreWrite | None = None) -> None:
    # The row (JSON for the transcript and usage) is built here, not on the event loop: records are
    # immutable, and a long transcript's encoding is no business of the thread that carries audio.
    # The first save inserts; later ones update, and never a row another company owns.
    if also is None:
        _upsert(conn, record)
        return
    # The record and what must commit with it (webhook events) in one transaction. A failing `also`
    # is rolled back to its savepoint: the record still lands, and the failure is raised after.
    failed: Exception | None = None
    conn.execute("BEGIN IMMEDIATE")
    try:
        _upsert(conn, record)
        conn.execute("SAVEPOINT also")
        try:
            also(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO also")
            failed = exc
        conn.execute("RELEASE also")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    if failed is not None:
        raise AlsoFailed(f"saved call {record.call_id!r} without its companion rows") from failed


def _upsert(conn: sqlite3.Connection, record: CallRecord) -> None:
    cursor = conn.execute(UPSERT, record_to_row(record))
    if cursor.rowcount != 1:
        raise StoreError(f"call {record.call_id!r} already belongs to another company; not saved")


def _get(conn: sqlite3.Connection, company_id: str, call_id: str) -> CallRecord | None:
    key = (stored_text(call_id), stored_text(company_id))
    row = conn.execute(f"{SELECT} WHERE call_id = ? AND company_id = ?", key).fetchone()
    return None if row is None else row_to_record(row)


def _exists(conn: sqlite3.Connection, call_id: str) -> bool:
    return conn.execute(EXISTS, (stored_text(call_id),)).fetchone() is not None


def _where(query: CallQuery) -> tuple[str, list[object]]:
    clauses = ["company_id = ?"]
    params: list[object] = [query.company_id]
    if query.status is not None:
        clauses.append("status = ?")
        params.append(query.status)
    if query.direction is not None:
        clauses.append("direction = ?")
        params.append(query.direction)
    if query.amd_result is not None:
        clauses.append("amd_result = ?")
        params.append(query.amd_result)
    if query.agent_id is not None:
        clauses.append("agent_id = ?")
        params.append(query.agent_id)
    if query.task_id is not None:
        clauses.append("task_id = ?")
        params.append(query.task_id)
    if query.since is not None:
        clauses.append("created_at >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("created_at < ?")
        params.append(query.until)
    return " AND ".join(clauses), params


def _list(conn: sqlite3.Connection, query: CallQuery) -> tuple[list[CallRecord], int]:
    where, params = _where(query)
    # One read transaction: the page and the total come from the same snapshot.
    conn.execute("BEGIN")
    try:
        total: int = conn.execute(f"SELECT COUNT(*) FROM calls WHERE {where}", params).fetchone()[0]  # noqa: S608
        rows = conn.execute(
            f"{SELECT} WHERE {where} ORDER BY created_at DESC, call_id DESC LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [row_to_record(row) for row in rows], total


def _mark_interrupted(conn: sqlite3.Connection, now: float) -> int:
    return conn.execute(INTERRUPT, (now,)).rowcount


# --- the asyncio side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Worker:
    """One connection and the one thread that may use it."""

    executor: ThreadPoolExecutor
    conn: sqlite3.Connection


async def _start_worker(name: str, connect: Callable[[str], sqlite3.Connection], path: str) -> _Worker:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    connecting = asyncio.get_running_loop().run_in_executor(executor, connect, path)

    def abandon(done: asyncio.Future[sqlite3.Connection]) -> None:
        # Failed or cancelled open: close whatever connection the worker made, on its own thread.
        if not done.cancelled() and done.exception() is None:
            executor.submit(done.result().close)
        executor.shutdown(wait=False)

    try:
        conn = await asyncio.shield(connecting)
    except BaseException:
        connecting.add_done_callback(abandon)
        raise
    return _Worker(executor, conn)


class SqliteCallStore:
    """The call-record store. Build it with `await open_store(url)`; `await close()` at shutdown."""

    def __init__(self, writer: _Worker, reader: _Worker | None, path: str) -> None:
        self._executor = writer.executor
        self._conn = writer.conn
        # None for ":memory:" (a second connection would open another, empty database): lookups then
        # queue on the writer like everything else.
        self._reader = reader
        # Call ids whose saves are issued but not yet committed: the reader cannot see those rows yet.
        self._unsaved: Counter[str] = Counter()
        self._closing: asyncio.Future[None] | None = None  # set once close() has been called
        self.path = path  # ":memory:" or the file path as given (relative to the working directory)

    @classmethod
    async def open(cls, url: str) -> SqliteCallStore:
        path = sqlite_path(url)
        writer = await _start_worker("bridge-store", _connect, path)  # creates and migrates the file
        if path == MEMORY:
            return cls(writer, None, path)
        try:
            reader = await _start_worker("bridge-store-read", _connect_reader, path)
        except BaseException:
            writer.executor.submit(writer.conn.close)
            writer.executor.shutdown(wait=False)
            raise
        return cls(writer, reader, path)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        # Submitted synchronously, before the caller's first await: issue order is execution order.
        if self._closing is not None:
            raise StoreClosed("the call store is closed")
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, self._conn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on the writer thread, after everything issued before it: for the
        tables other modules own (e.g. `store.reports`). Shielded like a save: once issued it lands."""
        return await asyncio.shield(self._submit(fn, *args))

    async def save(self, record: CallRecord, *, also: StoreWrite | None = None) -> None:
        """Insert or update the record with this call id (cheap: one row, one statement); `also`
        runs in the same transaction (rows that must commit with this version of the record).

        Raises StoreError if the call id belongs to another company (whose row stays as it was).
        """
        saving = self._submit(_save, record, also)
        call_id = record.call_id
        self._unsaved[call_id] += 1
        saving.add_done_callback(lambda _: self._saved(call_id))
        # Shielded: a save issued by a task that is then cancelled still lands.
        await asyncio.shield(saving)

    def _saved(self, call_id: str) -> None:
        self._unsaved[call_id] -= 1
        if not self._unsaved[call_id]:
            del self._unsaved[call_id]

    async def get(self, company_id: str, call_id: str) -> CallRecord | None:
        """The call, or None if it does not exist or belongs to another company."""
        return await self._submit(_get, company_id, call_id)

    async def call_exists(self, call_id: str) -> bool:
        """Whether a record with this call id exists, for any company and in any state (saves already
        issued count, committed or not). Never waits behind queued writes."""
        if self._reader is None:
            return await self._submit(_exists, call_id)
        if self._closing is not None:
            raise StoreClosed("the call store is closed")
        if call_id in self._unsaved:
            return True
        reader = self._reader
        return await asyncio.get_running_loop().run_in_executor(
            reader.executor, _exists, reader.conn, call_id
        )

    async def list(self, query: CallQuery) -> tuple[builtins.list[CallRecord], int]:
        """A page of the company's calls, newest first, and how many match in all."""
        return await self._submit(_list, query)

    async def mark_interrupted(self, now: float) -> int:
        """Fail every call a previous process left unfinished; how many there were.

        Each ends at its last save (`updated_at`), with what that save held; `now` is for rows that
        never had one (written before schema version 2).
        """
        return await asyncio.shield(self._submit(_mark_interrupted, now))

    async def close(self) -> None:
        """Let queued work finish, close the connections and stop the workers. Idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_workers())
        await asyncio.shield(self._closing)

    async def _close_workers(self) -> None:
        loop = asyncio.get_running_loop()
        workers = [_Worker(self._executor, self._conn), *([self._reader] if self._reader else [])]
        closing = [loop.run_in_executor(worker.executor, worker.conn.close) for worker in workers]
        for worker, closed in zip(workers, closing, strict=True):
            # No join: each worker exits by itself once its close has run.
            closed.add_done_callback(functools.partial(_stop, worker.executor))
        await asyncio.gather(*closing)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _stop(executor: ThreadPoolExecutor, _: object) -> None:
    executor.shutdown(wait=False)


async def open_store(url: str) -> SqliteCallStore:
    """Open (creating and migrating as needed) the store a `[storage] url` names."""
    return await SqliteCallStore.open(url)
