"""The call-record store: records as values, URLs, schema migrations and the SQLite store on real files."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import re
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.session.state import CallState, EndedBy
from bridge.store import (
    SCHEMA_VERSION,
    STATUSES,
    CallQuery,
    CallRecord,
    ModelSegment,
    SchemaTooNew,
    Store,
    StoreClosed,
    StoreError,
    TranscriptLine,
    Usage,
    iso_utc,
    open_store,
    redact_url,
    sqlite_path,
)
from bridge.store import sqlite as store_sqlite
from bridge.store.dialect import NUL_STAND_IN
from bridge.store.schema import MIGRATIONS, record_to_row

T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def make_record(call_id: str = "call-1", company_id: str = "acme", **fields: Any) -> CallRecord:
    base: dict[str, Any] = {
        "direction": "inbound",
        "from_number": "+34600000001",
        "to_number": "+34987654321",
        "created_at": T0,
    }
    return CallRecord(call_id=call_id, company_id=company_id, **(base | fields))


FULL = make_record(
    call_id="full-1",
    direction="outbound",
    caller_name='María "Mari" O\'Brien 🚀',
    call_objective="Confirm the appointment; say 'thanks'",
    status="ended",
    disconnected_by="bot",
    error_code="model_timeout",
    dial_outcome="answered",
    answered_at=T0 + 4.5,
    ended_at=T0 + 64.25,
    updated_at=T0 + 64.3,
    duration_seconds=59.75,
    transcript=(
        TranscriptLine(role="bot", text="Hola, ¿en qué puedo ayudarle?", at=T0 + 5.0),
        TranscriptLine(role="caller", text='He said "no" \\ then 你好', at=T0 + 9.125),
        TranscriptLine(role="bot", text="Of course, let me", at=T0 + 12.0, truncated=True),
    ),
    usage=Usage(
        input_text_tokens=11,
        input_audio_tokens=1200,
        input_cached_tokens=64,
        output_text_tokens=30,
        output_audio_tokens=900,
        transcription_input_tokens=400,
        transcription_output_tokens=25,
        transcription_seconds=12.5,
        responses=3,
    ),
    cost_usd=0.0425,
    provider="openai",
    model="gpt-realtime",
    frames_in=2987,
    frames_out=2950,
    drops=2,
    barge_ins=1,
    played_ms_estimated=True,
    variables={"customer": "Ana", "order": "A-17", "quote": 'it\'s "fine"'},
    transferred_to="+34911222333",
    dtmf="12#",
    amd_result="human",
    ended_by_guard="max_call_seconds",
    agent_id="sales-es",
    task_id="3f2b9c1e-task",
    model_segments=(
        ModelSegment("openai", "gpt-realtime", T0 + 4.5, ended_at=T0 + 30.0, ended_because="timeout"),
        ModelSegment("gemini", "gemini-live", T0 + 30.5),
    ),
)
# What schemas 3 and 4 added, as a row from before them reads back.
TELEPHONY_DEFAULTS: dict[str, Any] = {
    "transferred_to": None,
    "dtmf": "",
    "amd_result": None,
    "ended_by_guard": None,
    "model_segments": (),
    "agent_id": None,
    "task_id": None,
}


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/calls.db"  # tmp_path is absolute: four slashes in all


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """The store on SQLite and on PostgreSQL: the same assertions hold on both."""
    opened = await open_store(store_url)
    yield opened
    await opened.close()


# --- records ------------------------------------------------------------------------------------


def test_to_api_shows_iso_times_and_counts_lines() -> None:
    shown = FULL.to_api()
    assert shown["from"] == "+34600000001"
    assert shown["to"] == "+34987654321"
    assert shown["created_at"] == "2023-11-14T22:13:20.000Z"
    assert shown["answered_at"] == "2023-11-14T22:13:24.500Z"
    assert shown["ended_at"] == "2023-11-14T22:14:24.250Z"
    assert shown["transcript_lines"] == 3
    assert shown["usage"]["output_audio_tokens"] == 900
    assert "variables" not in shown
    assert "transcript" not in shown
    assert set(shown) == {
        *("call_id", "company_id", "direction", "from", "to", "caller_name", "call_objective", "status"),
        *("disconnected_by", "error_code", "dial_outcome", "created_at", "answered_at", "ended_at"),
        *("duration_seconds", "usage", "cost_usd", "provider", "model", "frames_in", "frames_out"),
        *("drops", "barge_ins", "played_ms_estimated", "transcript_lines"),
        *("transferred_to", "dtmf", "amd_result", "ended_by_guard", "agent_id", "task_id", "models"),
    }
    assert (shown["transferred_to"], shown["dtmf"]) == ("+34911222333", "12#")
    assert (shown["amd_result"], shown["ended_by_guard"]) == ("human", "max_call_seconds")
    assert json.loads(json.dumps(shown)) == shown


def test_to_api_shows_missing_times_as_null() -> None:
    shown = make_record().to_api()
    assert shown["answered_at"] is None
    assert shown["ended_at"] is None
    assert shown["cost_usd"] is None


def test_transcript_api() -> None:
    assert FULL.transcript_api()[2] == {
        "role": "bot",
        "text": "Of course, let me",
        "at": "2023-11-14T22:13:32.000Z",
        "truncated": True,
    }
    assert iso_utc(None) is None


def test_usage_adds_field_by_field() -> None:
    one = Usage(input_audio_tokens=10, transcription_seconds=1.5, responses=1)
    two = Usage(input_audio_tokens=5, output_audio_tokens=7, transcription_seconds=0.25, responses=1)
    assert one + two == Usage(
        input_audio_tokens=15, output_audio_tokens=7, transcription_seconds=1.75, responses=2
    )
    assert one.add(two) == one + two
    assert Usage.from_dict(FULL.usage.to_dict()) == FULL.usage


def test_usage_from_dict_tolerates_missing_and_unknown_keys() -> None:
    assert Usage.from_dict({"responses": 2, "from_the_future": 9}) == Usage(responses=2)


def test_records_take_session_enums_as_plain_strings() -> None:
    record = make_record(status=CallState.ENDED, disconnected_by=EndedBy.CALLER)
    assert type(record.status) is str
    assert record.status == "ended"
    assert type(record.disconnected_by) is str
    assert record.is_terminal
    assert CallQuery(company_id="acme", status=CallState.ACTIVE).status == "active"


def test_with_line_appends_without_touching_the_original() -> None:
    line = TranscriptLine(role="caller", text="hi", at=T0)
    record = make_record()
    assert record.with_line(line).transcript == (line,)
    assert record.transcript == ()


@pytest.mark.parametrize(
    "fields",
    [
        {"direction": "sideways"},
        {"status": "ringing"},
        {"call_id": ""},
        {"cost_usd": float("nan")},
        {"duration_seconds": float("inf")},
        {"created_at": -1.0},
        {"ended_at": 1e20},
        {"amd_result": "maybe"},
        {"ended_by_guard": "boredom"},
    ],
)
def test_records_refuse_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_record(**fields)


def test_transcript_lines_refuse_bad_roles() -> None:
    with pytest.raises(ValueError, match="role"):
        TranscriptLine(role="system", text="x", at=T0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [
        {"limit": -1},
        {"limit": 1001},
        {"offset": -1},
        {"status": "nope"},
        {"direction": "up"},
        {"amd_result": "x"},
    ],
)
def test_queries_refuse_bad_values(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        CallQuery(company_id="acme", **fields)


# --- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///var/bridge.db", "var/bridge.db"),
        ("sqlite:///calls.db", "calls.db"),
        ("sqlite:////var/lib/bridge/calls.db", "/var/lib/bridge/calls.db"),
        ("SQLite:////tmp/x.db", "/tmp/x.db"),
        ("sqlite://", ":memory:"),
        ("sqlite://:memory:", ":memory:"),
        ("sqlite:///:memory:", ":memory:"),
    ],
)
def test_sqlite_urls(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("postgres://bridge:hunter2@db.internal:5432/calls", "'postgres'"),
        ("mysql://root:p@ss/w?rd#x@db/calls?password=hunter2", "'mysql'"),
        ("sqlite://host/calls.db", "no host"),
        ("sqlite:///", "names no database"),
        ("sqlite:///dir/", "names no database"),
        ("sqlite:///calls.db?mode=ro", "query"),
        ("calls.db", "not a URL"),
    ],
)
def test_bad_urls_are_refused_without_echoing_secrets(url: str, named: str) -> None:
    with pytest.raises(ValueError, match=named) as caught:
        sqlite_path(url)
    message = str(caught.value)
    for secret in ("hunter2", "bridge:", "root", "rd#x", "ss/w"):
        assert secret not in message


def test_redact_url_keeps_host_and_path() -> None:
    assert redact_url("postgres://u:p@db:5432/calls?sslmode=require") == "postgres://***@db:5432/calls"
    assert redact_url("sqlite:////var/x.db") == "sqlite:////var/x.db"


async def test_open_store_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match="mysql") as refused:
        await open_store("mysql://u:secret@db/calls")
    assert "secret" not in str(refused.value)


async def test_a_missing_postgresql_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what `import psycopg` meets when not installed
    with pytest.raises(StoreError, match=re.escape("pip install 'bridge[fleet]'")):
        await open_store("postgresql://u:secret@127.0.0.1/calls")


async def test_an_unreachable_postgresql_is_a_store_error_without_the_password() -> None:
    pytest.importorskip("psycopg")
    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match="cannot connect") as refused:
        await open_store(f"postgresql://u:secret@127.0.0.1:{port}/calls")
    assert "secret" not in str(refused.value)
    assert refused.value.__suppress_context__  # the driver's own message is never chained in


async def test_relative_urls_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with await open_store("sqlite:///data/nested/calls.db") as opened:
        await opened.save(make_record())
    assert (tmp_path / "data" / "nested" / "calls.db").is_file()


async def test_in_memory_store_works() -> None:
    async with await open_store("sqlite://:memory:") as opened:
        await opened.save(FULL)
        assert await opened.get("acme", "full-1") == FULL


# --- save and get -------------------------------------------------------------------------------


async def test_every_field_round_trips(store: Store) -> None:
    await store.save(FULL)
    assert await store.get("acme", "full-1") == FULL


async def test_none_values_round_trip(store: Store) -> None:
    minimal = make_record()
    await store.save(minimal)
    got = await store.get("acme", "call-1")
    assert got == minimal
    assert got is not None
    assert got.caller_name is None
    assert got.cost_usd is None
    assert got.answered_at is None
    assert got.variables == {}
    assert got.transcript == ()


async def test_save_updates_an_existing_call(store: Store) -> None:
    await store.save(make_record(status="pending"))
    active = make_record(status="active", answered_at=T0 + 2, transcript=FULL.transcript)
    await store.save(active)
    assert await store.get("acme", "call-1") == active
    _, total = await store.list(CallQuery(company_id="acme"))
    assert total == 1


async def test_companies_never_see_each_others_calls(store: Store) -> None:
    await store.save(make_record(call_id="a-1", company_id="acme"))
    assert await store.get("globex", "a-1") is None
    assert await store.get("acme", "missing") is None
    assert await store.list(CallQuery(company_id="globex")) == ([], 0)


async def test_a_call_id_cannot_move_to_another_company(store: Store) -> None:
    original = make_record(call_id="shared", company_id="acme")
    await store.save(original)
    with pytest.raises(StoreError, match="another company"):
        await store.save(make_record(call_id="shared", company_id="globex", status="active"))
    assert await store.get("acme", "shared") == original


async def test_call_exists_for_any_company_and_any_state(store: Store) -> None:
    assert not await store.call_exists("a-1")
    await store.save(make_record(call_id="a-1", company_id="acme", status="pending"))
    await store.save(make_record(call_id="g-1", company_id="globex", status="ended"))
    await store.save(make_record(call_id="g-2", company_id="globex", status="failed"))
    for call_id in ("a-1", "g-1", "g-2"):
        assert await store.call_exists(call_id)
    assert not await store.call_exists("A-1")  # ids are exact
    assert not await store.call_exists("missing")
    assert not await store.call_exists("a-1\ud800")  # unencodable text is a lookup, not a crash


async def test_lone_surrogates_do_not_lose_the_record(store: Store) -> None:
    await store.save(
        make_record(
            caller_name="Ana \ud800", transcript=(TranscriptLine(role="caller", text="\udfff", at=T0),)
        )
    )
    got = await store.get("acme", "call-1")
    assert got is not None
    assert got.caller_name == "Ana ?"
    assert got.transcript[0].text == "\udfff"  # JSON escapes keep transcripts exact


# --- list ---------------------------------------------------------------------------------------


async def _seed(store: Store) -> None:
    rows = [
        ("c1", "inbound", "ended", T0 + 1, None, "support", None),
        ("c2", "outbound", "failed", T0 + 2, "machine", "sales", "t1"),
        ("c3", "inbound", "active", T0 + 3, None, None, None),
        ("c4", "outbound", "ended", T0 + 4, "human", "sales", "t1"),
        ("c5", "inbound", "ended", T0 + 5, None, "support", None),
    ]
    for call_id, direction, status, created_at, amd, agent, task in rows:
        record = make_record(
            call_id=call_id, direction=direction, status=status, created_at=created_at, amd_result=amd
        )
        await store.save(dataclasses.replace(record, agent_id=agent, task_id=task))
    globex = make_record(call_id="g1", company_id="globex", status="ended", created_at=T0 + 3.5)
    await store.save(dataclasses.replace(globex, agent_id="sales", task_id="t1"))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({}, ["c5", "c4", "c3", "c2", "c1"]),
        ({"status": "ended"}, ["c5", "c4", "c1"]),
        ({"direction": "outbound"}, ["c4", "c2"]),
        ({"status": "ended", "direction": "inbound"}, ["c5", "c1"]),
        ({"since": T0 + 3}, ["c5", "c4", "c3"]),
        ({"until": T0 + 3}, ["c2", "c1"]),
        ({"since": T0 + 2, "until": T0 + 5}, ["c4", "c3", "c2"]),
        ({"status": "pending"}, []),
        ({"amd_result": "machine"}, ["c2"]),
        ({"amd_result": "human", "status": "ended"}, ["c4"]),
        ({"amd_result": "unknown"}, []),
        ({"agent_id": "sales"}, ["c4", "c2"]),
        ({"agent_id": "support", "direction": "inbound"}, ["c5", "c1"]),
        ({"task_id": "t1", "status": "ended"}, ["c4"]),
        ({"task_id": "t2"}, []),
    ],
)
async def test_list_filters_newest_first(store: Store, filters: dict[str, Any], expected: list[str]) -> None:
    await _seed(store)
    records, total = await store.list(CallQuery(company_id="acme", **filters))
    assert [r.call_id for r in records] == expected
    assert total == len(expected)


async def test_list_pages_with_a_total_of_all_matches(store: Store) -> None:
    await _seed(store)
    pages = [await store.list(CallQuery(company_id="acme", limit=2, offset=o)) for o in (0, 2, 4, 6)]
    assert [[r.call_id for r in page] for page, _ in pages] == [["c5", "c4"], ["c3", "c2"], ["c1"], []]
    assert {total for _, total in pages} == {5}
    filtered = await store.list(CallQuery(company_id="acme", status="ended", limit=1, offset=1))
    assert ([r.call_id for r in filtered[0]], filtered[1]) == (["c4"], 3)
    assert await store.list(CallQuery(company_id="acme", limit=0)) == ([], 5)


async def test_list_breaks_created_at_ties_by_call_id(store: Store) -> None:
    for call_id in ("b", "c", "a"):
        await store.save(make_record(call_id=call_id))
    records, _ = await store.list(CallQuery(company_id="acme"))
    assert [r.call_id for r in records] == ["c", "b", "a"]


# --- persistence and migrations -----------------------------------------------------------------


def _pragma(path: Path, name: str) -> object:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


async def test_records_survive_close_and_reopen(tmp_path: Path, db_url: str) -> None:
    async with await open_store(db_url) as first:
        await first.save(FULL)
    async with await open_store(db_url) as second:
        assert await second.get("acme", "full-1") == FULL
    assert _pragma(tmp_path / "calls.db", "journal_mode") == "wal"


async def test_an_empty_file_is_migrated(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "calls.db").touch()
    async with await open_store(db_url) as opened:
        await opened.save(make_record())
    assert _pragma(tmp_path / "calls.db", "user_version") == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "calls.db")
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(calls)")}
    conn.close()
    assert {"calls_company_created", "calls_company_status"} <= indexes


async def test_a_newer_schema_is_refused(tmp_path: Path, db_url: str) -> None:
    conn = sqlite3.connect(tmp_path / "calls.db")
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        await open_store(db_url)
    assert _pragma(tmp_path / "calls.db", "user_version") == SCHEMA_VERSION + 1


async def test_new_steps_apply_to_an_existing_database(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await open_store(db_url) as opened:
        await opened.save(FULL)
    steps = (*MIGRATIONS, ("ALTER TABLE calls ADD COLUMN note TEXT",))
    monkeypatch.setattr(store_sqlite, "MIGRATIONS", steps)
    monkeypatch.setattr(store_sqlite, "SCHEMA_VERSION", len(steps))
    async with await open_store(db_url) as upgraded:
        assert await upgraded.get("acme", "full-1") == FULL
    assert _pragma(tmp_path / "calls.db", "user_version") == SCHEMA_VERSION + 1


def _version_1_database(path: Path, *rows: tuple[object, ...]) -> None:
    """A database as the first released schema left it, holding `rows` (its 26 columns)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
        for row in rows:
            conn.execute(f"INSERT INTO calls VALUES ({', '.join('?' * len(row))})", row)
    finally:
        conn.close()


