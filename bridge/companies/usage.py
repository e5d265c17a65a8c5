"""Usage and cost as rows a query can sum: one row per call and model that served it (`usage_rows`,
migration 11), written in the transaction of the call's final record, and the queries behind
`GET /api/usage` and `GET /api/admin/usage` (by company, conversation, model or day).

The row functions run on the store's writer thread (`Store.run` or a record's companion
write); `UsageStore` is their asyncio face.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from bridge.session.session import Session
from bridge.store.base import Store
from bridge.store.records import TERMINAL_STATUSES, CallRecord, StoreWrite, Usage, iso_utc
from bridge.store.schema import SELECT, row_to_record, stored_text

GroupBy = Literal["company", "conversation", "model", "day"]

# The columns each grouping keeps (a fixed list: nothing a client sends becomes SQL), and its order.
_KEYS: Final[dict[GroupBy, tuple[str, ...]]] = {
    "company": ("company_id",),
    "conversation": ("company_id", "call_id", "day", "started_at"),
    "model": ("provider", "model"),
    "day": ("day",),
}
_ORDER: Final[dict[GroupBy, str]] = {
    "company": "company_id",
    "conversation": "started_at DESC, call_id",
    "model": "provider, model",
    "day": "day",
}
_SUMS: Final = (
    "SUM(input_text), SUM(output_text), SUM(input_audio), SUM(output_audio), SUM(cached), "
    "SUM(model_seconds), SUM(cost_usd), COUNT(DISTINCT call_id)"  # NULL sums read as 0 (_sums)
)


@dataclass(frozen=True, slots=True)
class UsageRow:
    """What one model consumed on one call."""

    provider: str
    model: str
    usage: Usage
    cost_usd: float | None


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: GroupBy
    company_id: str | None  # None: every company (the admin's view)
    since: float | None = None  # the call started at or after (inclusive)
    until: float | None = None  # the call started before (exclusive)
    by_model: bool = False  # each group split per provider and model (a company's model breakdown)
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True, slots=True)
class UsageSums:
    input_text: int = 0
    output_text: int = 0
    input_audio: int = 0
    output_audio: int = 0
    cached: int = 0
    model_seconds: float = 0.0
    cost_usd: float = 0.0
    calls: int = 0


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """One row of a usage table: its keys (None where the grouping has none) and its sums."""

    sums: UsageSums
    company_id: str | None = None
    call_id: str | None = None
    day: str | None = None
    started_at: float | None = None
    provider: str | None = None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class UsagePage:
    groups: list[UsageGroup]
    total: int  # groups in all, across pages
    totals: UsageSums  # every row the filter holds, summed


def utc_day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).strftime("%Y-%m-%d")


def iso_instant(epoch: float | None) -> str | None:
    """How the API shows an instant (for routes, which do not reach the store's modules)."""
    return iso_utc(epoch)


def rows_of(session: Session, record: CallRecord) -> list[UsageRow]:
    """The call's usage per model; the model serving it at the end has a row even if it reported none."""
    rows = [UsageRow(p, m, usage, cost) for (p, m), (usage, cost) in session.usage_by_model.items()]
    if record.provider and (record.provider, record.model) not in session.usage_by_model:
        rows.append(UsageRow(record.provider, record.model, Usage(), None))
    return rows


def replace_rows(conn: sqlite3.Connection, record: CallRecord, rows: Sequence[UsageRow]) -> None:
    """The call's rows are these (a second final save replaces them: nothing is counted twice)."""
    call_id, company_id = stored_text(record.call_id), stored_text(record.company_id)
    conn.execute("DELETE FROM usage_rows WHERE call_id = ? AND company_id = ?", (call_id, company_id))
    day = utc_day(record.created_at)
    conn.executemany(
        "INSERT INTO usage_rows (call_id, company_id, provider, model, day, started_at, input_text, "
        "input_audio, cached, output_text, output_audio, model_seconds, cost_usd) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                call_id,
                company_id,
                stored_text(row.provider),
                stored_text(row.model),
                day,
                record.created_at,
                row.usage.input_text_tokens,
                row.usage.input_audio_tokens,
                row.usage.input_cached_tokens,
                row.usage.output_text_tokens,
                row.usage.output_audio_tokens,
                row.usage.model_seconds,
                row.cost_usd,
            )
            for row in rows
        ],
    )


