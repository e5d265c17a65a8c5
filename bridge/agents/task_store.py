"""Tasks in the `tasks` table (migration 8): the scheduler's queue, so a restart loses none.

The functions here run on the store's writer thread (`Store.run`), each one statement or one
transaction, so a state change is atomic (a claim cannot be taken twice); `TaskStore` is their
asyncio face. Every lookup by id also names the company: another company's task is not found.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any, Final, cast

from bridge.agents.tasks import FINISHED, RetryPolicy, RetryReason, Task, TaskStatus
from bridge.store.base import Store
from bridge.store.dialect import claim_begin, skip_locked
from bridge.store.schema import stored_text

_COLUMNS: Final = (
    "task_id, company_id, agent_id, to_number, from_number, starting_message, call_objective, "
    "context_data, priority, scheduled_at, webhook_url, webhook_events, max_attempts, "
    "retry_delay_seconds, retry_on, status, attempts, last_call_id, last_error, created_at, updated_at"
)
_SELECT: Final = f"SELECT {_COLUMNS} FROM tasks"  # noqa: S608  (constant column names)
# What PATCH may change (the API's names are the columns').
EDITABLE: Final = frozenset(
    {
        "agent_id",
        "to_number",
        "from_number",
        "starting_message",
        "call_objective",
        "context_data",
        "priority",
        "scheduled_at",
        "webhook_url",
        "webhook_events",
        "max_attempts",
        "retry_delay_seconds",
        "retry_on",
    }
)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _to_row(task: Task) -> tuple[object, ...]:
    return (
        stored_text(task.id),
        stored_text(task.company_id),
        stored_text(task.agent_id),
        task.to_number,
        task.from_number,
        stored_text(task.starting_message),
        stored_text(task.call_objective),
        _json(dict(task.context_data)),
        task.priority,
        task.scheduled_at,
        task.webhook_url,
        _json(list(task.webhook_events)),
        task.retry.max_attempts,
        task.retry.retry_delay_seconds,
        _json(list(task.retry.retry_on)),
        task.status,
        task.attempts,
        task.last_call_id,
        task.last_error,
        task.created_at,
        task.updated_at,
    )


def _from_row(row: tuple[Any, ...]) -> Task:
    retry_on = cast(list[RetryReason], json.loads(row[14]))
    return Task(
        id=row[0],
        company_id=row[1],
        agent_id=row[2],
        to_number=row[3],
        from_number=row[4],
        starting_message=row[5],
        call_objective=row[6],
        context_data={str(k): str(v) for k, v in json.loads(row[7]).items()},
        priority=row[8],
        scheduled_at=row[9],
        webhook_url=row[10],
        webhook_events=tuple(json.loads(row[11])),
        retry=RetryPolicy(row[12], row[13], tuple(retry_on)),
        status=cast(TaskStatus, row[15]),
        attempts=row[16],
        last_call_id=row[17],
        last_error=row[18],
        created_at=row[19],
        updated_at=row[20],
    )


def _insert(conn: sqlite3.Connection, task: Task) -> None:
    placeholders = ", ".join("?" * 21)
    conn.execute(f"INSERT INTO tasks ({_COLUMNS}) VALUES ({placeholders})", _to_row(task))  # noqa: S608


def _get(conn: sqlite3.Connection, company_id: str, task_id: str) -> Task | None:
    row = conn.execute(
        f"{_SELECT} WHERE task_id = ? AND company_id = ?", (stored_text(task_id), stored_text(company_id))
    ).fetchone()
    return None if row is None else _from_row(row)


def _list(
    conn: sqlite3.Connection, company_id: str, status: str | None, limit: int, offset: int
) -> tuple[list[Task], int]:
    where, params = "company_id = ?", [stored_text(company_id)]
    if status is not None:
        where += " AND status = ?"
        params.append(status)
    conn.execute("BEGIN")  # the page and the total from one snapshot
    try:
        total: int = conn.execute(f"SELECT COUNT(*) FROM tasks WHERE {where}", params).fetchone()[0]  # noqa: S608
        rows = conn.execute(
            f"{_SELECT} WHERE {where} ORDER BY created_at DESC, task_id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    return [_from_row(row) for row in rows], total


def _edit(
    conn: sqlite3.Connection, company_id: str, task_id: str, changes: Mapping[str, object], now: float
) -> bool:
    """Apply `changes` (already encoded) while the task is pending; False when it is not (any more)."""
    names = [name for name in changes if name in EDITABLE]
    assignments = "".join(f"{name} = ?, " for name in names)
    cursor = conn.execute(
        f"UPDATE tasks SET {assignments}updated_at = ? "  # noqa: S608  (names from EDITABLE only)
        "WHERE task_id = ? AND company_id = ? AND status = 'pending'",
        [*(changes[name] for name in names), now, stored_text(task_id), stored_text(company_id)],
    )
    return cursor.rowcount == 1


def _delete(conn: sqlite3.Connection, company_id: str, task_id: str) -> bool:
    cursor = conn.execute(
        "DELETE FROM tasks WHERE task_id = ? AND company_id = ? AND status != 'in_progress'",
        (stored_text(task_id), stored_text(company_id)),
    )
    return cursor.rowcount == 1


def _reset(conn: sqlite3.Connection, company_id: str, task_id: str, now: float) -> bool:
    finished = ", ".join(f"'{status}'" for status in sorted(FINISHED))
    cursor = conn.execute(
        # scheduled_at stays: a past one runs now, a future one (executed early) at its time.
        "UPDATE tasks SET status = 'pending', attempts = 0, last_error = NULL, "  # noqa: S608
        f"updated_at = ? WHERE task_id = ? AND company_id = ? AND status IN ({finished})",
        (now, stored_text(task_id), stored_text(company_id)),
    )
    return cursor.rowcount == 1


def _due(conn: sqlite3.Connection, now: float, limit: int) -> list[Task]:
    rows = conn.execute(
        f"{_SELECT} WHERE status = 'pending' AND scheduled_at <= ? "
        "ORDER BY priority DESC, scheduled_at, created_at LIMIT ?",
        (now, limit),
    ).fetchall()
    return [_from_row(row) for row in rows]


def _claim(conn: sqlite3.Connection, task_id: str, now: float, due: bool) -> Task | None:
    """pending -> in_progress with one more attempt, committed before anything is dialed; None when
    another scheduler (or an edit, a delete) got there first. `due`: only if its time has come (an
    edit may have moved it since it was found due). The claim is the store's: two processes on one
    database never both take a task (on PostgreSQL the row is locked with SKIP LOCKED, so a claimer
    never waits for another; on SQLite BEGIN IMMEDIATE serialises them)."""
    conn.execute(claim_begin(conn))
    try:
        free = conn.execute(
            "SELECT task_id FROM tasks WHERE task_id = ? AND status = 'pending' "  # noqa: S608
            f"AND (? = 0 OR scheduled_at <= ?){skip_locked(conn)}",
            (task_id, int(due), now),
        ).fetchone()
        row = None
        if (
            free is not None
            and conn.execute(
                # The new attempt has no call yet: until it dials, no previous attempt's call stands
                # in for it (the API's last_call_id, a fleet's sweep of tasks no node settles).
                "UPDATE tasks SET status = 'in_progress', attempts = attempts + 1, last_call_id = NULL, "
                "updated_at = ? WHERE task_id = ? AND status = 'pending' AND (? = 0 OR scheduled_at <= ?)",
                (now, task_id, int(due), now),
            ).rowcount
        ):
            row = conn.execute(f"{_SELECT} WHERE task_id = ?", (task_id,)).fetchone()
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return None if row is None else _from_row(row)


def _dialed(conn: sqlite3.Connection, task_id: str, call_id: str, now: float) -> None:
    conn.execute(
        "UPDATE tasks SET last_call_id = ?, updated_at = ? WHERE task_id = ?", (call_id, now, task_id)
    )


def _settle(  # noqa: PLR0917  (called positionally through Store.run)
    conn: sqlite3.Connection,
    task_id: str,
    status: TaskStatus,
    scheduled_at: float,
    last_error: str | None,
    now: float,
) -> None:
    # Only an in-progress task settles: its attempt is the one that just ended.
    conn.execute(
        "UPDATE tasks SET status = ?, scheduled_at = ?, last_error = ?, updated_at = ? "
        "WHERE task_id = ? AND status = 'in_progress'",
        (status, scheduled_at, last_error, now, task_id),
    )


def _in_progress(conn: sqlite3.Connection) -> list[Task]:
    rows = conn.execute(f"{_SELECT} WHERE status = 'in_progress' ORDER BY updated_at").fetchall()
    return [_from_row(row) for row in rows]


def encode_change(name: str, value: object) -> object:
    """A PATCH value as its column holds it."""
    if name == "context_data" and isinstance(value, Mapping):
        return _json(dict(value))
    if name in ("webhook_events", "retry_on") and isinstance(value, list | tuple):
        return _json(list(value))
    if isinstance(value, str):
        return stored_text(value)
    return value


class TaskStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def insert(self, task: Task) -> None:
        await self._store.run(_insert, task)

    async def get(self, company_id: str, task_id: str) -> Task | None:
        return await self._store.run(_get, company_id, task_id)

    async def page(
        self, company_id: str, status: str | None, limit: int, offset: int
    ) -> tuple[list[Task], int]:
        return await self._store.run(_list, company_id, status, limit, offset)

    async def edit(self, company_id: str, task_id: str, changes: Mapping[str, object], now: float) -> bool:
        encoded = {name: encode_change(name, value) for name, value in changes.items()}
        return await self._store.run(_edit, company_id, task_id, encoded, now)

    async def delete(self, company_id: str, task_id: str) -> bool:
        return await self._store.run(_delete, company_id, task_id)

    async def reset(self, company_id: str, task_id: str, now: float) -> bool:
        return await self._store.run(_reset, company_id, task_id, now)

    async def due(self, now: float, limit: int) -> list[Task]:
        return await self._store.run(_due, now, limit)

    async def claim(self, task_id: str, now: float, *, due: bool) -> Task | None:
        return await self._store.run(_claim, task_id, now, due)

    async def dialed(self, task_id: str, call_id: str, now: float) -> None:
        await self._store.run(_dialed, task_id, call_id, now)

    async def settle(
        self, task_id: str, status: TaskStatus, scheduled_at: float, last_error: str | None, now: float
    ) -> None:
        await self._store.run(_settle, task_id, status, scheduled_at, last_error, now)

    async def in_progress(self) -> list[Task]:
        return await self._store.run(_in_progress)