async def test_a_version_1_database_migrates_and_keeps_its_rows(tmp_path: Path, db_url: str) -> None:
    done = dataclasses.replace(FULL, call_id="done-1", updated_at=None, **TELEPHONY_DEFAULTS)
    live = make_record(
        call_id="live-1", status="active", answered_at=T0 + 1, frames_in=500, duration_seconds=9.0
    )
    # Schema 1 had no updated_at (nor what schema 3 added): its rows are the first 26 columns.
    _version_1_database(tmp_path / "calls.db", record_to_row(done)[:26], record_to_row(live)[:26])
    async with await open_store(db_url) as opened:
        assert _pragma(tmp_path / "calls.db", "user_version") == SCHEMA_VERSION >= 5
        assert await opened.get("acme", "done-1") == done
        assert await opened.get("acme", "live-1") == live
        # A row from before the migration has no last save: it ends at the restart, as it always did.
        assert await opened.mark_interrupted(T0 + 600) == 1
        interrupted = await opened.get("acme", "live-1")
        assert interrupted is not None
        assert (interrupted.status, interrupted.ended_at, interrupted.frames_in) == ("failed", T0 + 600, 500)
        await opened.save(dataclasses.replace(live, call_id="new-1", updated_at=T0 + 5))
        assert (await opened.get("acme", "new-1")) == dataclasses.replace(
            live, call_id="new-1", updated_at=T0 + 5
        )


