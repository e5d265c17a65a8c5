"""The webhook outbox's pure parts (signature, key mapper, backoff) and its transaction: events written
with the record's save, one delivery per destination (company and task), once per call and type."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.directory import Directory
from bridge.integrations import keymap
from bridge.integrations.outbox import Outbox
from bridge.integrations.sender import backoff_seconds
from bridge.integrations.signing import parse_header, signature_header, verify
from bridge.session.records import CallRecorder
from bridge.session.session import CallInfo, Session
from bridge.session.state import EndedBy
from bridge.settings import build_settings
from bridge.store import Store, StoreError, open_store
from tests.helpers import raw_config

COMPANY_URL = "https://crm.example/hooks"
TASK_URL = "https://tasks.example/hook"


def test_a_signature_verifies_only_with_its_secret_body_and_time() -> None:
    body = b'{"id":"evt_1"}'
    header = signature_header("s3cret", 1_700_000_000, body)
    assert parse_header(header) is not None
    assert verify("s3cret", header, body, now=1_700_000_100)
    assert not verify("other", header, body, now=1_700_000_100)
    assert not verify("s3cret", header, body + b" ", now=1_700_000_100)
    assert not verify("s3cret", header, body, now=1_700_000_301)  # older than five minutes
    assert not verify("s3cret", "v1=abc", body, now=1_700_000_000)


def test_the_key_mapper_fills_typed_values_and_text() -> None:
    key_map = {
        "seconds": "{{call.duration_seconds}}",
        "line": "Call {{ call.session_id }} by {{call.disconnected_by}}: {{call.missing_value}}",
        "ok": "{{call.post_call_analysis.resolved}}",
    }
    assert keymap.unknown_names(key_map) == ["call.missing_value"]
    del key_map["line"]
    key_map["line"] = "Call {{ call.session_id }} by {{call.disconnected_by}}, {{call.summary}}."
    assert keymap.unknown_names(key_map) == []
    assert keymap.unknown_names({"a": "{{crm.x}}", "b": "{{call.post_call_analysis.}}"}) == [
        "call.post_call_analysis.",
        "crm.x",
    ]
    data: dict[str, Any] = {
        "duration_seconds": 12.5,
        "session_id": "c1",
        "disconnected_by": "caller",
        "summary": None,
        "post_call_analysis": {"resolved": False},
    }
    assert keymap.apply(key_map, data) == {"seconds": 12.5, "ok": False, "line": "Call c1 by caller, ."}


def test_backoff_doubles_up_to_the_ceiling_with_jitter() -> None:
    assert backoff_seconds(1, 10, 3600, rng=lambda: 1.0) == 10
    assert backoff_seconds(3, 10, 3600, rng=lambda: 1.0) == 40
    assert backoff_seconds(3, 10, 3600, rng=lambda: 0.0) == 20
    assert backoff_seconds(500, 10, 3600, rng=lambda: 1.0) == 3600


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    async with await open_store(store_url) as opened:
        yield opened


def outbox_for(company_events: list[str] | None = None) -> Outbox:
    raw = raw_config()
    hooks: dict[str, Any] = {
        "url": COMPANY_URL,
        "secret": "s3cret",
        "key_map": {"d": "{{call.duration_seconds}}"},
    }
    if company_events is not None:
        hooks["events"] = company_events
    raw["companies"][0]["webhooks"] = hooks
    directory = Directory.from_settings(build_settings(raw))
    return Outbox(lambda: directory, has_recording=lambda _c, _i: False, retry_for_seconds=60)


async def rows(store: Store) -> list[tuple[str, str, str]]:
    def read(conn: Any) -> list[tuple[str, str, str]]:
        return [
            tuple(row)
            for row in conn.execute(
                "SELECT e.type, d.url, d.status FROM webhook_deliveries d JOIN webhook_events e "
                "ON e.id = d.event_id ORDER BY d.seq"
            ).fetchall()
        ]

    return await store.run(read)


async def test_events_are_written_with_the_transitions_to_company_and_task(store: Store) -> None:
    outbox = outbox_for()
    recorder = CallRecorder(store, companions=[outbox.on_save])
    info = CallInfo(
        "c1",
        "acme",
        "outbound",
        "+34987654321",
        "+15551230001",
        webhook_url=TASK_URL,
        webhook_events=("call_completed",),
    )
    session = Session(info)
    recorder.track(session)
    session.attach_owner()
    session.mark_active()
    session.finish(EndedBy.CALLER)
    await recorder.flush()
    recorder.save(session)  # a repeat save of the ended call writes nothing twice
    await recorder.flush()
    assert await rows(store) == [
        ("call_started", COMPANY_URL, "pending"),
        ("call_completed", COMPANY_URL, "pending"),
        ("call_completed", TASK_URL, "pending"),
    ]
    (body,) = await store.run(
        lambda conn: conn.execute("SELECT body FROM webhook_events WHERE type = 'call_completed'").fetchone()
    )
    event = json.loads(body)
    assert event["call_id"] == "c1"
    assert event["data"]["status"] == "ended"
    assert event["data"]["disconnected_by"] == "caller"
    assert event["mapped"] == {"d": event["data"]["duration_seconds"]}


async def test_a_call_that_never_became_active_gets_call_failed_only(store: Store) -> None:
    outbox = outbox_for(["call_started", "call_failed"])
    recorder = CallRecorder(store, companions=[outbox.on_save])
    session = Session(CallInfo("c2", "acme", "inbound", "+15551230001", "+34987654321"))
    recorder.track(session)
    session.finish(EndedBy.ERROR, "provider_unavailable", failed=True)
    await recorder.flush()
    assert await rows(store) == [("call_failed", COMPANY_URL, "pending")]


async def test_a_failing_companion_never_costs_the_record(store: Store) -> None:
    session = Session(CallInfo("c3", "acme", "inbound", "+15551230001", "+34987654321"))

    def broken(_conn: Any) -> None:
        raise RuntimeError("bug")

    with pytest.raises(StoreError):
        await store.save(session.record(), also=broken)
    assert await store.get("acme", "c3") is not None
