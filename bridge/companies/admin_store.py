"""The admin API's tables (migration 10): companies and keys as data. The functions run on the store's
writer thread (`Store.run`); `AdminService` (admin.py) is their asyncio face.

A key is stored only as its SHA-256 digest plus an 8-character prefix shown in lists: the key itself is
in the create response once and nowhere else.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bridge.store.dialect import greatest
from bridge.store.schema import stored_text

KeyKind = Literal["company", "connector"]


@dataclass(frozen=True, slots=True)
class StoredCompany:
    id: str
    settings: Mapping[str, Any]  # CompanySettings' JSON form, without api_keys
    limits: Mapping[str, int]
    disabled: bool
    created_at: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    kind: KeyKind
    company_id: str  # "" for a connector key
    name: str
    prefix: str
    digest: bytes
    created_at: float
    last_used_at: float | None
    revoked_at: float | None


def load_companies(conn: sqlite3.Connection) -> list[StoredCompany]:
    rows = conn.execute(
        "SELECT id, settings, limits, disabled, created_at, updated_at FROM admin_companies ORDER BY id"
    ).fetchall()
    return [StoredCompany(r[0], json.loads(r[1]), json.loads(r[2]), bool(r[3]), r[4], r[5]) for r in rows]


def load_keys(conn: sqlite3.Connection) -> list[StoredKey]:
    rows = conn.execute(
        "SELECT id, kind, company_id, name, prefix, digest, created_at, last_used_at, revoked_at "
        "FROM admin_keys WHERE revoked_at IS NULL ORDER BY created_at, id"
    ).fetchall()
    return [StoredKey(r[0], r[1], r[2], r[3], r[4], bytes(r[5]), r[6], r[7], r[8]) for r in rows]


def put_company(conn: sqlite3.Connection, company: StoredCompany) -> None:
    conn.execute(
        "INSERT INTO admin_companies (id, settings, limits, disabled, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET settings = excluded.settings, "
        "limits = excluded.limits, disabled = excluded.disabled, updated_at = excluded.updated_at",
        (
            stored_text(company.id),
            json.dumps(dict(company.settings)),
            json.dumps(dict(company.limits)),
            int(company.disabled),
            company.created_at,
            company.updated_at,
        ),
    )


def insert_key(conn: sqlite3.Connection, key: StoredKey, revoke: str | None, now: float) -> None:
    """Add a key; with `revoke`, revoke that one in the same transaction (a rotation is all or nothing)."""
    with conn:
        conn.execute("BEGIN")
        if revoke is not None:
            conn.execute(
                "UPDATE admin_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, revoke)
            )
        conn.execute(
            "INSERT INTO admin_keys (id, kind, company_id, name, prefix, digest, created_at, last_used_at, "
            "revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
            (
                key.id,
                key.kind,
                stored_text(key.company_id),
                stored_text(key.name),
                key.prefix,
                key.digest,
                key.created_at,
            ),
        )


def revoke_key(conn: sqlite3.Connection, key_id: str, now: float) -> None:
    conn.execute("UPDATE admin_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now, key_id))


def record_last_used(conn: sqlite3.Connection, used: Iterable[tuple[str, float]]) -> None:
    """One batched write for every key used since the last flush (never one write per request)."""
    with conn:
        conn.execute("BEGIN")
        conn.executemany(
            f"UPDATE admin_keys SET last_used_at = {greatest(conn)}(COALESCE(last_used_at, 0), ?) "  # noqa: S608
            "WHERE id = ?",
            [(at, key_id) for key_id, at in used],
        )