async def test_a_failing_step_rolls_back_whole(
    tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = (*MIGRATIONS, ("CREATE TABLE extra (x)", "CREATE TABLE calls (x)"))
    monkeypatch.setattr(store_sqlite, "MIGRATIONS", steps)
    monkeypatch.setattr(store_sqlite, "SCHEMA_VERSION", len(steps))
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        await open_store(db_url)
    conn = sqlite3.connect(tmp_path / "calls.db")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    # The earlier steps committed (calls, and the tables later migrations add), the failing one nothing.
    assert "calls" in tables
    assert "extra" not in tables
    assert _pragma(tmp_path / "calls.db", "user_version") == SCHEMA_VERSION


# --- crash recovery and closing -----------------------------------------------------------------


async def test_mark_interrupted_fails_calls_left_unfinished(store: Store) -> None:
    for status in sorted(STATUSES):
        await store.save(make_record(call_id=status, status=status))
    now = T0 + 600
    assert await store.mark_interrupted(now) == 4
    for status in ("pending", "dialing", "connecting", "active"):
        got = await store.get("acme", status)
        assert got is not None
        assert (got.status, got.error_code, got.ended_at) == ("failed", "bridge_restarted", now)
    assert await store.get("acme", "ended") == make_record(call_id="ended", status="ended")
    assert await store.get("acme", "failed") == make_record(call_id="failed", status="failed")
    assert await store.mark_interrupted(now + 1) == 0


async def test_an_interrupted_call_ends_at_its_last_save_with_what_it_held(store: Store) -> None:
    checkpoint = make_record(
        call_id="live",
        status="active",
        answered_at=T0 + 2,
        updated_at=T0 + 37.5,
        duration_seconds=36.0,
        frames_in=1800,
        frames_out=1500,
        drops=1,
        barge_ins=2,
        usage=FULL.usage,
        cost_usd=0.01,
        transcript=FULL.transcript,
        provider="openai",
    )
    await store.save(checkpoint)
    assert await store.mark_interrupted(T0 + 600) == 1
    got = await store.get("acme", "live")
    assert got == dataclasses.replace(
        checkpoint, status="failed", error_code="bridge_restarted", ended_at=T0 + 37.5
    )


async def test_saves_after_close_raise(store_url: str) -> None:
    opened = await open_store(store_url)
    await opened.close()
    await opened.close()  # idempotent
    assert opened.closed
    with pytest.raises(StoreClosed):
        await opened.save(make_record())
    with pytest.raises(StoreClosed):
        await opened.get("acme", "call-1")


# --- any record round-trips ---------------------------------------------------------------------

_epochs = st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False, allow_infinity=False)
_finite = st.floats(allow_nan=False, allow_infinity=False)
_counts = st.integers(min_value=0, max_value=2**62)
_lines = st.builds(
    TranscriptLine,
    role=st.sampled_from(["caller", "bot"]),
    text=st.text(),
    at=_epochs,
    truncated=st.booleans(),
)