def usage_companion(session: Session, record: CallRecord) -> StoreWrite | None:
    """For `CallRecorder.companions`: the usage rows commit with the call's final record."""
    if record.status not in TERMINAL_STATUSES:
        return None
    rows = rows_of(session, record)

    def write(conn: Any) -> None:
        replace_rows(conn, record, rows)

    return write


def backfill_batch(conn: sqlite3.Connection, limit: int) -> int:
    """Rows for finished calls that have none (calls a crash interrupted, whose final save never ran,
    and calls from before migration 11), from the record's totals under its last model. How many."""
    found = conn.execute(
        f"{SELECT} WHERE status IN ('ended', 'failed') AND provider != '' AND NOT EXISTS "  # noqa: S608
        "(SELECT 1 FROM usage_rows WHERE usage_rows.call_id = calls.call_id) LIMIT ?",
        (limit,),
    ).fetchall()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for row in found:
            record = row_to_record(row)
            replace_rows(
                conn, record, [UsageRow(record.provider, record.model, record.usage, record.cost_usd)]
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(found)


def _where(query: UsageQuery) -> tuple[str, list[object]]:
    clauses: list[str] = []
    params: list[object] = []
    if query.company_id is not None:
        clauses.append("company_id = ?")
        params.append(stored_text(query.company_id))
    if query.since is not None:
        clauses.append("started_at >= ?")
        params.append(query.since)
    if query.until is not None:
        clauses.append("started_at < ?")
        params.append(query.until)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


def _sums(values: Sequence[Any]) -> UsageSums:
    return UsageSums(
        input_text=int(values[0] or 0),
        output_text=int(values[1] or 0),
        input_audio=int(values[2] or 0),
        output_audio=int(values[3] or 0),
        cached=int(values[4] or 0),
        model_seconds=round(float(values[5] or 0.0), 3),
        cost_usd=round(float(values[6] or 0.0), 6),
        calls=int(values[7] or 0),
    )


def query_usage(conn: sqlite3.Connection, query: UsageQuery) -> UsagePage:
    keys = _KEYS[query.group_by]
    order = _ORDER[query.group_by]
    if query.by_model and query.group_by != "model":
        keys, order = (*keys, "provider", "model"), f"{order}, provider, model"
    where, params = _where(query)
    columns = ", ".join(keys)
    # Only fixed column names are formatted in; every value is a parameter.
    total = conn.execute(
        f"SELECT COUNT(*) FROM (SELECT 1 FROM usage_rows{where} GROUP BY {columns}) AS g",  # noqa: S608
        params,
    ).fetchone()[0]
    found = conn.execute(
        f"SELECT {columns}, {_SUMS} FROM usage_rows{where} "  # noqa: S608
        f"GROUP BY {columns} ORDER BY {order} LIMIT ? OFFSET ?",
        [*params, query.limit, query.offset],
    ).fetchall()
    totals = conn.execute(f"SELECT {_SUMS} FROM usage_rows{where}", params).fetchone()  # noqa: S608
    groups = [
        UsageGroup(sums=_sums(row[len(keys) :]), **dict(zip(keys, row[: len(keys)], strict=True)))
        for row in found
    ]
    return UsagePage(groups, int(total), _sums(totals))


class UsageStore:
    """The usage rows, read through the store's writer thread (they are written there too)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def query(self, query: UsageQuery) -> UsagePage:
        return await self._store.run(query_usage, query)

    async def backfill(self, batch: int = 500) -> int:
        """Give every finished call without usage rows its rows, a batch per writer-thread turn (so
        saves interleave with a long backfill). How many calls."""
        done = 0
        while count := await self._store.run(backfill_batch, batch):
            done += count
        return done

    async def replace(self, record: CallRecord, rows: Sequence[UsageRow]) -> None:
        """Write a call's rows outside a record's save (tests, repairs)."""
        await self._store.run(replace_rows, record, list(rows))
