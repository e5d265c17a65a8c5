"""A fleet's rate limits in Redis (bridge/cluster/redis_limits.py): one bucket per key however its requests
spread over the nodes, the same verdicts as a node's own buckets, and a Redis outage falling back to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.cluster.redis_limits import RedisRateLimits, bucket_name
from bridge.companies.ratelimit import RateLimiter
from bridge.settings import build_settings
from tests.helpers import ACME_KEY, free_port, raw_config
from tests.services_redis import RedisDb


@pytest.fixture
async def nodes(redis_db: RedisDb) -> AsyncIterator[list[RedisRateLimits]]:
    made = [RedisRateLimits(redis_db.url, prefix=redis_db.prefix, window_seconds=60) for _ in range(3)]
    yield made
    for limits in made:
        await limits.close()


def test_bucket_names_keep_kinds_apart_and_show_no_key() -> None:
    digest = bytes(range(4))
    assert bucket_name(("company", digest)) == "company:00010203"
    assert bucket_name(("address", "127.0.0.1")) == "address:127.0.0.1"
    assert bucket_name(("admin", digest)) != bucket_name(("company", digest))


async def test_one_bucket_across_nodes_with_the_local_verdicts(nodes: list[RedisRateLimits]) -> None:
    bucket = ("company", b"\x01" * 32)
    local = RateLimiter(clock=lambda: 100.0)  # a frozen clock: the same bucket, never refilling
    verdicts = [await nodes[i % 3].hit(bucket, 5) for i in range(6)]
    expected = [local.hit(bucket, 5) for _ in range(6)]
    assert [v is not None and v.allowed for v in verdicts] == [True] * 5 + [False]
    assert [v.remaining for v in verdicts if v] == [e.remaining for e in expected]
    refused = verdicts[-1]
    assert refused is not None
    assert (refused.limit, refused.retry_after_seconds) == (5, 12)  # one token per 12 s at 5 a minute
    peeked = await nodes[1].peek(bucket, 5)
    assert peeked is not None
    assert not peeked.allowed
    assert (await nodes[2].peek(("company", b"\x02" * 32), 5)).allowed  # type: ignore[union-attr]


async def test_a_burst_from_many_nodes_takes_exactly_the_limit(nodes: list[RedisRateLimits]) -> None:
    verdicts = await asyncio.gather(*(nodes[i % 3].hit(("address", "10.0.0.9"), 20) for i in range(60)))
    assert sum(1 for v in verdicts if v is not None and v.allowed) == 20


async def test_a_short_window_refills(redis_db: RedisDb) -> None:
    limits = RedisRateLimits(redis_db.url, prefix=redis_db.prefix, window_seconds=0.5)
    try:
        assert (await limits.hit(("k", "x"), 1)).allowed  # type: ignore[union-attr]
        assert not (await limits.hit(("k", "x"), 1)).allowed  # type: ignore[union-attr]
        await asyncio.sleep(0.7)
        assert (await limits.hit(("k", "x"), 1)).allowed  # type: ignore[union-attr]
        zero = await limits.hit(("k", "zero"), 0)
        assert zero is not None
        assert (zero.allowed, zero.limit) == (False, 0)
    finally:
        await limits.close()


async def test_no_redis_answers_none_so_the_node_counts_alone() -> None:
    limits = RedisRateLimits(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.2)
    try:
        assert await limits.hit(("company", b"k"), 5) is None
        assert await limits.peek(("company", b"k"), 5) is None
    finally:
        await limits.close()


async def _node(redis_url: str, rpm: int) -> Services:
    raw: dict[str, Any] = raw_config()
    raw["cluster"] = {"redis_url": redis_url, "node_id": f"n{free_port()}"}
    raw["companies"][0]["limits"] = {"requests_per_minute": rpm}
    return await start_services(build_settings(raw))


async def test_a_key_spread_over_two_daemons_meets_one_limit(redis_db: RedisDb) -> None:
    first = await _node(redis_db.url, 4)
    second = await _node(redis_db.url, 4)
    try:
        statuses: list[int] = []
        remaining: list[str] = []
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                node = (first, second)[i % 2]
                url = f"http://127.0.0.1:{node.http_port}/api/phones"
                async with http.get(url, headers={"X-API-Key": ACME_KEY}) as reply:
                    statuses.append(reply.status)
                    remaining.append(reply.headers["X-RateLimit-Remaining"])
                    if reply.status == 429:
                        assert int(reply.headers["Retry-After"]) >= 1
        assert statuses == [200, 200, 200, 200, 429]
        assert remaining == ["3", "2", "1", "0", "0"]
    finally:
        await first.close()
        await second.close()
