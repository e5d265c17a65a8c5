"""Usage and cost over HTTP: rows written with each call's final record (one per model that served it),
summed by company, conversation, model and day, across a date range and a UTC day boundary; CSV holds
the same numbers; a company sees only its own; the admin sees every company."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import aiohttp
import pytest

from bridge.app import Services
from bridge.keys import hash_key
from bridge.session.session import CallInfo, Session
from bridge.session.state import EndedBy
from bridge.settings import build_settings
from bridge.simulate import AudioSource, SimulatedCallOptions, run_simulated_call
from bridge.store import open_store
from bridge.store.records import CallRecord, Usage
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import (
    ACME_KEY,
    ACME_PHONE,
    CONNECTOR_KEY,
    GLOBEX_KEY,
    GLOBEX_PHONE,
    raw_config,
    utterances,
)
from tests.integration.relay_support import call_options, fake_servers, final_record
from tests.integration.test_failover import failover_settings

StartBridge = Callable[..., Any]
ADMIN = "usage-admin-key-0123456789"
FAKE_KEY = "sk-test-key"
KEYS = {"acme": ACME_KEY, "globex": GLOBEX_KEY}
PHONES = {"acme": ACME_PHONE, "globex": GLOBEX_PHONE}
MIDNIGHT = datetime(2026, 3, 2, tzinfo=UTC).timestamp()  # 2026-03-01 ends, 2026-03-02 begins
SUMMED = ("input_text_tokens", "output_text_tokens", "input_audio_tokens", "output_audio_tokens")


def usage(n: int, *, seconds: float = 0.0) -> Usage:
    return Usage(
        input_text_tokens=100 * n,
        input_audio_tokens=1000 * n,
        input_cached_tokens=10 * n,
        output_text_tokens=20 * n,
        output_audio_tokens=300 * n,
        responses=n,
        model_seconds=seconds,
    )


# (call, company, start relative to midnight, [(provider, model, usage, cost)]): a failover call that
# starts just before midnight, calls just after, a time-billed model, and one call outside the range.
CALLS: list[tuple[str, str, float, list[tuple[str, str, Usage, float | None]]]] = [
    (
        "a-late",
        "acme",
        -30,
        [("openai", "gpt-realtime", usage(1), 0.01), ("gemini", "g-live", usage(2), 0.02)],
    ),
    ("a-early", "acme", 30, [("openai", "gpt-realtime", usage(3), 0.03)]),
    ("a-noon", "acme", 12 * 3600, [("ultravox", "fixie", usage(0, seconds=90.5), 0.045)]),
    ("a-old", "acme", -5 * 86400, [("openai", "gpt-realtime", usage(7), 0.07)]),
    ("g-late", "globex", -60, [("openai", "gpt-realtime", usage(5), None)]),
    ("g-early", "globex", 60, [("echo", "", Usage(), None)]),
]
RANGE = {"start_date": str(int(MIDNIGHT - 86400)), "end_date": "2026-03-03T00:00:00Z"}


@dataclass
class World:
    services: Services
    http: aiohttp.ClientSession
    records: dict[str, CallRecord]

    async def get(self, path: str, key: str, **params: str) -> tuple[int, Any, str]:
        url = f"http://127.0.0.1:{self.services.http_port}{path}"
        async with self.http.get(url, params=params, headers={"Authorization": f"Bearer {key}"}) as response:
            text = await response.text()
            if response.content_type == "application/json":
                return response.status, await response.json(), text
            return response.status, None, text


def seeded(call_id: str, company: str, created_at: float, parts: list[Any]) -> Session:
    info = CallInfo(call_id, company, "inbound", "+34600111222", PHONES[company])
    session = Session(info, created_at=created_at)
    for provider, model, used, cost in parts:
        session.begin_model(provider, model)
        session.add_usage(used, cost)
    return session


@pytest.fixture
async def world(bridge_factory: StartBridge, store_url: str) -> Any:
    raw = raw_config()
    raw["storage"] = {"url": store_url}
    raw["admin"] = {"api_keys": [hash_key(ADMIN)]}
    services = await bridge_factory(settings=build_settings(raw))
    sessions = [seeded(c, company, MIDNIGHT + at, parts) for c, company, at, parts in CALLS]
    for session in sessions:
        services.recorder.track(session)
        session.finish(EndedBy.CALLER)
    await services.recorder.flush()
    for session in sessions:  # a final record saved again must not count twice
        services.recorder.save(session)
    await services.recorder.flush()
    records = {s.call_id: await services.calls.record(s.company_id, s.call_id) for s in sessions}
    async with aiohttp.ClientSession() as http:
        yield World(services, http, records)


def in_range(record: CallRecord) -> bool:
    return MIDNIGHT - 86400 <= record.created_at < MIDNIGHT + 86400


def expected(records: list[CallRecord]) -> dict[str, float]:
    """What the rows must sum to: the calls' own records."""
    return {
        "input_text_tokens": sum(r.usage.input_text_tokens for r in records),
        "output_text_tokens": sum(r.usage.output_text_tokens for r in records),
        "input_audio_tokens": sum(r.usage.input_audio_tokens for r in records),
        "output_audio_tokens": sum(r.usage.output_audio_tokens for r in records),
        "cached_tokens": sum(r.usage.input_cached_tokens for r in records),
        "model_seconds": sum(r.usage.model_seconds for r in records),
        "estimated_cost_usd": sum(r.cost_usd or 0.0 for r in records),
        "calls": len(records),
    }


