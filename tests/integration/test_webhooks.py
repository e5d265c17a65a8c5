"""Outbound webhooks: signed events from a durable outbox, retried while the receiver is down, in order
per call, exactly once per delivery id; the key mapper; the API's settings, deliveries and retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.app import Services
from bridge.session.state import CallState, EndedBy
from bridge.settings import ConfigError, Settings, build_settings
from bridge.simulate import AudioSource, SimulatedCallOptions, run_simulated_call
from tests.fakes.chat_completions import FakeChatCompletions
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, GLOBEX_KEY, raw_config
from tests.integration.webhook_support import Receiver, verify_bridge_signature

StartBridge = Callable[..., Any]
DEADLINE = 30.0
SECRET = "whsec-acme-0123456789abcdef"
KEY_MAP = {
    "crm_duration": "{{call.duration_seconds}}",
    "crm_note": "{{call.caller_id}} said {{call.summary}}",
    "crm_lines": "{{call.transcript}}",
    "crm_resolved": "{{call.post_call_analysis.resolved}}",
}
FAST = {"retry_base_seconds": 0.05, "retry_max_seconds": 0.2, "poll_seconds": 0.05}


def hook_settings(
    receiver: Receiver, *, delivery: dict[str, Any] | None = None, storage: str = "", **acme: Any
) -> Settings:
    raw = raw_config()
    if storage:
        raw["storage"] = {"url": storage}
    raw["companies"][0]["webhooks"] = {"url": receiver.url, "secret": SECRET, "key_map": KEY_MAP}
    raw["companies"][0].update(acme)
    raw["webhook_delivery"] = {**FAST, **(delivery or {})}
    return build_settings(raw)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver(SECRET)
    await server.start()
    yield server
    await server.close()


async def a_call(services: Services, call_id: str) -> None:
    """A short echo call with two transcript lines, ended through the API."""
    options = SimulatedCallOptions(
        url=f"http://127.0.0.1:{services.http_port}",
        connector_key=CONNECTOR_KEY,
        call_id=call_id,
        caller="+34600111222",
        called=ACME_PHONE,
        send_webhook=False,
        format="ulaw",
        audio=AudioSource(pcm=b"\x00\x00" * 8000, sample_rate=8000),
        seconds=30,
        wait_for_bridge_hangup=True,
    )
    call = asyncio.ensure_future(run_simulated_call(options))
    deadline = time.monotonic() + DEADLINE
    while (session := services.manager.get(call_id)) is None or session.state is not CallState.ACTIVE:
        assert time.monotonic() < deadline, "the call never became active"
        await asyncio.sleep(0.02)
    session.add_line("bot", "Hello, Acme here.")
    session.add_line("caller", "When do you open tomorrow?")
    services.manager.end(call_id, EndedBy.API)
    await asyncio.wait_for(call, DEADLINE)


async def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return result


async def api(
    services: Services, method: str, path: str, key: str = ACME_KEY, body: Any = None
) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(
            method, f"http://127.0.0.1:{services.http_port}{path}", json=body, headers={"X-API-Key": key}
        ) as reply,
    ):
        return reply.status, await reply.json()


async def test_signed_events_verify_with_the_readme_recipe_and_carry_the_mapped_fields(
    bridge_factory: StartBridge, receiver: Receiver, store_url: str
) -> None:
    services = await bridge_factory(settings=hook_settings(receiver, storage=store_url))
    await a_call(services, "wh-1")
    await until(lambda: len(receiver.types("wh-1")) == 2, "both events")
    assert receiver.types("wh-1") == ["call_started", "call_completed"]
    for hit in receiver.accepted:
        assert verify_bridge_signature(SECRET, hit.signature, hit.raw)
        assert not verify_bridge_signature("another-secret", hit.signature, hit.raw)
        assert not verify_bridge_signature(SECRET, hit.signature, hit.raw + b" ")
        assert hit.delivery_id.startswith("dlv_")
        assert set(hit.body) >= {"id", "type", "created_at", "call_id", "data"}
    # A timestamp older than five minutes is refused even with a correct MAC.
    old = int(time.time()) - 301
    from bridge.integrations.signing import signature_header

    stale = signature_header(SECRET, old, receiver.accepted[0].raw)
    assert not verify_bridge_signature(SECRET, stale, receiver.accepted[0].raw)
    completed = receiver.accepted[1].body
    data = completed["data"]
    assert data["session_id"] == data["call_id"] == "wh-1"
    assert data["caller_id"] == "+34600111222"
    assert data["status"] == "ended"
    assert data["disconnected_by"] == "api"
    assert data["call_duration_seconds"] > 0
    assert [(line["role"], line["text"]) for line in data["transcript"]] == [
        ("bot", "Hello, Acme here."),
        ("caller", "When do you open tomorrow?"),
    ]
    assert data["recording_url"] is None
    assert data["post_call_analysis"] is None
    # The key mapper: one placeholder keeps its JSON type, text is substituted as text.
    assert completed["mapped"] == {
        "crm_duration": data["call_duration_seconds"],
        "crm_note": "+34600111222 said ",
        "crm_lines": data["transcript"],
        "crm_resolved": None,
    }
    assert "mapped" not in receiver.accepted[0].body
    # Once each: two events, two delivery ids.
    assert len({hit.delivery_id for hit in receiver.hits}) == 2


async def test_a_receiver_down_for_several_attempts_gets_every_event_once_in_order(
    bridge_factory: StartBridge, receiver: Receiver, store_url: str
) -> None:
    receiver.down_for = 7
    services = await bridge_factory(settings=hook_settings(receiver, storage=store_url))
    await asyncio.gather(a_call(services, "down-1"), a_call(services, "down-2"))
    await until(lambda: len(receiver.accepted) == 4, "four accepted events")
    await asyncio.sleep(0.5)  # nothing more arrives: no duplicate after success
    assert len(receiver.accepted) == 4
    accepted_ids = [hit.delivery_id for hit in receiver.accepted]
    assert len(set(accepted_ids)) == 4
    for call_id in ("down-1", "down-2"):
        assert receiver.types(call_id) == ["call_started", "call_completed"]
        # In order per call: no completed was even tried before its started was accepted.
        tried = [hit for hit in receiver.hits if hit.body["call_id"] == call_id]
        first_completed = next(i for i, hit in enumerate(tried) if hit.body["type"] == "call_completed")
        assert any(hit.status == 200 for hit in tried[:first_completed])
    # A retry is the same delivery: same id, same body bytes.
    by_id: dict[str, set[bytes]] = {}
    for hit in receiver.hits:
        by_id.setdefault(hit.delivery_id, set()).add(hit.raw)
    assert all(len(bodies) == 1 for bodies in by_id.values())
    assert sum(1 for hit in receiver.hits if hit.status == 503) == 7
    status, reply = await api(services, "GET", "/api/webhooks/deliveries?status=delivered")
    assert status == 200
    listed = reply["data"]["deliveries"]
    assert {d["id"] for d in listed} == set(accepted_ids)
    assert sum(d["attempts"] for d in listed) == 4 + 7
    assert reply["data"]["pagination"]["total"] == 4


async def test_dead_letters_are_listed_and_retried_and_other_companies_get_404(
    bridge_factory: StartBridge, receiver: Receiver, store_url: str
) -> None:
    receiver.down_for = 1_000_000
    services = await bridge_factory(
        settings=hook_settings(receiver, delivery={"retry_for_seconds": 0.3}, storage=store_url)
    )
    await a_call(services, "dead-1")

    async def dead() -> list[dict[str, Any]]:
        status, reply = await api(services, "GET", "/api/webhooks/deliveries?status=dead&call_id=dead-1")
        assert status == 200
        return list(reply["data"]["deliveries"])

    deadline = time.monotonic() + DEADLINE
    while len(letters := await dead()) < 2:
        assert time.monotonic() < deadline, letters
        await asyncio.sleep(0.1)
    assert {d["type"] for d in letters} == {"call_started", "call_completed"}
    assert all(d["last_status"] == 503 and d["attempts"] >= 1 for d in letters)
    assert all(d["next_attempt_at"] is None for d in letters)
    # Paging.
    status, reply = await api(services, "GET", "/api/webhooks/deliveries?limit=1&offset=1")
    assert status == 200
    assert len(reply["data"]["deliveries"]) == 1
    assert reply["data"]["pagination"] == {"total": 2, "limit": 1, "offset": 1}
    # Another company: its list is empty, and the delivery is 404 exactly like an unknown one.
    status, reply = await api(services, "GET", "/api/webhooks/deliveries", GLOBEX_KEY)
    assert (status, reply["data"]["deliveries"]) == (200, [])
    target = next(d for d in letters if d["type"] == "call_started")
    status, reply = await api(services, "POST", f"/api/webhooks/deliveries/{target['id']}/retry", GLOBEX_KEY)
    assert (status, reply["code"]) == (404, "delivery_not_found")
    status, reply = await api(services, "POST", "/api/webhooks/deliveries/dlv_nope/retry", GLOBEX_KEY)
    assert (status, reply["code"]) == (404, "delivery_not_found")
    # The receiver is back: a retry goes now and is delivered once.
    receiver.down_for = 0
    status, reply = await api(services, "POST", f"/api/webhooks/deliveries/{target['id']}/retry")
    assert status == 200, reply
    assert reply["data"]["delivery"]["status"] in ("pending", "delivered")
    await until(
        lambda: [h for h in receiver.accepted if h.delivery_id == target["id"]], "the retried delivery"
    )
    status, reply = await api(services, "POST", f"/api/webhooks/deliveries/{target['id']}/retry")
    assert (status, reply["code"]) == (409, "already_delivered")


async def test_settings_through_the_api_win_and_the_secret_is_write_only(
    bridge_factory: StartBridge, receiver: Receiver
) -> None:
    services = await bridge_factory(settings=hook_settings(receiver))
    status, reply = await api(services, "GET", "/api/webhooks")
    assert status == 200
    assert reply["data"]["source"] == "config"
    assert reply["data"]["url"] == receiver.url
    assert SECRET not in str(reply)
    assert reply["data"]["secret_set"] is True
    other = Receiver("whsec-other-0123456789abcdef", path="/other")
    await other.start()
    try:
        bad = {"url": other.url, "key_map": {"x": "{{call.nope}}"}}
        status, reply = await api(services, "PUT", "/api/webhooks", body=bad)
        assert (status, reply["code"]) == (400, "unknown_placeholder")
        assert "call.nope" in reply["error"]
        body = {
            "url": other.url,
            "secret": other.secret,
            "events": ["call_completed"],
            "key_map": {"minutes": "{{call.duration_seconds}}"},
        }
        status, reply = await api(services, "PUT", "/api/webhooks", body=body)
        assert status == 200, reply
        assert reply["data"]["source"] == "api"
        assert other.secret not in str(reply)
        assert reply["data"]["secret"].startswith("****")
        # Globex's settings are its own.
        status, reply = await api(services, "GET", "/api/webhooks", GLOBEX_KEY)
        assert (reply["data"]["url"], reply["data"]["source"]) == ("", "config")
        await a_call(services, "api-1")
        await until(lambda: other.types("api-1") == ["call_completed"], "the event at the new url")
        hit = other.accepted[0]
        assert verify_bridge_signature(other.secret, hit.signature, hit.raw)
        assert set(hit.body["mapped"]) == {"minutes"}
        assert receiver.hits == []
        # DELETE: the config's settings apply again.
        status, reply = await api(services, "DELETE", "/api/webhooks")
        assert (status, reply["data"]["source"]) == (200, "config")
    finally:
        await other.close()


async def test_call_completed_waits_for_the_report_and_carries_it(
    bridge_factory: StartBridge, receiver: Receiver
) -> None:
    fake = FakeChatCompletions(values={"resolved": True})
    await fake.start()
    try:
        raw = raw_config()
        raw["companies"][0]["webhooks"] = {"url": receiver.url, "secret": SECRET, "key_map": KEY_MAP}
        raw["companies"][0]["agent"] = {
            "provider": "echo",
            "analysis_prompt": "Summarise.",
            "analysis_fields": {"resolved": "boolean"},
        }
        raw["analysis"] = {"url": fake.url, "api_key": fake.api_key, "model": "gpt-4o-mini"}
        raw["webhook_delivery"] = FAST
        services = await bridge_factory(settings=build_settings(raw))
        await a_call(services, "rep-wh")
        await until(lambda: len(receiver.types("rep-wh")) == 2, "both events")
        completed = receiver.accepted[1].body
        assert completed["type"] == "call_completed"
        assert completed["data"]["summary"] == fake.summary
        assert completed["data"]["post_call_analysis"] == {"resolved": True}
        assert completed["mapped"]["crm_resolved"] is True
        assert completed["mapped"]["crm_note"] == f"+34600111222 said {fake.summary}"
    finally:
        await fake.close()


def test_unknown_key_map_names_and_an_unset_secret_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = raw_config()
    raw["companies"][0]["webhooks"] = {
        "url": "https://crm.example/h",
        "secret": "x",
        "key_map": {"a": "{{call.x}}"},
    }
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert "call.x" in str(info.value.problems)
    monkeypatch.delenv("WH_SECRET_UNSET", raising=False)
    raw["companies"][0]["webhooks"] = {"url": "https://crm.example/h", "secret": "env:WH_SECRET_UNSET"}
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert "WH_SECRET_UNSET" in str(info.value.problems)
