"""The `calls` table: its migrations, its columns, and how a CallRecord maps onto a row. No I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from bridge.store.records import CallRecord, ModelSegment, TranscriptLine, Usage

# Each step runs in its own transaction and bumps user_version to its 1-based index.
# Append new steps; never edit a released one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE calls (
            call_id TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            direction TEXT NOT NULL,
            from_number TEXT NOT NULL,
            to_number TEXT NOT NULL,
            caller_name TEXT,
            call_objective TEXT,
            status TEXT NOT NULL,
            disconnected_by TEXT,
            error_code TEXT,
            dial_outcome TEXT,
            created_at REAL NOT NULL,
            answered_at REAL,
            ended_at REAL,
            duration_seconds REAL NOT NULL DEFAULT 0,
            transcript TEXT NOT NULL DEFAULT '[]',
            usage TEXT NOT NULL DEFAULT '{}',
            cost_usd REAL,
            provider TEXT NOT NULL DEFAULT '',
            model TEXT NOT NULL DEFAULT '',
            frames_in INTEGER NOT NULL DEFAULT 0,
            frames_out INTEGER NOT NULL DEFAULT 0,
            drops INTEGER NOT NULL DEFAULT 0,
            barge_ins INTEGER NOT NULL DEFAULT 0,
            played_ms_estimated INTEGER NOT NULL DEFAULT 0,
            variables TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX calls_company_created ON calls (company_id, created_at DESC)",
        "CREATE INDEX calls_company_status ON calls (company_id, status)",
    ),
    # 2: when each version of a record was taken, so a call a crash cut short ends at its last save.
    ("ALTER TABLE calls ADD COLUMN updated_at REAL",),
    # 3: telephony: where the caller was transferred, their keys, the answering-machine verdict, the guard.
    (
        "ALTER TABLE calls ADD COLUMN transferred_to TEXT",
        "ALTER TABLE calls ADD COLUMN dtmf TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE calls ADD COLUMN amd_result TEXT",
        "ALTER TABLE calls ADD COLUMN ended_by_guard TEXT",
        "CREATE INDEX calls_company_amd ON calls (company_id, amd_result)",
    ),
    # 4: failover: which model served which part of the call.
    ("ALTER TABLE calls ADD COLUMN model_segments TEXT NOT NULL DEFAULT '[]'",),
    # 5: post-call reports (bridge/store/reports.py): written "pending" before the text model is asked,
    # so a report a crash interrupted is asked again at the next start.
    (
        """
        CREATE TABLE call_reports (
            call_id TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            status TEXT NOT NULL,
            summary TEXT,
            post_call_analysis TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
        "CREATE INDEX call_reports_status ON call_reports (status)",
    ),
    # 6: calls name the agent that ran them and the task that placed them.
    (
        "ALTER TABLE calls ADD COLUMN agent_id TEXT",
        "ALTER TABLE calls ADD COLUMN task_id TEXT",
        "CREATE INDEX calls_company_agent ON calls (company_id, agent_id)",
        "CREATE INDEX calls_company_task ON calls (company_id, task_id)",
    ),
    # 7: agents as data (bridge/agents/store.py): the profile is the JSON as accepted (env: secrets kept
    # unresolved), validated again when loaded.
    (
        """
        CREATE TABLE agents (
            company_id TEXT NOT NULL,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            phones TEXT NOT NULL DEFAULT '[]',
            profile TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            PRIMARY KEY (company_id, id)
        )
        """,
    ),
    # 8: scheduled outbound calls (bridge/agents/task_store.py): the store is the scheduler's queue.
    (
        """
        CREATE TABLE tasks (
            task_id TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            agent_id TEXT NOT NULL DEFAULT '',
            to_number TEXT NOT NULL,
            from_number TEXT NOT NULL,
            starting_message TEXT NOT NULL DEFAULT '',
            call_objective TEXT NOT NULL DEFAULT '',
            context_data TEXT NOT NULL DEFAULT '{}',
            priority INTEGER NOT NULL DEFAULT 0,
            scheduled_at REAL NOT NULL,
            webhook_url TEXT NOT NULL DEFAULT '',
            webhook_events TEXT NOT NULL DEFAULT '[]',
            max_attempts INTEGER NOT NULL,
            retry_delay_seconds REAL NOT NULL,
            retry_on TEXT NOT NULL DEFAULT '[]',
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            last_call_id TEXT,
            last_error TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
        "CREATE INDEX tasks_due ON tasks (status, priority DESC, scheduled_at)",
        "CREATE INDEX tasks_company_created ON tasks (company_id, created_at DESC)",
    ),
    # 9: the webhook outbox (bridge/integrations/webhook_store.py): events written in the transaction
    # of the state change that causes them, one delivery per destination, the API's settings override,
    # and the task destination of each call (a report finished after a restart still reaches it).
    (
        """
        CREATE TABLE webhook_events (
            id TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            type TEXT NOT NULL,
            created_at REAL NOT NULL,
            body TEXT NOT NULL
        )
        """,
        "CREATE UNIQUE INDEX webhook_events_call_type ON webhook_events (call_id, type)",
        """
        CREATE TABLE webhook_deliveries (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            event_id TEXT NOT NULL,
            company_id TEXT NOT NULL,
            call_id TEXT NOT NULL,
            url TEXT NOT NULL,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at REAL NOT NULL,
            give_up_at REAL NOT NULL,
            last_status INTEGER,
            last_error TEXT,
            delivered_at REAL,
            created_at REAL NOT NULL
        )
        """,
        "CREATE INDEX webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at)",
        "CREATE INDEX webhook_deliveries_call ON webhook_deliveries (call_id, url, seq)",
        "CREATE INDEX webhook_deliveries_company ON webhook_deliveries (company_id, seq)",
        """
        CREATE TABLE webhook_settings (
            company_id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            secret TEXT NOT NULL,
            events TEXT NOT NULL,
            key_map TEXT NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE webhook_call_targets (
            call_id TEXT PRIMARY KEY,
            company_id TEXT NOT NULL,
            url TEXT NOT NULL,
            events TEXT NOT NULL
        )
        """,
    ),
    # 10: companies and keys as data (bridge/companies/admin_store.py). A company's settings are one
    # JSON document (the config's shape, so it validates as CompanySettings); keys only as digests.
    (
        """
        CREATE TABLE admin_companies (
            id TEXT PRIMARY KEY,
            settings TEXT NOT NULL,
            limits TEXT NOT NULL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE admin_keys (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            company_id TEXT NOT NULL,
            name TEXT NOT NULL,
            prefix TEXT NOT NULL,
            digest BLOB NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            last_used_at REAL,
            revoked_at REAL
        )
        """,
        "CREATE INDEX admin_keys_owner ON admin_keys (kind, company_id, created_at)",
    ),
    # 11: usage rows a query can sum (bridge/companies/usage.py): one per call and model that served it,
    # written with the call's final record; `day` is the UTC date of the call's start (created_at).
    (
        """
        CREATE TABLE usage_rows (
            call_id TEXT NOT NULL,
            company_id TEXT NOT NULL,
            provider TEXT NOT NULL,
            model TEXT NOT NULL,
            day TEXT NOT NULL,
            started_at REAL NOT NULL,
            input_text INTEGER NOT NULL DEFAULT 0,
            input_audio INTEGER NOT NULL DEFAULT 0,
            cached INTEGER NOT NULL DEFAULT 0,
            output_text INTEGER NOT NULL DEFAULT 0,
            output_audio INTEGER NOT NULL DEFAULT 0,
            model_seconds REAL NOT NULL DEFAULT 0,
            cost_usd REAL,
            PRIMARY KEY (call_id, provider, model)
        )
        """,
        "CREATE INDEX usage_company_started ON usage_rows (company_id, started_at)",
        "CREATE INDEX usage_company_day ON usage_rows (company_id, day)",
        "CREATE INDEX usage_started ON usage_rows (started_at)",
    ),
    # 12: the balance ledger (bridge/companies/balance.py): a company's balance is the SUM of its
    # entries, never a number overwritten. Credits are positive, call costs negative; a call is
    # charged once (the partial unique index), whichever of its saves gets there.
    (
        """
        CREATE TABLE ledger (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            company_id TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('credit', 'call', 'adjustment')),
            amount_usd REAL NOT NULL,
            call_id TEXT,
            note TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL
        )
        """,
        "CREATE UNIQUE INDEX ledger_call ON ledger (call_id) WHERE kind = 'call'",
        "CREATE INDEX ledger_company ON ledger (company_id, seq)",
    ),
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

COLUMNS: Final = (
    "call_id",
    "company_id",
    "direction",
    "from_number",
    "to_number",
    "caller_name",
    "call_objective",
    "status",
    "disconnected_by",
    "error_code",
    "dial_outcome",
    "created_at",
    "answered_at",
    "ended_at",
    "duration_seconds",
    "transcript",
    "usage",
    "cost_usd",
    "provider",
    "model",
    "frames_in",
    "frames_out",
    "drops",
    "barge_ins",
    "played_ms_estimated",
    "variables",
    "updated_at",
    "transferred_to",
    "dtmf",
    "amd_result",
    "ended_by_guard",
    "model_segments",
    "agent_id",
    "task_id",
)
SELECT: Final = f"SELECT {', '.join(COLUMNS)} FROM calls"  # noqa: S608  (constant column names)
# The WHERE keeps a call id owned by one company from being taken over by another's save.
UPSERT: Final = (
    f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "  # noqa: S608
    f"ON CONFLICT(call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in ("call_id", "company_id"))
    + " WHERE calls.company_id = excluded.company_id"
)
# A call left unfinished ends when it was last saved (rows from before schema 2: at the restart).
INTERRUPT: Final = (
    "UPDATE calls SET status = 'failed', error_code = 'bridge_restarted', "
    "ended_at = COALESCE(updated_at, ?) WHERE status NOT IN ('ended', 'failed')"
)
EXISTS: Final = "SELECT 1 FROM calls WHERE call_id = ? LIMIT 1"


def stored_text(value: str) -> str:
    """`value` as SQLite can keep it; look rows up by ids passed through this, as they were saved."""
    # Lone surrogates (e.g. "\ud800" in a webhook's JSON) cannot be encoded for SQLite; a
    # mangled caller name beats a lost call record.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8")
    return value


def _opt_text(value: str | None) -> str | None:
    return None if value is None else stored_text(value)


def _json(value: Any) -> str:
    # ensure_ascii keeps any string (even lone surrogates) encodable and exactly round-tripped.
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def record_to_row(record: CallRecord) -> tuple[object, ...]:
    return (
        stored_text(record.call_id),
        stored_text(record.company_id),
        record.direction,
        stored_text(record.from_number),
        stored_text(record.to_number),
        _opt_text(record.caller_name),
        _opt_text(record.call_objective),
        record.status,
        _opt_text(record.disconnected_by),
        _opt_text(record.error_code),
        _opt_text(record.dial_outcome),
        record.created_at,
        record.answered_at,
        record.ended_at,
        record.duration_seconds,
        _json([line.to_dict() for line in record.transcript]),
        _json(record.usage.to_dict()),
        record.cost_usd,
        stored_text(record.provider),
        stored_text(record.model),
        record.frames_in,
        record.frames_out,
        record.drops,
        record.barge_ins,
        int(record.played_ms_estimated),
        _json(dict(record.variables)),
        record.updated_at,
        _opt_text(record.transferred_to),
        stored_text(record.dtmf),
        record.amd_result,
        record.ended_by_guard,
        _json([segment.to_dict() for segment in record.model_segments]),
        record.agent_id,
        record.task_id,
    )


def row_to_record(row: Sequence[Any]) -> CallRecord:
    values = dict(zip(COLUMNS, row, strict=True))
    variables = json.loads(values["variables"])
    return CallRecord(
        call_id=values["call_id"],
        company_id=values["company_id"],
        direction=values["direction"],
        from_number=values["from_number"],
        to_number=values["to_number"],
        caller_name=values["caller_name"],
        call_objective=values["call_objective"],
        status=values["status"],
        disconnected_by=values["disconnected_by"],
        error_code=values["error_code"],
        dial_outcome=values["dial_outcome"],
        created_at=values["created_at"],
        answered_at=values["answered_at"],
        ended_at=values["ended_at"],
        duration_seconds=values["duration_seconds"],
        transcript=tuple(TranscriptLine.from_dict(line) for line in json.loads(values["transcript"])),
        usage=Usage.from_dict(json.loads(values["usage"])),
        cost_usd=values["cost_usd"],
        provider=values["provider"],
        model=values["model"],
        frames_in=values["frames_in"],
        frames_out=values["frames_out"],
        drops=values["drops"],
        barge_ins=values["barge_ins"],
        played_ms_estimated=bool(values["played_ms_estimated"]),
        variables={str(k): str(v) for k, v in variables.items()},
        updated_at=values["updated_at"],
        transferred_to=values["transferred_to"],
        dtmf=values["dtmf"],
        amd_result=values["amd_result"],
        ended_by_guard=values["ended_by_guard"],
        model_segments=tuple(ModelSegment.from_dict(s) for s in json.loads(values["model_segments"])),
        agent_id=values["agent_id"],
        task_id=values["task_id"],
    )
