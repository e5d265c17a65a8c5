"""Call records, transcripts and usage, kept in SQLite or PostgreSQL (`open_store` picks by URL).

The session layer imports this package; the API never does (it asks the session manager).
"""

from bridge.store.base import SchemaTooNew, Store, StoreClosed, StoreError
from bridge.store.records import (
    STATUSES,
    TERMINAL_STATUSES,
    CallQuery,
    CallRecord,
    CallStore,
    ModelSegment,
    TranscriptLine,
    Usage,
    iso_utc,
)
from bridge.store.schema import SCHEMA_VERSION
from bridge.store.sqlite import SqliteCallStore
from bridge.store.url import redact_url, sqlite_path, store_scheme


async def open_store(url: str) -> Store:
    """Open (creating and migrating as needed) the store a `[storage] url` names: sqlite:///file.db,
    or postgresql://user@host/db (postgres:// too; needs `pip install 'bridge[fleet]'`)."""
    if store_scheme(url) == "postgresql":
        from bridge.store.postgres import PostgresCallStore  # noqa: PLC0415  (psycopg only when asked)

        return await PostgresCallStore.open(url)
    return await SqliteCallStore.open(url)


__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "TERMINAL_STATUSES",
    "CallQuery",
    "CallRecord",
    "CallStore",
    "ModelSegment",
    "SchemaTooNew",
    "SqliteCallStore",
    "Store",
    "StoreClosed",
    "StoreError",
    "TranscriptLine",
    "Usage",
    "iso_utc",
    "open_store",
    "redact_url",
    "sqlite_path",
]
