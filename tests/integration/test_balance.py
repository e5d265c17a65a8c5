"""Prepaid balances end to end: a ledger whose sum is the balance, calls refused (402) without credit
on connect, on media sockets and on outbound, a whole call's cost charged with its final save, the
`balance_low` webhook event, and each company seeing only its own balance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.api.routes_balance import BALANCES
from bridge.app import Services, start_services
from bridge.companies.balance import Balances
from bridge.keys import hash_key
from bridge.session.state import EndedBy
from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, SimulatedCallOptions, run_simulated_call
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
from tests.integration.webhook_support import Receiver

StartBridge = Callable[..., Any]
ADMIN_KEY = "admin-key-balance-0123456789"
FAKE_KEY = "sk-test-key"
SECRET = "whsec-balance-0123456789abcdef"
DEADLINE = 30.0
ACME_CALLER = "+34600111222"
GLOBEX_CALLER = "+15551234567"


def balance_settings(
    *, fake: FakeRealtimeServer | None = None, hook_url: str = "", low: float = 5.0, storage_url: str = ""
) -> Settings:
    raw = raw_config()
    if storage_url:
        raw["storage"] = {"url": storage_url}
    raw["admin"] = {"api_keys": [hash_key(ADMIN_KEY)]}
    raw["webhook_delivery"] = {"retry_base_seconds": 0.05, "retry_max_seconds": 0.2, "poll_seconds": 0.05}
    acme = raw["companies"][0]
    acme["limits"] = {"prepaid": True, "low_balance_usd": low}
    if hook_url:
        acme["webhooks"] = {
            "url": hook_url,
            "secret": SECRET,
            "events": ["call_started", "call_completed", "balance_low"],
        }
    if fake is not None:
        acme["agent"] = {"provider": "openai", "greeting": "Hello, Acme here.", "instructions": "Be brief."}
        raw["providers"] = {"openai": {"api_key": FAKE_KEY, "url": fake.url, "model": "gpt-realtime"}}
    return build_settings(raw)


class Api:
    def __init__(self, services: Services, http: aiohttp.ClientSession) -> None:
        self.services = services
        self.http = http
        self.base = f"http://127.0.0.1:{services.http_port}"

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        async with self.http.request(method, self.base + path, json=body, headers=headers) as response:
            return response.status, await response.json()

    async def connect(self, call_id: str, *, company: str = "acme") -> tuple[int, dict[str, Any]]:
        body = {
            "callId": call_id,
            "event": "connect",
            "callerPhone": ACME_CALLER if company == "acme" else GLOBEX_CALLER,
            "b_number": ACME_PHONE if company == "acme" else GLOBEX_PHONE,
            "websocketUrl": "ws://127.0.0.1/x",
        }
        return await self.request("POST", "/api/voip/webhook", {"x-connector-api-key": CONNECTOR_KEY}, body)

    async def credit(self, company: str, amount: float, note: str = "") -> tuple[int, dict[str, Any]]:
        body = {"amount_usd": amount, "note": note}
        path = f"/api/admin/companies/{company}/credit"
        return await self.request("POST", path, {"X-Admin-Key": ADMIN_KEY}, body)

    async def balance(self, key: str) -> dict[str, Any]:
        status, body = await self.request("GET", "/api/balance", {"X-API-Key": key})
        assert status == 200, body
        data: dict[str, Any] = body["data"]
        return data


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver(SECRET)
    await server.start()
    yield server
    await server.close()


async def ledger_rows(services: Services, company_id: str) -> list[tuple[Any, ...]]:
    def read(conn: Any) -> list[tuple[Any, ...]]:
        query = "SELECT kind, amount_usd, call_id FROM ledger WHERE company_id = ? ORDER BY seq"
        return list(conn.execute(query, (company_id,)).fetchall())

    return await services.store.run(read)


async def test_zero_balance_refuses_connect_and_outbound_until_a_credit(
    bridge_factory: StartBridge, http: aiohttp.ClientSession, store_url: str
) -> None:
    services = await bridge_factory(settings=balance_settings(storage_url=store_url))
    api = Api(services, http)

    status, body = await api.connect("broke-1")
    assert (status, body["code"]) == (402, "insufficient_balance")
    outbound = {"from": ACME_PHONE, "to": "+15550001111", "call_objective": "Remind about the visit"}
    status, body = await api.request("POST", "/api/calls/outbound", {"X-API-Key": ACME_KEY}, outbound)
    assert (status, body["code"]) == (402, "insufficient_balance")
    # No call was created by either refusal: nothing live, nothing stored, nothing listed.
    assert services.manager.get("broke-1") is None
    await services.recorder.flush()
    assert not await services.store.call_exists("broke-1")
    status, listed = await api.request("GET", "/api/calls", {"X-API-Key": ACME_KEY})
    assert status == 200
    assert listed["data"]["calls"] == []

    # A company that is not prepaid is never refused for its (empty) balance.
    assert (await api.connect("globex-1", company="globex"))[0] == 200

    status, body = await api.credit("acme", 12.5, "invoice 2026-001")
    assert status == 201, body
    assert body["data"]["balance_usd"] == 12.5
    assert body["data"]["entry"]["kind"] == "credit"
    assert body["data"]["entry"]["note"] == "invoice 2026-001"
    assert (await api.connect("paid-1"))[0] == 200

    mine = await api.balance(ACME_KEY)
    assert mine["prepaid"] is True
    assert mine["balance_usd"] == 12.5 == sum(e["amount_usd"] for e in mine["entries"])
    # Another company never sees it: its own balance is its own (empty) ledger.
    theirs = await api.balance(GLOBEX_KEY)
    assert (theirs["company_id"], theirs["balance_usd"], theirs["entries"]) == ("globex", 0.0, [])
    assert theirs["prepaid"] is False


async def test_admin_routes_need_an_admin_key_and_a_known_company(
    bridge_factory: StartBridge, http: aiohttp.ClientSession
) -> None:
    services = await bridge_factory(settings=balance_settings())
    api = Api(services, http)
    path = "/api/admin/companies/acme/balance"
    for key in (ACME_KEY, GLOBEX_KEY, "nonsense-key-123456"):
        assert (await api.request("GET", path, {"X-Admin-Key": key}))[0] == 401
        assert (await api.request("GET", path, {"Authorization": f"Bearer {key}"}))[0] == 401
        credit = {"amount_usd": 5, "note": ""}
        status, _ = await api.request("POST", "/api/admin/companies/acme/credit", {"X-API-Key": key}, credit)
        assert status == 401
    status, body = await api.credit("nobody", 5)
    assert (status, body["code"]) == (404, "unknown_company")
    status, body = await api.request("GET", "/api/admin/companies/nobody/balance", {"X-Admin-Key": ADMIN_KEY})
    assert status == 404
    for amount in (0, -1, 2_000_000):
        assert (await api.credit("acme", amount))[0] == 400
    assert (await api.credit("globex", 3.25))[0] == 201
    status, body = await api.request("GET", "/api/admin/companies/globex/balance", {"X-Admin-Key": ADMIN_KEY})
    assert status == 200
    assert body["data"]["balance_usd"] == 3.25
    # The company's own view never shows another company's credit.
    assert (await api.balance(ACME_KEY))["entries"] == []


async def test_a_call_is_charged_its_cost_and_balance_low_goes_out(
    bridge_factory: StartBridge, http: aiohttp.ClientSession, receiver: Receiver, store_url: str
) -> None:
    fake = FakeRealtimeServer(
        api_key=FAKE_KEY, script=Script(greeting_reply_ms=400, turns=(Turn(reply_ms=300),))
    )
    await fake.start()
    try:
        # A micro-dollar of credit: the call is admitted, and any priced call takes the balance to
        # zero or below, across the low-balance threshold (0 here).
        services = await bridge_factory(
            settings=balance_settings(fake=fake, hook_url=receiver.url, low=0.0, storage_url=store_url)
        )
        api = Api(services, http)
        assert (await api.credit("acme", 0.000001, "trial"))[0] == 201
        summary = await run_simulated_call(
            SimulatedCallOptions(
                url=api.base,
                connector_key=CONNECTOR_KEY,
                called=ACME_PHONE,
                caller=ACME_CALLER,
                format="ulaw",
                audio=AudioSource(pcm=utterances(8000, [(1.0, 2.0)]), sample_rate=8000),
                seconds=3.5,
            )
        )
        assert summary.ok, summary.errors
    finally:
        await fake.close()
    call_id = summary.call_id
    session = services.manager.get(call_id)
    if session is not None:
        await asyncio.wait_for(session.ended.wait(), DEADLINE)
    await services.recorder.flush()
    record = await services.calls.record("acme", call_id)
    assert record.cost_usd is not None
    assert record.cost_usd > 0

    rows = await ledger_rows(services, "acme")
    assert [(kind, call) for kind, _, call in rows] == [("credit", None), ("call", call_id)]
    assert rows[1][1] == pytest.approx(-record.cost_usd, abs=1e-9)
    mine = await api.balance(ACME_KEY)
    assert mine["balance_usd"] == pytest.approx(sum(amount for _, amount, _ in rows), abs=1e-9)
    assert mine["balance_usd"] == pytest.approx(0.000001 - record.cost_usd, abs=1e-9)
    assert mine["entries"][0]["kind"] == "call"  # newest first
    assert mine["entries"][0]["call_id"] == call_id

    # balance_low: in the outbox, written with the charge, and delivered signed.
    def events(conn: Any) -> list[tuple[Any, ...]]:
        return list(conn.execute("SELECT type, call_id FROM webhook_events WHERE company_id = 'acme'"))

    assert ("balance_low", call_id) in await services.store.run(events)
    deadline = time.monotonic() + DEADLINE
    while "balance_low" not in receiver.types(call_id):
        assert time.monotonic() < deadline, f"balance_low never delivered: {receiver.hits}"
        await asyncio.sleep(0.05)
    (low,) = [hit.body for hit in receiver.accepted if hit.body["type"] == "balance_low"]
    assert low["data"]["balance_usd"] == pytest.approx(mine["balance_usd"], abs=1e-9)
    assert low["data"]["threshold_usd"] == 0.0

    # Exhausted now: refused; a top-up lets calls in again.
    status, body = await api.connect("after-the-call")
    assert (status, body["code"]) == (402, "insufficient_balance")
    assert (await api.credit("acme", 1.0))[0] == 201
    assert (await api.connect("after-the-top-up"))[0] == 200


async def test_a_charge_is_written_once_per_call_and_survives_a_restart(
    http: aiohttp.ClientSession, store_url: str
) -> None:
    settings = balance_settings(storage_url=store_url)
    services = await start_services(settings)
    try:
        api = Api(services, http)
        assert (await api.credit("acme", 2.0))[0] == 201
        assert (await api.connect("short-1"))[0] == 200
        session = services.manager.get("short-1")
        assert session is not None
        session.cost_usd = 0.25  # as the model's usage would have priced it
        services.manager.end("short-1", EndedBy.API)
        await asyncio.wait_for(session.ended.wait(), DEADLINE)
        await services.recorder.flush()
        record = await services.calls.record("acme", "short-1")
        assert record.is_terminal
        # A repeat of the final save by another process (its own memory) charges nothing more.
        balances = services.app[BALANCES]
        again = Balances(services.store, balances.directory).on_save(session, record)
        assert again is not None
        await services.store.save(record, also=again)
        rows = await ledger_rows(services, "acme")
        assert [(kind, amount) for kind, amount, _ in rows] == [("credit", 2.0), ("call", -0.25)]
        assert balances.balance("acme") == 1.75
    finally:
        await services.close()
    restarted = await start_services(settings)
    try:
        assert (await Api(restarted, http).balance(ACME_KEY))["balance_usd"] == 1.75
        assert restarted.app[BALANCES].balance("acme") == 1.75  # the cache admission reads, loaded
    finally:
        await restarted.close()
