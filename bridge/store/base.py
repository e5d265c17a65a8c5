"""What every store is: its errors and the interface callers hold (`Store`), whichever engine is behind
it (`SqliteCallStore` in sqlite.py, `PostgresCallStore` in postgres.py)."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from bridge.errors import BridgeError
from bridge.store.records import CallQuery, CallRecord, StoreWrite

T = TypeVar("T")


class StoreError(BridgeError):
    code = "store_error"


class StoreClosed(StoreError):
    code = "store_closed"


class SchemaTooNew(StoreError):
    code = "store_schema_too_new"


class AlsoFailed(StoreError):
    """The record was saved; the rows meant to commit with it (`save(also=...)`) were not."""

    code = "store_companion_failed"


class Store(Protocol):
    """A call store: records plus `run` for the tables other modules own.

    `run(fn, *args)` calls `fn(connection, *args)` on the store's writer thread, after everything issued
    before it; the connection has sqlite3's surface on either engine (bridge/store/dialect.py).
    """

    @property
    def closed(self) -> bool: ...

    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def save(self, record: CallRecord, *, also: StoreWrite | None = None) -> None: ...

    async def get(self, company_id: str, call_id: str) -> CallRecord | None: ...

    async def call_exists(self, call_id: str) -> bool: ...

    async def list(self, query: CallQuery) -> tuple[builtins.list[CallRecord], int]: ...

    async def mark_interrupted(self, now: float) -> int: ...

    async def close(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