async def test_a_version_2_database_gains_the_telephony_columns(tmp_path: Path, db_url: str) -> None:
    before = dataclasses.replace(FULL, call_id="v2-1", **TELEPHONY_DEFAULTS)
    conn = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    try:
        for step in MIGRATIONS[:2]:
            for statement in step:
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        row = record_to_row(before)[:27]  # schema 2: up to updated_at
        conn.execute(f"INSERT INTO calls VALUES ({', '.join('?' * len(row))})", row)
    finally:
        conn.close()
    async with await open_store(db_url) as opened:
        assert _pragma(tmp_path / "calls.db", "user_version") == SCHEMA_VERSION
        assert await opened.get("acme", "v2-1") == before
        after = dataclasses.replace(before, call_id="v3-1", dtmf="4*", amd_result="machine")
        await opened.save(after)
        assert await opened.get("acme", "v3-1") == after
        assert [
            r.call_id for r in (await opened.list(CallQuery(company_id="acme", amd_result="machine")))[0]
        ] == ["v3-1"]


_usage = st.builds(
    Usage,
    input_text_tokens=_counts,
    input_audio_tokens=_counts,
    input_cached_tokens=_counts,
    output_text_tokens=_counts,
    output_audio_tokens=_counts,
    transcription_input_tokens=_counts,
    transcription_output_tokens=_counts,
    transcription_seconds=_finite,
    responses=_counts,
)
_records = st.builds(
    CallRecord,
    call_id=st.text(min_size=1),
    company_id=st.text(min_size=1),
    direction=st.sampled_from(["inbound", "outbound"]),
    from_number=st.text(),
    to_number=st.text(),
    created_at=_epochs,
    caller_name=st.none() | st.text(),
    call_objective=st.none() | st.text(),
    status=st.sampled_from(sorted(STATUSES)),
    disconnected_by=st.none() | st.text(),
    error_code=st.none() | st.text(),
    dial_outcome=st.none() | st.text(),
    answered_at=st.none() | _epochs,
    ended_at=st.none() | _epochs,
    updated_at=st.none() | _epochs,
    duration_seconds=_finite,
    transcript=st.lists(_lines, max_size=5).map(tuple),
    usage=_usage,
    cost_usd=st.none() | _finite,
    provider=st.text(),
    model=st.text(),
    frames_in=_counts,
    frames_out=_counts,
    drops=_counts,
    barge_ins=_counts,
    played_ms_estimated=st.booleans(),
    variables=st.dictionaries(st.text(), st.text(), max_size=4),
    transferred_to=st.none() | st.text(),
    dtmf=st.text(alphabet="0123456789*#ABCD", max_size=40),
    amd_result=st.none() | st.sampled_from(["human", "machine", "unknown"]),
    ended_by_guard=st.none() | st.sampled_from(["max_call_seconds", "caller_silence"]),
)