def assert_sums(row: dict[str, Any], records: list[CallRecord]) -> None:
    want = expected(records)
    for name, value in want.items():
        assert row[name] == pytest.approx(value, abs=1e-6), (name, row, want)


def day_of(record: CallRecord) -> str:
    return datetime.fromtimestamp(record.created_at, tz=UTC).strftime("%Y-%m-%d")


async def test_every_grouping_sums_to_the_calls_records(world: World) -> None:
    for company, key in KEYS.items():
        mine = [r for r in world.records.values() if r.company_id == company and in_range(r)]
        status, reply, _ = await world.get("/api/usage", key, group_by="company", **RANGE)
        assert status == 200, reply
        (row,) = reply["data"]["rows"]
        assert row["company_id"] == company
        assert_sums(row, mine)
        assert_sums(reply["data"]["totals"], mine)
        # One row per conversation, each equal to its record.
        status, reply, _ = await world.get("/api/usage", key, group_by="conversation", **RANGE)
        rows = reply["data"]["rows"]
        assert [r["call_id"] for r in rows] == [
            r.call_id for r in sorted(mine, key=lambda r: r.created_at, reverse=True)
        ]
        for row in rows:
            assert_sums(row, [world.records[row["call_id"]]])
            assert row["day"] == day_of(world.records[row["call_id"]])
        # By day: the failover call before midnight and the calls after fall on their own days.
        status, reply, _ = await world.get("/api/usage", key, group_by="day", **RANGE)
        days = {row["day"]: row for row in reply["data"]["rows"]}
        assert list(days) == sorted({day_of(r) for r in mine})
        for day, row in days.items():
            assert_sums(row, [r for r in mine if day_of(r) == day])
    acme_days = [
        r["day"]
        for r in (await world.get("/api/usage", ACME_KEY, group_by="day", **RANGE))[1]["data"]["rows"]
    ]
    assert acme_days == ["2026-03-01", "2026-03-02"]


async def test_by_model_splits_a_failover_call_and_adds_up(world: World) -> None:
    status, reply, _ = await world.get("/api/usage", ACME_KEY, group_by="model", **RANGE)
    assert status == 200
    models = {(r["provider"], r["model"]): r for r in reply["data"]["rows"]}
    assert set(models) == {("openai", "gpt-realtime"), ("gemini", "g-live"), ("ultravox", "fixie")}
    openai = models["openai", "gpt-realtime"]
    assert (openai["input_text_tokens"], openai["calls"]) == (100 * (1 + 3), 2)
    assert openai["estimated_cost_usd"] == pytest.approx(0.04)
    assert models["gemini", "g-live"]["output_audio_tokens"] == 600
    assert models["ultravox", "fixie"]["model_seconds"] == pytest.approx(90.5)
    mine = [r for r in world.records.values() if r.company_id == "acme" and in_range(r)]
    for name in SUMMED:  # the models' parts add up to the calls' records
        assert sum(r[name] for r in models.values()) == expected(mine)[name]
    # The company's model breakdown: one row per company and model.
    status, reply, _ = await world.get("/api/usage", ACME_KEY, group_by="company", breakdown="model", **RANGE)
    rows = reply["data"]["rows"]
    assert {(r["company_id"], r["provider"], r["model"]) for r in rows} == {("acme", *m) for m in models}
    assert reply["data"]["pagination"]["total"] == 3


