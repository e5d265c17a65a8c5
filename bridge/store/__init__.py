"""Call records, transcripts and usage, kept in SQLite.

The session layer imports this package; the API never does (it asks the session manager).
"""

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
from bridge.store.sqlite import SchemaTooNew, SqliteCallStore, StoreClosed, StoreError, open_store
from bridge.store.url import redact_url, sqlite_path

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
    "StoreClosed",
    "StoreError",
    "TranscriptLine",
    "Usage",
    "iso_utc",
    "open_store",
    "redact_url",
    "sqlite_path",
]