def _as_postgresql_keeps(record: CallRecord) -> CallRecord:
    """The record with NUL (which PostgreSQL's text cannot hold) in its text columns as U+FFFD."""
    changed: dict[str, Any] = {
        f.name: value.replace("\x00", NUL_STAND_IN)
        for f in dataclasses.fields(record)
        if isinstance(value := getattr(record, f.name), str)
    }
    return dataclasses.replace(record, **changed)


def test_any_record_round_trips(store_url: str) -> None:
    # One store for all examples (Hypothesis cannot reuse function-scoped async fixtures).
    on_postgresql = store_url.startswith("postgresql:")
    with asyncio.Runner() as runner:
        opened = runner.run(open_store(store_url))
        serial = itertools.count()

        @settings(max_examples=150, deadline=None)
        @given(record=_records)
        def check(record: CallRecord) -> None:
            # A fresh id per example: the same id under another company is (rightly) refused.
            record = dataclasses.replace(record, call_id=f"{next(serial)}:{record.call_id}")
            runner.run(opened.save(record))
            kept = _as_postgresql_keeps(record) if on_postgresql else record
            assert runner.run(opened.get(record.company_id, record.call_id)) == kept
            assert json.loads(json.dumps(record.to_api()))["transcript_lines"] == len(record.transcript)

        try:
            check()
        finally:
            runner.run(opened.close())