async def test_csv_holds_the_same_numbers(world: World) -> None:
    for group_by in ("company", "conversation", "model", "day"):
        _, reply, _ = await world.get("/api/usage", ACME_KEY, group_by=group_by, **RANGE)
        status, _, text = await world.get("/api/usage", ACME_KEY, group_by=group_by, format="csv", **RANGE)
        assert status == 200
        table = list(csv.DictReader(io.StringIO(text)))
        assert len(table) == len(reply["data"]["rows"])
        for line, row in zip(table, reply["data"]["rows"], strict=True):
            for name in (*SUMMED, "cached_tokens", "calls"):
                assert int(line[name]) == row[name]
            for name in ("model_seconds", "estimated_cost_usd"):
                assert float(line[name]) == pytest.approx(row[name])
            for name in ("company_id", "call_id", "day", "provider", "model"):
                if name in line:
                    assert line[name] == row[name]
    _, _, text = await world.get("/api/usage", ACME_KEY, group_by="day", format="csv")
    assert text.splitlines()[0].split(",")[:2] == ["day", "input_text_tokens"]


async def test_a_company_sees_only_its_own(world: World) -> None:
    for viewer, other in (("acme", "globex"), ("globex", "acme")):
        foreign = [other, *(c for c, company, _, _ in CALLS if company == other)]
        for group_by in ("company", "conversation", "model", "day"):
            for fmt in ("json", "csv"):
                params = {"group_by": group_by, "format": fmt, "breakdown": "model"}
                # A company_id naming another company is not a filter the company route has.
                status, _, text = await world.get("/api/usage", KEYS[viewer], company_id=other, **params)
                assert status == 200
                for value in foreign:
                    assert value not in text, (viewer, group_by, fmt, value)
    # Admin keys and company keys never cross.
    assert (await world.get("/api/admin/usage", ACME_KEY))[0] == 401
    assert (await world.get("/api/usage", ADMIN))[0] == 401


async def test_the_admin_sees_every_company_and_can_filter(world: World) -> None:
    status, reply, _ = await world.get("/api/admin/usage", ADMIN, group_by="company", **RANGE)
    assert status == 200, reply
    rows = {r["company_id"]: r for r in reply["data"]["rows"]}
    assert list(rows) == ["acme", "globex"]
    for company, row in rows.items():
        assert_sums(row, [r for r in world.records.values() if r.company_id == company and in_range(r)])
    assert_sums(reply["data"]["totals"], [r for r in world.records.values() if in_range(r)])
    # No range: every call, the old one too.
    _, reply, _ = await world.get("/api/admin/usage", ADMIN, group_by="conversation")
    assert {r["call_id"] for r in reply["data"]["rows"]} == set(world.records)
    _, reply, _ = await world.get("/api/admin/usage", ADMIN, group_by="day", company_id="globex")
    assert_sums(reply["data"]["totals"], [r for r in world.records.values() if r.company_id == "globex"])
    assert [r["day"] for r in reply["data"]["rows"]] == ["2026-03-01", "2026-03-02"]
    _, reply, _ = await world.get("/api/admin/usage", ADMIN, company_id="nobody")
    assert reply["data"]["rows"] == []
    assert reply["data"]["totals"]["calls"] == 0


async def test_pagination_has_a_total_and_pages_cover_every_row(world: World) -> None:
    seen: list[str] = []
    for offset in range(4):
        status, reply, _ = await world.get(
            "/api/admin/usage", ADMIN, group_by="conversation", limit="2", offset=str(offset * 2)
        )
        assert status == 200
        assert reply["data"]["pagination"] == {"total": len(CALLS), "limit": 2, "offset": offset * 2}
        seen += [r["call_id"] for r in reply["data"]["rows"]]
    assert sorted(seen) == sorted(world.records)
    # An empty range is an empty array; a bad date is a 400 naming the field.
    _, reply, _ = await world.get("/api/usage", ACME_KEY, start_date="2030-01-01T00:00:00Z")
    assert (reply["data"]["rows"], reply["data"]["pagination"]["total"]) == ([], 0)
    status, reply, _ = await world.get("/api/usage", ACME_KEY, end_date="yesterday")
    assert (status, reply["code"]) == (400, "validation_error")
    assert "end_date" in reply["error"]


