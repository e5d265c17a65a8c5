"""The webhook outbox's tables (migration 9). The functions run on the store's writer thread
(`Store.run`, or inside a record's save transaction); `WebhookStore` is their asyncio face.

Deliveries go out in order per call and destination: only the oldest pending delivery of a
(call, url) pair is ever due, so event n+1 waits until n is delivered or dead.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from bridge.store.base import Store
from bridge.store.dialect import claim_begin, skip_locked
from bridge.store.schema import stored_text

DeliveryStatus = Literal["pending", "delivered", "dead"]
MAX_ERROR_CHARS: Final = 300
# How long a claimed delivery is this process's alone; past it, another process may send it again.
# Longer than any attempt: [webhook_delivery] timeout_seconds is at most 120.
LEASE_SECONDS: Final = 180.0


@dataclass(frozen=True, slots=True)
class Override:
    """A company's webhook settings as edited through the API (they win over the config's)."""

    url: str
    secret: str
    events: tuple[str, ...]
    key_map: Mapping[str, str]
    updated_at: float


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event_id: str
    company_id: str
    call_id: str
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: float
    give_up_at: float
    last_status: int | None
    last_error: str | None
    delivered_at: float | None
    created_at: float
    event_type: str


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery to send now, with its event's body and its company's API-edited secret (if any)."""

    delivery: Delivery
    body: str
    override_secret: str | None


_DELIVERY = (
    "d.id, d.event_id, d.company_id, d.call_id, d.url, d.status, d.attempts, d.next_attempt_at, "
    "d.give_up_at, d.last_status, d.last_error, d.delivered_at, d.created_at, e.type"
)
_JOIN = "webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id"


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(*row[:14])


# --- settings override ----------------------------------------------------------------------------


def get_override(conn: sqlite3.Connection, company_id: str) -> Override | None:
    row = conn.execute(
        "SELECT url, secret, events, key_map, updated_at FROM webhook_settings WHERE company_id = ?",
        (stored_text(company_id),),
    ).fetchone()
    if row is None:
        return None
    return Override(row[0], row[1], tuple(json.loads(row[2])), dict(json.loads(row[3])), row[4])


def put_override(conn: sqlite3.Connection, company_id: str, override: Override) -> None:
    conn.execute(
        "INSERT INTO webhook_settings (company_id, url, secret, events, key_map, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(company_id) DO UPDATE SET url = excluded.url, "
        "secret = excluded.secret, events = excluded.events, key_map = excluded.key_map, "
        "updated_at = excluded.updated_at",
        (
            stored_text(company_id),
            stored_text(override.url),
            stored_text(override.secret),
            json.dumps(list(override.events)),
            json.dumps(dict(override.key_map)),
            override.updated_at,
        ),
    )


def delete_override(conn: sqlite3.Connection, company_id: str) -> bool:
    cursor = conn.execute("DELETE FROM webhook_settings WHERE company_id = ?", (stored_text(company_id),))
    return cursor.rowcount > 0


# --- writing events (inside the transaction of the state change) ----------------------------------


def set_call_target(
    conn: sqlite3.Connection, call_id: str, company_id: str, url: str, events: Sequence[str]
) -> None:
    conn.execute(
        "INSERT INTO webhook_call_targets (call_id, company_id, url, events) VALUES (?, ?, ?, ?) "
        "ON CONFLICT DO NOTHING",
        (stored_text(call_id), stored_text(company_id), stored_text(url), json.dumps(list(events))),
    )


def get_call_target(conn: sqlite3.Connection, call_id: str) -> tuple[str, tuple[str, ...]] | None:
    row = conn.execute(
        "SELECT url, events FROM webhook_call_targets WHERE call_id = ?", (stored_text(call_id),)
    ).fetchone()
    return None if row is None else (row[0], tuple(json.loads(row[1])))


def insert_event(  # noqa: PLR0917
    conn: sqlite3.Connection, event_id: str, company_id: str, call_id: str, kind: str, now: float, body: str
) -> bool:
    """False when the call already has an event of this type (a repeat save writes nothing twice)."""
    cursor = conn.execute(
        "INSERT INTO webhook_events (id, company_id, call_id, type, created_at, body) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (event_id, stored_text(company_id), stored_text(call_id), kind, now, body),
    )
    return cursor.rowcount == 1


def insert_delivery(  # noqa: PLR0917
    conn: sqlite3.Connection,
    delivery_id: str,
    event_id: str,
    company_id: str,
    call_id: str,
    url: str,
    now: float,
    give_up_at: float,
) -> None:
    conn.execute(
        "INSERT INTO webhook_deliveries (id, event_id, company_id, call_id, url, status, attempts, "
        "next_attempt_at, give_up_at, created_at) VALUES (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
        (
            delivery_id,
            event_id,
            stored_text(company_id),
            stored_text(call_id),
            stored_text(url),
            now,
            give_up_at,
            now,
        ),
    )


# --- the sender's side ------------------------------------------------------------------------------


