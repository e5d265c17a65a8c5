"""Prepaid balances: a ledger per company (migration 12) whose SUM is the balance, never a number
overwritten. Credits (admin top-ups) are positive, call costs negative.

Admission asks `refuse_if_exhausted` on every path that creates a call; it reads a cache kept in
memory (loaded at start, set from the ledger's sum after each write), so refusing a call never waits
on the store. A prepaid company's call is charged by `on_save`, a `CallRecorder` companion: the
`call` entry commits in the transaction of the call's final record save, once per call (a unique
index), and when the charge takes the balance across `low_balance_usd` downward a `balance_low`
webhook event is written in the same transaction.

The functions taking a connection run on the store's writer thread (`Store.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from bridge.directory import Directory
from bridge.errors import PaymentRequired
from bridge.session.session import Session
from bridge.store.base import Store
from bridge.store.records import CallRecord, StoreWrite, iso_utc
from bridge.store.schema import stored_text

__all__ = ["Balances", "EntryKind", "LedgerEntry", "LedgerPage", "iso_utc"]

EntryKind = Literal["credit", "call", "adjustment"]
BALANCE_LOW: Final = "balance_low"
CHARGED_MEMORY: Final = 10_000  # calls already charged, remembered to skip repeat terminal saves
DIGITS: Final = 6  # amounts are kept to a micro-dollar, as call costs are


class EventWriter(Protocol):
    """Writes a company webhook event inside the caller's transaction (the outbox's)."""

    def __call__(  # noqa: PLR0917
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        kind: str,
        company_id: str,
        call_id: str,
        data: Mapping[str, Any],
    ) -> bool: ...


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    company_id: str
    kind: EntryKind
    amount_usd: float
    call_id: str | None
    note: str
    created_at: float


@dataclass(frozen=True, slots=True)
class LedgerPage:
    balance_usd: float
    entries: list[LedgerEntry]
    total: int


_COLUMNS: Final = "id, company_id, kind, amount_usd, call_id, note, created_at"


def _money(value: float) -> float:
    return round(value, DIGITS) + 0.0  # + 0.0: never a "-0.0" balance


def _sum(conn: sqlite3.Connection, company_id: str) -> float:
    row = conn.execute(
        "SELECT COALESCE(SUM(amount_usd), 0) FROM ledger WHERE company_id = ?", (stored_text(company_id),)
    ).fetchone()
    return _money(float(row[0]))


def _insert(  # noqa: PLR0917
    conn: sqlite3.Connection,
    company_id: str,
    kind: EntryKind,
    amount: float,
    call_id: str | None,
    note: str,
    now: float,
) -> LedgerEntry | None:
    """None when the call was already charged."""
    entry = LedgerEntry(f"led_{secrets.token_hex(12)}", company_id, kind, _money(amount), call_id, note, now)
    cursor = conn.execute(
        f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",  # noqa: S608
        (
            entry.id,
            stored_text(company_id),
            kind,
            entry.amount_usd,
            None if call_id is None else stored_text(call_id),
            stored_text(note),
            now,
        ),
    )
    return entry if cursor.rowcount == 1 else None


def _totals(conn: sqlite3.Connection) -> dict[str, float]:
    rows = conn.execute("SELECT company_id, SUM(amount_usd) FROM ledger GROUP BY company_id").fetchall()
    return {company_id: _money(float(total)) for company_id, total in rows}


def _credit(conn: sqlite3.Connection, company_id: str, amount: float, note: str) -> tuple[LedgerEntry, float]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        entry = _insert(conn, company_id, "credit", amount, None, note, time.time())
        balance = _sum(conn, company_id)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    assert entry is not None
    return entry, balance


def _page(conn: sqlite3.Connection, company_id: str, limit: int, offset: int) -> LedgerPage:
    key = stored_text(company_id)
    conn.execute("BEGIN")  # the balance, the count and the page from one snapshot
    try:
        balance = _sum(conn, company_id)
        total = int(conn.execute("SELECT COUNT(*) FROM ledger WHERE company_id = ?", (key,)).fetchone()[0])
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM ledger WHERE company_id = ? ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608
            (key, limit, offset),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    entries = [LedgerEntry(r[0], r[1], r[2], float(r[3]), r[4], r[5], float(r[6])) for r in rows]
    return LedgerPage(balance, entries, total)


class Balances:
    """The ledger's asyncio face, the cached balances, and the admission check."""

    def __init__(
        self,
        store: Store,
        directory: Callable[[], Directory],
        *,
        write_event: EventWriter | None = None,
    ) -> None:
        self.store = store
        self.directory = directory
        self.write_event = write_event  # balance_low through the webhook outbox; None: not announced
        self._cache: dict[str, float] = {}
        # Called after a top-up here (the fleet tells the other nodes to `load` again).
        self.changed: Callable[[], None] = lambda: None
        self._charged: OrderedDict[str, None] = OrderedDict()

    async def load(self) -> None:
        """Every company's balance, before the first call is admitted."""
        self._cache = await self.store.run(_totals)

    def balance(self, company_id: str) -> float:
        return self._cache.get(company_id, 0.0)

    def _set(self, company_id: str, balance: float) -> None:
        self._cache[company_id] = balance

    # -- admission ---------------------------------------------------------------------------

    def refuse_if_exhausted(self, company_id: str) -> None:
        """402 insufficient_balance for a prepaid company at or below zero (from memory: no I/O)."""
        company = self.directory().companies.get(company_id)
        if company is None or not company.settings.limits.prepaid:
            return
        balance = self.balance(company_id)
        if balance <= 0:
            raise PaymentRequired(
                f"the balance of {company_id} is exhausted ({balance:.2f} USD); "
                "a top-up is needed before new calls"
            )

    # -- the charge, with the call's final save ----------------------------------------------------

    def on_save(self, _session: Session, record: CallRecord) -> StoreWrite | None:
        """A `CallRecorder` companion: the call's cost as a `call` entry with its final save."""
        if not record.is_terminal or record.call_id in self._charged:
            return None
        self._charged[record.call_id] = None
        if len(self._charged) > CHARGED_MEMORY:
            self._charged.popitem(last=False)
        company = self.directory().companies.get(record.company_id)
        if company is None or not company.settings.limits.prepaid or not record.cost_usd:
            return None  # only prepaid companies pay as they go; a call without a price costs nothing
        limits = company.settings.limits
        loop = asyncio.get_running_loop()
        company_id, call_id, cost = record.company_id, record.call_id, record.cost_usd
        threshold = limits.low_balance_usd

        def write(conn: sqlite3.Connection) -> None:
            before = _sum(conn, company_id)
            if _insert(conn, company_id, "call", -cost, call_id, "", time.time()) is None:
                return  # already charged (a restart's repeat save)
            after = _money(before - cost)
            if before > threshold >= after and self.write_event is not None:
                data = {"balance_usd": after, "threshold_usd": threshold, "currency": "USD"}
                self.write_event(conn, loop, BALANCE_LOW, company_id, call_id, data)
            # The loop may be closed already (the last saves at shutdown): the next start loads it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._set, company_id, after)

        return write

    # -- the API's operations -----------------------------------------------------------------

    async def credit(self, company_id: str, amount_usd: float, note: str) -> tuple[LedgerEntry, float]:
        """A top-up: a credit entry and the new balance."""
        entry, balance = await self.store.run(_credit, company_id, amount_usd, note)
        self._set(company_id, balance)
        self.changed()
        return entry, balance

    async def page(self, company_id: str, limit: int, offset: int) -> LedgerPage:
        """The balance and a page of the ledger, newest first."""
        page = await self.store.run(_page, company_id, limit, offset)
        self._set(company_id, page.balance_usd)
        return page
