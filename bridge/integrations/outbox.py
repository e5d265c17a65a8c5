"""The webhook outbox: `call_started`, `call_completed` and `call_failed` written in the SQLite
transaction of the state change that causes them, so a crash after the commit still delivers them
and a crash before it leaves neither the state nor the event.

`CallRecorder` asks `on_save(session, record)` at every save; a save that crosses a transition
(the call became active, ended or failed) gets a `StoreWrite` that runs inside the record's
transaction on the store's writer thread: it builds the event body there (off the event loop), picks
the destinations (the company's webhooks, edited through the API or from the config, and the call's
task URL) and inserts one event with one delivery per destination. When the call's agent has an
`analysis_prompt`, `call_completed` waits for the report and is written with it (`report_finished`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bridge.directory import Directory
from bridge.integrations import keymap
from bridge.integrations.webhook_store import (
    get_call_target,
    get_override,
    insert_delivery,
    insert_event,
    set_call_target,
)
from bridge.session.session import Session
from bridge.store.records import CallRecord, StoreWrite, iso_utc
from bridge.store.reports import StoredReport
from bridge.store.reports import _get as get_report
from bridge.store.schema import SELECT, row_to_record, stored_text

STARTED: Final = "call_started"
COMPLETED: Final = "call_completed"
FAILED: Final = "call_failed"
CALL_EVENTS: Final = (STARTED, COMPLETED, FAILED)
FINISHED_MEMORY: Final = 10_000  # calls whose last event is written, remembered to skip repeat saves


@dataclass(frozen=True, slots=True)
class Destinations:
    """Where a company's events go, as the config says (the API's override is read in the transaction)."""

    url: str
    events: tuple[str, ...]
    key_map: Mapping[str, str]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def recording_path(call_id: str) -> str:
    """The API URL of a call's recording (relative to the bridge's API base; needs the API key)."""
    return f"/api/calls/{call_id}/recording"


def event_data(record: CallRecord, report: StoredReport | None, has_recording: bool) -> dict[str, Any]:
    """The call result in the names the platforms use (and ours beside them)."""
    analysis = report.post_call_analysis if report is not None else None
    return {
        "session_id": record.call_id,
        "call_id": record.call_id,
        "caller_id": record.from_number,
        "caller_name": record.caller_name,
        "call_duration_seconds": record.duration_seconds,
        "duration_seconds": record.duration_seconds,
        "disconnected_by": record.disconnected_by,
        "transcript": record.transcript_api(),
        "recording_url": recording_path(record.call_id) if has_recording else None,
        "post_call_analysis": dict(analysis) if analysis is not None else None,
        "summary": report.summary if report is not None else None,
        "report_status": report.status if report is not None else None,
        "status": record.status,
        "error_code": record.error_code,
        "direction": record.direction,
        "from": record.from_number,
        "to": record.to_number,
        "agent_id": record.agent_id,
        "task_id": record.task_id,
        "call_objective": record.call_objective,
        "amd_result": record.amd_result,
        "transferred_to": record.transferred_to,
        "created_at": iso_utc(record.created_at),
        "answered_at": iso_utc(record.answered_at),
        "ended_at": iso_utc(record.ended_at),
        "variables": dict(record.variables),
    }


def event_body(  # noqa: PLR0917
    event_id: str, kind: str, now: float, record: CallRecord, data: dict[str, Any], key_map: Mapping[str, str]
) -> str:
    payload: dict[str, Any] = {
        "id": event_id,
        "type": kind,
        "created_at": iso_utc(now),
        "call_id": record.call_id,
        "data": data,
    }
    if kind != STARTED and key_map:
        payload["mapped"] = keymap.apply(key_map, data)  # the post-call push's CRM fields
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class Outbox:
    def __init__(
        self,
        directory: Callable[[], Directory],
        *,
        awaits_report: Callable[[Session], bool] = lambda _: False,
        has_recording: Callable[[str, str], bool],
        retry_for_seconds: float,
        written: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory = directory
        self.awaits_report = awaits_report  # whether call_completed waits for the post-call report
        self.has_recording = has_recording  # (company_id, call_id): file I/O, run on the writer thread
        self.retry_for_seconds = retry_for_seconds
        self._written = written  # wakes the sender (called on the event loop after a write)
        self._started: set[str] = set()
        self._finished: OrderedDict[str, None] = OrderedDict()

    def _company(self, company_id: str) -> Destinations:
        company = self.directory().companies.get(company_id)
        if company is None:
            return Destinations("", (), {})
        hooks = company.settings.webhooks
        return Destinations(hooks.url, tuple(hooks.events), dict(hooks.key_map))

    def on_save(self, session: Session, record: CallRecord) -> StoreWrite | None:
        """What must commit with this save of the call's record (None: it crosses no transition)."""
        call_id = record.call_id
        if call_id in self._finished:
            return None
        kinds: list[str] = []
        if (
            call_id not in self._started
            and record.answered_at is not None
            and record.status in ("active", "ended", "failed")
        ):
            kinds.append(STARTED)
            self._started.add(call_id)
        if record.status == "failed":
            kinds.append(FAILED)
        elif record.status == "ended" and not self.awaits_report(session):
            kinds.append(COMPLETED)
        if record.is_terminal:
            self._started.discard(call_id)
            self._finished[call_id] = None
            if len(self._finished) > FINISHED_MEMORY:
                self._finished.popitem(last=False)
        if not kinds and not (record.is_terminal and session.info.webhook_url):
            return None
        target = (session.info.webhook_url, tuple(session.info.webhook_events))
        return self._writer(kinds, record.company_id, call_id, record, target)

    def report_finished(self, call_id: str, company_id: str) -> StoreWrite:
        """Written with the report's final row: the `call_completed` that waited for it."""
        return self._writer([COMPLETED], company_id, call_id, None, None)

    def write_company_event(  # noqa: PLR0917  (a StoreWrite's context, on the writer thread)
        self,
        conn: sqlite3.Connection,
        loop: asyncio.AbstractEventLoop,
        kind: str,
        company_id: str,
        call_id: str,
        data: Mapping[str, Any],
    ) -> bool:
        """An event about the company rather than the call's state (`balance_low`), in the caller's
        transaction: to the company's webhook when it subscribes to `kind` (once per call and kind)."""
        company = self._company(company_id)
        override = get_override(conn, company_id)
        if override is not None:
            company = Destinations(override.url, override.events, override.key_map)
        if not company.url or kind not in company.events:
            return False
        now = time.time()
        event_id = new_id("evt")
        payload = {"id": event_id, "type": kind, "created_at": iso_utc(now), "call_id": call_id, "data": data}
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        if not insert_event(conn, event_id, company_id, call_id, kind, now, body):
            return False
        insert_delivery(
            conn, new_id("dlv"), event_id, company_id, call_id, company.url, now, now + self.retry_for_seconds
        )
        with contextlib.suppress(RuntimeError):  # a closed loop: the next start sends it
            loop.call_soon_threadsafe(self._written)
        return True

    def _recorded(self, company_id: str, call_id: str) -> bool:
        try:
            return self.has_recording(company_id, call_id)
        except (ValueError, OSError):  # an id no recording could have, an unreadable directory
            return False

    def write_interrupted(
        self, conn: sqlite3.Connection, since: float, error_code: str = "bridge_restarted"
    ) -> int:
        """On the store's thread, after `mark_interrupted` at start (or `store.lost.mark_lost` for a lost
        fleet node, error_code node_lost): `call_failed` for the calls a killed process left unfinished
        (ended since `since`), which no save of theirs could announce. Once per call, whoever runs it."""
        rows = conn.execute(
            "SELECT call_id, company_id FROM calls WHERE status = 'failed' "
            "AND error_code = ? AND ended_at >= ? "
            "AND call_id NOT IN (SELECT call_id FROM webhook_events WHERE type = ?)",
            (error_code, since, FAILED),
        ).fetchall()
        written = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for call_id, company_id in rows:
                record_row = conn.execute(f"{SELECT} WHERE call_id = ?", (call_id,)).fetchone()
                record = row_to_record(record_row)
                written += self._write(
                    conn, [FAILED], self._company(company_id), company_id, call_id, record, None
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return written

    def _writer(
        self,
        kinds: Sequence[str],
        company_id: str,
        call_id: str,
        record: CallRecord | None,
        target: tuple[str, tuple[str, ...]] | None,
    ) -> StoreWrite:
        company = self._company(company_id)
        loop = asyncio.get_running_loop()

        def write(conn: sqlite3.Connection) -> None:
            if self._write(conn, kinds, company, company_id, call_id, record, target):
                # A loop already closed (the last saves at shutdown) has no sender to wake: the
                # events stay pending for the next start, and must not be rolled back for it.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._written)

        return write

    def _write(  # noqa: PLR0917  (one transaction's worth of context)
        self,
        conn: sqlite3.Connection,
        kinds: Sequence[str],
        company: Destinations,
        company_id: str,
        call_id: str,
        record: CallRecord | None,
        target: tuple[str, tuple[str, ...]] | None,
    ) -> bool:
        if target is not None and target[0]:
            set_call_target(conn, call_id, company_id, *target)  # for a report finished after a restart
        else:
            target = get_call_target(conn, call_id)
        if record is None:
            row = conn.execute(f"{SELECT} WHERE call_id = ?", (stored_text(call_id),)).fetchone()
            if row is None:
                return False
            record = row_to_record(row)
            if record.status != "ended":
                return False  # a failed call's event went out when it failed
        override = get_override(conn, company_id)
        if override is not None:
            company = Destinations(override.url, override.events, override.key_map)
        wrote = False
        for kind in kinds:
            urls = []
            if company.url and kind in company.events:
                urls.append(company.url)
            if (
                target is not None
                and target[0]
                and (not target[1] or kind in target[1])
                and target[0] not in urls
            ):
                urls.append(target[0])
            if not urls:
                continue
            report = get_report(conn, company_id, call_id) if kind == COMPLETED else None
            data = event_data(record, report, self._recorded(company_id, call_id))
            now = time.time()
            event_id = new_id("evt")
            if not insert_event(
                conn,
                event_id,
                company_id,
                call_id,
                kind,
                now,
                event_body(event_id, kind, now, record, data, company.key_map),
            ):
                continue  # already written by an earlier save
            for url in urls:
                insert_delivery(
                    conn, new_id("dlv"), event_id, company_id, call_id, url, now, now + self.retry_for_seconds
                )
            wrote = True
        return wrote