def due(
    conn: sqlite3.Connection, now: float, busy: Sequence[str], limit: int, lease_until: float
) -> list[Due]:
    """The deliveries to send now: each the oldest pending one of its call and url, not already in flight.

    Claimed in the store, not only in this process's memory: in the same transaction each one's
    next_attempt_at moves to `lease_until`, so no other process on the database sends it meanwhile
    (on PostgreSQL the rows are locked with SKIP LOCKED: concurrent claimers take disjoint ones). The
    attempt's outcome sets next_attempt_at again; a process lost mid-send leaves it due after the lease.
    """
    conn.execute(claim_begin(conn))
    try:
        rows = conn.execute(
            f"SELECT {_DELIVERY}, e.body, s.secret FROM {_JOIN} "  # noqa: S608
            "LEFT JOIN webhook_settings s ON s.company_id = d.company_id "
            "WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND NOT EXISTS ("
            "SELECT 1 FROM webhook_deliveries p WHERE p.call_id = d.call_id AND p.url = d.url "
            "AND p.status = 'pending' AND p.seq < d.seq) "
            f"ORDER BY d.next_attempt_at, d.seq LIMIT ?{skip_locked(conn, 'd')}",
            (now, limit + len(busy)),
        ).fetchall()
        taken = set(busy)
        found = [Due(_delivery(row), row[14], row[15]) for row in rows if row[0] not in taken][:limit]
        if found:
            conn.executemany(
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ? AND status = 'pending'",
                [(lease_until, each.delivery.id) for each in found],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


def next_due_at(conn: sqlite3.Connection) -> float | None:
    row = conn.execute(
        "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'"
    ).fetchone()
    return None if row is None else row[0]


def mark_delivered(conn: sqlite3.Connection, delivery_id: str, status: int, now: float) -> None:
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, last_status = ?, "
        "last_error = NULL, delivered_at = ? WHERE id = ?",
        (status, now, delivery_id),
    )


def mark_failed(
    conn: sqlite3.Connection, delivery_id: str, status: int | None, error: str, next_attempt_at: float | None
) -> None:
    """One more failed attempt; `next_attempt_at` None: no more (the delivery is dead)."""
    conn.execute(
        "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = ?, last_error = ?, "
        # The CAST gives PostgreSQL the parameter's type (a bare NULL parameter has none).
        "status = CASE WHEN CAST(? AS DOUBLE PRECISION) IS NULL THEN 'dead' ELSE 'pending' END, "
        "next_attempt_at = COALESCE(?, next_attempt_at) WHERE id = ?",
        (status, error[:MAX_ERROR_CHARS], next_attempt_at, next_attempt_at, delivery_id),
    )


# --- the API's side -------------------------------------------------------------------------------


def list_deliveries(  # noqa: PLR0917
    conn: sqlite3.Connection,
    company_id: str,
    status: str | None,
    call_id: str | None,
    limit: int,
    offset: int,
) -> tuple[list[Delivery], int]:
    clauses, params = ["d.company_id = ?"], [stored_text(company_id)]
    if status is not None:
        clauses.append("d.status = ?")
        params.append(status)
    if call_id is not None:
        clauses.append("d.call_id = ?")
        params.append(stored_text(call_id))
    where = " AND ".join(clauses)
    conn.execute("BEGIN")
    try:
        total: int = conn.execute(f"SELECT COUNT(*) FROM {_JOIN} WHERE {where}", params).fetchone()[0]  # noqa: S608
        rows = conn.execute(
            f"SELECT {_DELIVERY} FROM {_JOIN} WHERE {where} ORDER BY d.seq DESC LIMIT ? OFFSET ?",  # noqa: S608
            [*params, limit, offset],
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [_delivery(row) for row in rows], total


def get_delivery(conn: sqlite3.Connection, company_id: str, delivery_id: str) -> Delivery | None:
    row = conn.execute(
        f"SELECT {_DELIVERY} FROM {_JOIN} WHERE d.id = ? AND d.company_id = ?",  # noqa: S608
        (stored_text(delivery_id), stored_text(company_id)),
    ).fetchone()
    return None if row is None else _delivery(row)


def retry_now(conn: sqlite3.Connection, delivery_id: str, now: float, window: float) -> None:
    """Due at once, with a fresh retry window (a dead letter gets a day of retries again)."""
    conn.execute(
        "UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = ?, give_up_at = ? WHERE id = ?",
        (now, now + window, delivery_id),
    )


class WebhookStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def override(self, company_id: str) -> Override | None:
        return await self.store.run(get_override, company_id)

    async def put_override(self, company_id: str, override: Override) -> None:
        await self.store.run(put_override, company_id, override)

    async def delete_override(self, company_id: str) -> bool:
        return await self.store.run(delete_override, company_id)

    async def due(
        self, now: float, busy: Sequence[str], limit: int, lease_seconds: float = LEASE_SECONDS
    ) -> list[Due]:
        """Claim the deliveries due now for `lease_seconds` (longer than an attempt can take)."""
        return await self.store.run(due, now, tuple(busy), limit, now + lease_seconds)

    async def next_due_at(self) -> float | None:
        return await self.store.run(next_due_at)

    async def delivered(self, delivery_id: str, status: int, now: float) -> None:
        await self.store.run(mark_delivered, delivery_id, status, now)

    async def failed(
        self, delivery_id: str, status: int | None, error: str, next_attempt_at: float | None
    ) -> None:
        await self.store.run(mark_failed, delivery_id, status, error, next_attempt_at)

    async def deliveries(
        self, company_id: str, status: str | None, call_id: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        return await self.store.run(list_deliveries, company_id, status, call_id, limit, offset)

    async def get(self, company_id: str, delivery_id: str) -> Delivery | None:
        return await self.store.run(get_delivery, company_id, delivery_id)

    async def retry(self, delivery_id: str, now: float, window: float) -> None:
        await self.store.run(retry_now, delivery_id, now, window)
