"""Call records in PostgreSQL (psycopg 3), on worker threads exactly as the SQLite store runs them.

One writer connection on one thread runs every write, and `run`'s table functions, in issue order
(the same functions as on SQLite: bridge/store/dialect.py gives them sqlite3's surface). A small pool
of reader connections, each on a thread of its own, answers `call_exists` always and `get`/`list`
whenever no write is queued (with writes queued they go behind them, so a read never misses a save
issued before it). A connection found broken (server restart, failover) is replaced before the next
job; the job that met the failure raises StoreError. The schema migrates itself from the same
MIGRATIONS as SQLite, the version kept in `bridge_schema_version`, each step in its own transaction
under an advisory lock so nodes starting together migrate once.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import itertools
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, TypeVar

from bridge.store import sqlite as records_sql
from bridge.store.base import SchemaTooNew, StoreClosed, StoreError
from bridge.store.dialect import PgConnection, translate_migration
from bridge.store.records import CallQuery, CallRecord, StoreWrite
from bridge.store.schema import MIGRATIONS, SCHEMA_VERSION
from bridge.store.url import redact_url

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

READERS: Final = 2
CONNECT_TIMEOUT_S: Final = 10
INSTALL_HINT: Final = "pip install 'bridge[fleet]'"


def _driver() -> Any:
    try:
        import psycopg  # noqa: PLC0415  (optional: only a PostgreSQL store needs it)
    except ImportError as exc:
        raise StoreError(f"a postgresql:// store needs the psycopg driver: {INSTALL_HINT}") from exc
    return psycopg


def _numeric_loader(driver: Any) -> type[Any]:
    class NumericLoader(driver.adapt.Loader):  # type: ignore[misc]
        """NUMERIC (what SUM over BIGINT returns) as int when whole, else float: as SQLite answers."""

        def load(self, data: Any) -> int | float:
            text = bytes(data).decode("ascii")
            return float(text) if any(c in text for c in ".eEN") else int(text)

    return NumericLoader


# --- the synchronous side, run only on a worker's thread ----------------------------------------


class _Link:
    """A worker's connection, replaced when found broken."""

    def __init__(self, url: str, *, read_only: bool) -> None:
        self.url = url
        self.read_only = read_only
        self._conn: PgConnection | None = None

    def connection(self) -> PgConnection:
        conn = self._conn
        if conn is not None and not (conn.raw.closed or conn.raw.broken):
            return conn
        if conn is not None:
            conn.close()
            self._conn = None
        driver = _driver()
        try:
            raw: psycopg.Connection[Any] = driver.connect(
                self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, application_name="bridge"
            )
        except driver.Error as exc:
            # The driver's message may quote the URL's parts, never the password; we quote neither.
            raise StoreError(
                f"cannot connect to the PostgreSQL store {redact_url(self.url)}: {type(exc).__name__}"
            ) from None
        raw.adapters.register_loader("numeric", _numeric_loader(driver))
        self._conn = PgConnection(raw, read_only=self.read_only)
        return self._conn

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        driver = _driver()
        conn = self.connection()
        try:
            return fn(conn, *args)
        except driver.OperationalError as exc:
            if not (conn.raw.closed or conn.raw.broken):
                raise
            if self.read_only:  # a read is safe to run again, on a fresh connection
                return fn(self.connection(), *args)
            # A write may or may not have committed before the connection went: the caller decides.
            raise StoreError(
                f"lost the connection to the PostgreSQL store {redact_url(self.url)}: {type(exc).__name__}"
            ) from None
        finally:
            # A function that left a transaction open (or failed inside one) must not hand it on.
            if not (conn.raw.closed or conn.raw.broken) and conn.in_transaction:
                conn.raw.execute("ROLLBACK")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _version_table(conn: PgConnection) -> None:
    conn.execute("BEGIN IMMEDIATE")  # the advisory lock: concurrent creators would collide otherwise
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS bridge_schema_version "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL)"
        )
        conn.execute("INSERT INTO bridge_schema_version (id, version) VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _migrate(conn: PgConnection, where: str) -> None:
    _version_table(conn)
    while True:
        # Each step under the advisory lock: a second node opening meanwhile waits, then finds it done.
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT version FROM bridge_schema_version WHERE id = 1").fetchone()
            version = int(row[0]) if row is not None else 0
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"call store {where!r} has schema version {version}, newer than this bridge knows "
                    f"({SCHEMA_VERSION}); upgrade the bridge or point [storage] url at another database"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for statement in MIGRATIONS[version]:
                conn.raw.execute(translate_migration(statement))  # DDL: no parameters, no translation
            conn.execute("UPDATE bridge_schema_version SET version = ? WHERE id = 1", (version + 1,))
            conn.execute("COMMIT")
        except BaseException:
            if not conn.raw.broken:
                conn.execute("ROLLBACK")
            raise


def _open_writer(link: _Link) -> None:
    link.call(_migrate, redact_url(link.url))


def _open_reader(link: _Link) -> None:
    link.connection()


# --- the asyncio side ---------------------------------------------------------------------------


class _Worker:
    """One connection and the one thread that may use it."""

    def __init__(self, name: str, link: _Link) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.link = link
        self.queued = 0  # jobs submitted and not finished, for the readers' choice

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        self.queued += 1
        future = asyncio.get_running_loop().run_in_executor(self.executor, self.link.call, fn, *args)
        future.add_done_callback(self._done)
        return future

    def _done(self, _: object) -> None:
        self.queued -= 1

    def stop(self) -> None:
        self.executor.shutdown(wait=False)


async def _start(name: str, link: _Link, prepare: Callable[[_Link], None]) -> _Worker:
    worker = _Worker(name, link)
    preparing = asyncio.get_running_loop().run_in_executor(worker.executor, prepare, link)
    try:
        await asyncio.shield(preparing)
    except BaseException:
        # Failed or cancelled open: close whatever it connected, on its own thread, once it is done.
        preparing.add_done_callback(functools.partial(_abandon, worker))
        raise
    return worker


# The record functions are SQLite's own (one set of SQL for both engines), looked up when called.


class PostgresCallStore:
    """The call-record store on PostgreSQL. Build it with `await open_store(url)`; `await close()`."""

    def __init__(self, writer: _Worker, readers: builtins.list[_Worker], url: str) -> None:
        self._writer = writer
        self._readers = readers
        self._turn = itertools.cycle(range(len(readers)))
        self._unsaved: Counter[str] = Counter()  # call ids whose saves are issued, not yet committed
        self._closing: asyncio.Future[None] | None = None
        self.url = redact_url(url)  # safe to show: no credentials

    @classmethod
    async def open(cls, url: str, *, readers: int = READERS) -> PostgresCallStore:
        _driver()  # a clear error before any thread starts
        writer = await _start("bridge-pg", _Link(url, read_only=False), _open_writer)
        started: builtins.list[_Worker] = []
        try:
            for n in range(readers):
                started.append(await _start(f"bridge-pg-read{n}", _Link(url, read_only=True), _open_reader))
        except BaseException:
            for worker in [writer, *started]:
                worker.executor.submit(worker.link.close)
                worker.stop()
            raise
        return cls(writer, started, url)

    @property
    def closed(self) -> bool:
        return self._closing is not None

    def _check_open(self) -> None:
        if self._closing is not None:
            raise StoreClosed("the call store is closed")

    def _submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        # Submitted synchronously, before the caller's first await: issue order is execution order.
        self._check_open()
        return self._writer.submit(fn, *args)

    def _read(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._writer.queued or not self._readers:
            return self._submit(fn, *args)  # behind the writes issued before it
        self._check_open()
        # The least busy reader; ties go round the pool.
        start = next(self._turn)
        order = self._readers[start:] + self._readers[:start]
        return min(order, key=lambda worker: worker.queued).submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(connection, *args)` on the writer thread, after everything issued before it; shielded:
        once issued it lands."""
        return await asyncio.shield(self._submit(fn, *args))

    async def save(self, record: CallRecord, *, also: StoreWrite | None = None) -> None:
        """Insert or update the record (see SqliteCallStore.save: the same contract)."""
        saving = self._submit(records_sql._save, record, also)
        call_id = record.call_id
        self._unsaved[call_id] += 1
        saving.add_done_callback(lambda _: self._saved(call_id))
        await asyncio.shield(saving)

    def _saved(self, call_id: str) -> None:
        self._unsaved[call_id] -= 1
        if not self._unsaved[call_id]:
            del self._unsaved[call_id]

    async def get(self, company_id: str, call_id: str) -> CallRecord | None:
        return await self._read(records_sql._get, company_id, call_id)

    async def call_exists(self, call_id: str) -> bool:
        """Whether any company has a record with this id (saves already issued count)."""
        self._check_open()
        if call_id in self._unsaved:
            return True
        if not self._readers:
            return await self._submit(records_sql._exists, call_id)
        start = next(self._turn)
        order = self._readers[start:] + self._readers[:start]
        return await min(order, key=lambda worker: worker.queued).submit(records_sql._exists, call_id)

    async def list(self, query: CallQuery) -> tuple[builtins.list[CallRecord], int]:
        return await self._read(records_sql._list, query)

    async def mark_interrupted(self, now: float) -> int:
        return await asyncio.shield(self._submit(records_sql._mark_interrupted, now))

    async def close(self) -> None:
        """Let queued work finish, close the connections and stop the workers. Idempotent."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close_workers())
        await asyncio.shield(self._closing)

    async def _close_workers(self) -> None:
        loop = asyncio.get_running_loop()
        workers = [self._writer, *self._readers]
        closing = [loop.run_in_executor(worker.executor, worker.link.close) for worker in workers]
        for worker, closed in zip(workers, closing, strict=True):
            closed.add_done_callback(functools.partial(_stop, worker))
        await asyncio.gather(*closing)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def _stop(worker: _Worker, _: object) -> None:
    worker.stop()


def _abandon(worker: _Worker, _: object) -> None:
    worker.executor.submit(worker.link.close)
    worker.stop()
