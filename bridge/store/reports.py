"""Post-call reports in the `call_reports` table (migration 5): one row per call whose agent asks for an
analysis. The functions here run on the store's writer thread (`Store.run`); `ReportStore`
is their asyncio face."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast

from bridge.store.base import Store
from bridge.store.records import StoreWrite
from bridge.store.schema import stored_text

ReportStatus = Literal["pending", "done", "failed"]
AnalysisValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class StoredReport:
    call_id: str
    company_id: str
    status: ReportStatus
    summary: str | None
    post_call_analysis: Mapping[str, AnalysisValue] | None
    error: str | None
    attempts: int
    created_at: float
    updated_at: float


_COLUMNS = "call_id, company_id, status, summary, post_call_analysis, error, attempts, created_at, updated_at"


def _row(row: tuple[Any, ...]) -> StoredReport:
    analysis = None if row[4] is None else cast(dict[str, AnalysisValue], json.loads(row[4]))
    return StoredReport(row[0], row[1], row[2], row[3], analysis, row[5], row[6], row[7], row[8])


def _pending(conn: sqlite3.Connection, call_id: str, company_id: str, now: float) -> None:
    # A call's report is asked for once: a row already there (a restart's retry) keeps its created_at.
    conn.execute(
        f"INSERT INTO call_reports ({_COLUMNS}) VALUES (?, ?, 'pending', NULL, NULL, NULL, 0, ?, ?) "  # noqa: S608
        "ON CONFLICT(call_id) DO UPDATE SET status = 'pending', error = NULL, "
        "updated_at = excluded.updated_at "
        "WHERE call_reports.company_id = excluded.company_id",
        (stored_text(call_id), stored_text(company_id), now, now),
    )


def _attempted(conn: sqlite3.Connection, call_id: str, error: str | None, now: float) -> None:
    conn.execute(
        "UPDATE call_reports SET attempts = attempts + 1, error = ?, updated_at = ? WHERE call_id = ?",
        (error, now, stored_text(call_id)),
    )


def _finish(  # noqa: PLR0917  (called positionally through Store.run)
    conn: sqlite3.Connection,
    call_id: str,
    status: ReportStatus,
    summary: str | None,
    analysis: str | None,
    error: str | None,
    now: float,
    also: StoreWrite | None = None,
) -> None:
    update = (
        "UPDATE call_reports SET status = ?, summary = ?, post_call_analysis = ?, error = ?, updated_at = ? "
        "WHERE call_id = ?"
    )
    values = (status, summary, analysis, error, now, stored_text(call_id))
    if also is None:
        conn.execute(update, values)
        return
    # The final report and what waited for it (the call_completed webhook event) commit together.
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(update, values)
        also(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _get(conn: sqlite3.Connection, company_id: str, call_id: str) -> StoredReport | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM call_reports WHERE call_id = ? AND company_id = ?",  # noqa: S608
        (stored_text(call_id), stored_text(company_id)),
    ).fetchone()
    return None if row is None else _row(row)


def _all_pending(conn: sqlite3.Connection) -> list[StoredReport]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM call_reports WHERE status = 'pending' ORDER BY created_at"  # noqa: S608
    ).fetchall()
    return [_row(row) for row in rows]


class ReportStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def pending(self, call_id: str, company_id: str, now: float) -> None:
        await self._store.run(_pending, call_id, company_id, now)

    async def attempted(self, call_id: str, error: str | None, now: float) -> None:
        await self._store.run(_attempted, call_id, error, now)

    async def done(
        self,
        call_id: str,
        summary: str,
        analysis: Mapping[str, AnalysisValue],
        now: float,
        also: StoreWrite | None = None,
    ) -> None:
        encoded = json.dumps(dict(analysis), separators=(",", ":"), allow_nan=False)
        await self._store.run(_finish, call_id, "done", summary, encoded, None, now, also)

    async def failed(self, call_id: str, error: str, now: float, also: StoreWrite | None = None) -> None:
        await self._store.run(_finish, call_id, "failed", None, None, error, now, also)

    async def get(self, company_id: str, call_id: str) -> StoredReport | None:
        return await self._store.run(_get, company_id, call_id)

    async def all_pending(self) -> list[StoredReport]:
        return await self._store.run(_all_pending)
