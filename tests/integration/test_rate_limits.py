"""Rate limits on the live daemon (real loopback HTTP): per-key buckets with X-RateLimit-* headers on
every answer, 429 rate_limited with Retry-After past the limit, failed authentications per client
address, and the per-company live-call cap (429 too_many_calls) on the connect webhook.

The limiter's clock is frozen for each test, so no bucket refills while it runs however slow the
machine: nothing here depends on timing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.api.ratelimits import RATE_LIMITER
from bridge.app import Services, start_services
from bridge.settings import build_settings
from tests.helpers import ACME_KEY, ACME_KEY_2, ACME_PHONE, ADMIN_KEY, CONNECTOR_KEY, GLOBEX_KEY, raw_config

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


class Daemon:
    def __init__(self, services: Services, http: aiohttp.ClientSession) -> None:
        self.services = services
        self.http = http
        self.base = f"http://127.0.0.1:{services.http_port}"

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
    ) -> tuple[int, dict[str, str], Any]:
        async with self.http.request(method, self.base + path, headers=headers or {}, json=body) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)


def frozen_clock(services: Services) -> None:
    services.app[RATE_LIMITER].clock = lambda: 5000.0


@pytest.fixture
async def daemon() -> AsyncIterator[Daemon]:
    raw = raw_config()
    raw["companies"][0]["limits"] = {"requests_per_minute": 3, "max_live_calls": 1}
    raw["rate_limits"] = {"failed_auths_per_address": 4, "admin_requests_per_minute": 2}
    services = await start_services(build_settings(raw))
    frozen_clock(services)
    async with aiohttp.ClientSession() as http:
        yield Daemon(services, http)
    await services.close()


def limit_headers(headers: dict[str, str]) -> tuple[int, int, int]:
    return tuple(int(headers[name]) for name in HEADERS)  # type: ignore[return-value]


async def test_every_answer_carries_the_headers_and_429_comes_past_the_limit(daemon: Daemon) -> None:
    key = {"X-API-Key": ACME_KEY}
    ok = await daemon.request("GET", "/api/phones", key)
    missing = await daemon.request("GET", "/api/calls/no-such-call", key)
    bad = await daemon.request("POST", "/api/calls/no-such-call/say", key, body={"nope": 1})
    assert [ok[0], missing[0], bad[0]] == [200, 404, 400]
    assert [limit_headers(answer[1])[:2] for answer in (ok, missing, bad)] == [(3, 2), (3, 1), (3, 0)]
    assert limit_headers(bad[1])[2] == 60  # seconds until the bucket is full again
    status, headers, body = await daemon.request("GET", "/api/phones", key)
    assert status == 429
    assert body == {"success": False, "error": body["error"], "code": "rate_limited"}
    assert int(headers["Retry-After"]) == 20  # 3 a minute: the next request in 20 s
    assert limit_headers(headers)[:2] == (3, 0)
    # The key's own bucket: the company's second key and another company are not affected.
    other_key = await daemon.request("GET", "/api/phones", {"Authorization": f"Bearer {ACME_KEY_2}"})
    assert (other_key[0], limit_headers(other_key[1])[:2]) == (200, (3, 2))
    globex = await daemon.request("GET", "/api/phones", {"X-API-Key": GLOBEX_KEY})
    assert (globex[0], limit_headers(globex[1])[:2]) == (200, (1000, 999))
    # ?api_key= counts against the same key's bucket as the header.
    query = await daemon.request("GET", f"/api/phones?api_key={ACME_KEY}")
    assert query[0] == 429


async def test_keyless_routes_and_the_connector_carry_headers_too(daemon: Daemon) -> None:
    health = await daemon.request("GET", "/health")
    unknown = await daemon.request("GET", "/nowhere")
    assert (health[0], unknown[0]) == (200, 404)
    assert limit_headers(health[1])[0] == 1200
    assert limit_headers(unknown[1])[1] == 1198
    terminate = {"callId": "x-1", "event": "terminate", "b_number": ACME_PHONE}
    hook = await daemon.request(
        "POST", "/api/voip/webhook", {"x-connector-api-key": CONNECTOR_KEY}, terminate
    )
    assert limit_headers(hook[1])[:2] == (6000, 5999)


async def test_failed_authentications_are_limited_per_address(daemon: Daemon) -> None:
    for attempt in range(4):
        status, headers, body = await daemon.request("GET", "/api/phones", {"X-API-Key": f"guess-{attempt}"})
        assert (status, body["code"]) == (401, "unauthorized")
        assert limit_headers(headers)[:2] == (4, 3 - attempt)
    # Spent: refused before any key is checked, even a valid one, so guessing cannot go on.
    status, headers, body = await daemon.request("GET", "/api/phones", {"X-API-Key": ACME_KEY})
    assert (status, body["code"]) == (429, "rate_limited")
    assert int(headers["Retry-After"]) == 15
    terminate = {"callId": "x-1", "event": "terminate", "b_number": ACME_PHONE}
    hook = await daemon.request(
        "POST", "/api/voip/webhook", {"x-connector-api-key": CONNECTOR_KEY}, terminate
    )
    assert hook[0] == 429  # every keyed route: the connector's too
    # Keyless routes still answer (the load balancer's health probe shares the address).
    assert (await daemon.request("GET", "/health"))[0] == 200


async def test_max_live_calls_answers_429_too_many_calls(daemon: Daemon) -> None:
    connector = {"x-connector-api-key": CONNECTOR_KEY}

    def connect(call_id: str) -> dict[str, str]:
        return {
            "callId": call_id,
            "event": "connect",
            "callerPhone": "+34600111222",
            "b_number": ACME_PHONE,
            "websocketUrl": "ws://127.0.0.1/x",
        }

    assert (await daemon.request("POST", "/api/voip/webhook", connector, connect("cap-1")))[0] == 200
    status, headers, body = await daemon.request("POST", "/api/voip/webhook", connector, connect("cap-2"))
    assert (status, body["code"]) == (429, "too_many_calls")
    assert int(headers["Retry-After"]) > 0
    terminate = {"callId": "cap-1", "event": "terminate", "b_number": ACME_PHONE}
    assert (await daemon.request("POST", "/api/voip/webhook", connector, terminate))[0] == 200
    for _ in range(200):
        if daemon.services.manager.get("cap-1") is None:
            break
        await asyncio.sleep(0.01)
    assert (await daemon.request("POST", "/api/voip/webhook", connector, connect("cap-3")))[0] == 200


async def test_admin_keys_have_their_own_bucket(daemon: Daemon) -> None:
    admin = {"X-Admin-Key": ADMIN_KEY}
    answers = [await daemon.request("GET", "/api/admin/companies", admin) for _ in range(3)]
    assert [status for status, _h, _b in answers] == [200, 200, 429]
    assert [limit_headers(headers)[:2] for _s, headers, _b in answers] == [(2, 1), (2, 0), (2, 0)]
    # A company key there is a failed authentication (counted per address), not an admin request.
    status, headers, _body = await daemon.request("GET", "/api/admin/companies", {"X-Admin-Key": ACME_KEY})
    assert (status, limit_headers(headers)[:2]) == (401, (4, 3))