async def test_a_whole_call_leaves_rows_equal_to_its_record(bridge_factory: StartBridge) -> None:
    fake = FakeRealtimeServer(
        api_key=FAKE_KEY, script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=300),))
    )
    await fake.start()
    try:
        raw = raw_config()
        raw["admin"] = {"api_keys": [hash_key(ADMIN)]}
        raw["companies"][0]["agent"] = {"provider": "openai", "greeting": "Hello, Acme here."}
        raw["providers"] = {"openai": {"api_key": FAKE_KEY, "url": fake.url, "model": "gpt-realtime"}}
        services = await bridge_factory(settings=build_settings(raw))
        options = SimulatedCallOptions(
            url=f"http://127.0.0.1:{services.http_port}",
            connector_key=CONNECTOR_KEY,
            called=ACME_PHONE,
            format="ulaw",
            audio=AudioSource(pcm=utterances(8000, [(1.0, 2.0)]), sample_rate=8000),
            seconds=4.0,
        )
        summary = await run_simulated_call(options)
        assert summary.ok, summary.errors
        session = services.manager.get(summary.call_id)
        if session is not None:
            await asyncio.wait_for(session.ended.wait(), 10)
        await services.recorder.flush()
        record = await services.calls.record("acme", summary.call_id)
        assert record.usage.responses >= 1
        assert record.cost_usd
        async with aiohttp.ClientSession() as http:
            world = World(services, http, {record.call_id: record})
            _, reply, _ = await world.get("/api/usage", ACME_KEY, group_by="conversation")
            (row,) = reply["data"]["rows"]
            assert row["call_id"] == record.call_id
            assert_sums(row, [record])
            _, reply, _ = await world.get("/api/admin/usage", ADMIN, group_by="model")
            (row,) = reply["data"]["rows"]
            assert (row["provider"], row["model"]) == ("openai", "gpt-realtime")
            assert_sums(row, [record])
    finally:
        await fake.close()


async def test_calls_without_rows_get_them_at_the_next_start(
    bridge_factory: StartBridge, store_url: str
) -> None:
    url = store_url
    async with await open_store(url) as store:
        # A call a crash cut short (its last checkpoint: active, with usage) and one saved without rows.
        crashed = seeded("crashed", "acme", MIDNIGHT, [("openai", "gpt-realtime", usage(2), 0.02)])
        crashed.attach_owner()
        crashed.mark_active()
        await store.save(crashed.record())
        old = seeded("old", "acme", MIDNIGHT + 5, [("gemini", "g-live", usage(4, seconds=3.0), 0.04)])
        old.finish(EndedBy.CALLER)
        await store.save(old.record())
    raw = raw_config()
    raw["storage"] = {"url": url}
    services = await bridge_factory(settings=build_settings(raw))
    records = {c: await services.calls.record("acme", c) for c in ("crashed", "old")}
    assert records["crashed"].status == "failed"
    async with aiohttp.ClientSession() as http:
        world = World(services, http, records)
        _, reply, _ = await world.get("/api/usage", ACME_KEY, group_by="conversation", breakdown="model")
        rows = {r["call_id"]: r for r in reply["data"]["rows"]}
        assert set(rows) == {"crashed", "old"}
        for call_id, row in rows.items():
            assert (row["provider"], row["model"]) == (records[call_id].provider, records[call_id].model)
            assert_sums(row, [records[call_id]])


async def test_a_call_that_failed_over_has_a_row_per_model(bridge_factory: StartBridge) -> None:
    async with fake_servers(partial(FakeRealtimeServer, api_key=FAKE_KEY)) as start:
        primary = await start(
            script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),), drop_after_s=1.5)
        )
        fallback = await start(
            variant="xai", script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=500),))
        )
        services = await bridge_factory(settings=failover_settings(primary, fallback))

        async def refuse_reconnects() -> None:
            while len(primary.connections) < 1:
                await asyncio.sleep(0.02)
            primary.refuse_new = True  # the primary stays down: the fallback takes the call over

        refusing = asyncio.create_task(refuse_reconnects())
        speech = utterances(8000, [(0.4, 0.9), (4.5, 5.2)])
        summary = await run_simulated_call(
            call_options(services, audio=AudioSource(pcm=speech, sample_rate=8000), seconds=7.0)
        )
        await refusing
        assert summary.ok, summary.errors
        record = await final_record(services, summary.call_id)
        await services.recorder.flush()
    assert [s.provider for s in record.model_segments] == ["openai", "xai"]
    async with aiohttp.ClientSession() as http:
        world = World(services, http, {record.call_id: record})
        _, reply, _ = await world.get("/api/usage", ACME_KEY, group_by="conversation", breakdown="model")
        rows = {r["provider"]: r for r in reply["data"]["rows"]}
        assert set(rows) == {"openai", "xai"}
        assert rows["xai"]["model"] == "grok-voice-latest"
        assert all(row["input_audio_tokens"] + row["output_audio_tokens"] > 0 for row in rows.values())
        for name in SUMMED:  # the models' parts add up to the call's record
            assert sum(row[name] for row in rows.values()) == expected([record])[name]
        _, reply, _ = await world.get("/api/usage", ACME_KEY, group_by="conversation")
        assert_sums(reply["data"]["rows"][0], [record])
