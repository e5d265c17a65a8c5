"""Several RedisFleet nodes on one private Redis: hand-over of pending calls, control across nodes,
caps under concurrent claims, lost nodes reaped once, restarts of a node and of Redis itself."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from bridge.cluster.base import (
    CallEntry,
    ClaimLimits,
    ClaimRefused,
    ClusterUnavailable,
    ControlRequest,
    OwnerUnreachable,
)
from bridge.cluster.redis import RedisFleet
from tests.integration.fleet_support import HEARTBEAT, TTL, WAIT, Pool, eventually, eventually_true
from tests.services_redis import RedisDb, RedisServer


@pytest.fixture
async def pool(redis_db: RedisDb) -> AsyncIterator[Pool]:
    nodes = Pool(redis_db.url, redis_db.prefix)
    yield nodes
    await nodes.close()


async def located(fleet: RedisFleet, call_id: str, node_id: str) -> bool:
    found = await fleet.locate(call_id)
    return found is not None and found.node_id == node_id


def pending(call_id: str, company: str = "acme", state: str = "pending") -> CallEntry:
    return CallEntry(call_id, company, "", state, {"direction": "outbound", "to": "+15550100"})


async def test_one_of_two_racing_nodes_takes_a_pending_call(pool: Pool) -> None:
    a, node_a = await pool.start("node-a")
    b, _ = await pool.start("node-b")
    c, _ = await pool.start("node-c")
    await a.claim(pending("p1", state="dialing"), ClaimLimits())
    taken = await asyncio.gather(b.take_pending("p1"), c.take_pending("p1"))
    winners = [t for t in taken if t is not None]
    assert len(winners) == 1
    winner = winners[0]
    assert winner.node_id in {"node-b", "node-c"}
    assert winner.info == {"direction": "outbound", "to": "+15550100"}
    assert await a.locate("p1") == winner
    await eventually(lambda: node_a.handed_over == ["p1"])
    # Now the winner's: the old owner can neither update nor release it.
    await a.update("p1", "active")
    await a.release("p1")
    assert await b.locate("p1") == winner
    assert await b.live_calls("acme") == 1


async def test_an_answered_call_is_never_taken_over(pool: Pool) -> None:
    a, _ = await pool.start("node-a")
    b, _ = await pool.start("node-b")
    await a.claim(pending("p1"), ClaimLimits())
    await a.update("p1", "active")
    assert await b.take_pending("p1") is None
    found = await b.locate("p1")
    assert found is not None
    assert found.node_id == "node-a"


async def test_control_requests_reach_the_owner_and_come_back(pool: Pool) -> None:
    _, node_a = await pool.start("node-a")
    c, _ = await pool.start("node-c")
    request = ControlRequest("transfer", "p1", "acme", {"to": "sip:desk@pbx", "n": [1, 2]})
    reply = await c.ask("node-a", request, 5.0)
    assert reply.status == 200
    assert reply.body == {"node": "node-a", "op": "transfer", "args": {"to": "sip:desk@pbx", "n": [1, 2]}}
    assert node_a.requests == [request]


async def test_a_failing_handler_answers_500_without_its_text(pool: Pool) -> None:
    _, node_a = await pool.start("node-a")
    c, _ = await pool.start("node-c")
    node_a.control_raises = True
    reply = await c.ask("node-a", ControlRequest("end", "p1", "acme"), 5.0)
    assert (reply.status, reply.code) == (500, "internal_error")
    assert "secret" not in reply.message
    assert "Traceback" not in reply.message


async def test_a_silent_owner_times_out_and_a_closed_one_is_unreachable(pool: Pool) -> None:
    a, node_a = await pool.start("node-a")
    c, _ = await pool.start("node-c")
    node_a.control_gate.clear()  # the handler hangs
    with pytest.raises(OwnerUnreachable, match="in time"):
        await c.ask("node-a", ControlRequest("say", "p1", "acme", {"text": "hi"}), 0.3)
    node_a.control_gate.set()
    await a.close()
    with pytest.raises(OwnerUnreachable, match="not alive"):
        await c.ask("node-a", ControlRequest("say", "p1", "acme"), WAIT)
    assert [n.node_id for n in await c.nodes()] == ["node-c"]


async def test_malformed_bus_messages_are_dropped_and_logged_once(pool: Pool, redis_db: RedisDb) -> None:
    await pool.start("node-a")
    c, _ = await pool.start("node-c")
    client = aioredis.Redis.from_url(redis_db.url)
    try:
        with capture_logs() as logs:
            for raw in [b"{not json", b"{not json", b'{"v": 9}', b'{"v":1,"type":"request","id":"x"}']:
                assert await client.publish(f"{redis_db.prefix}:bus:node-a", raw) == 1
            reply = await c.ask("node-a", ControlRequest("dtmf", "p1", "acme", {"digits": "#"}), 5.0)
    finally:
        await client.aclose()
    assert reply.status == 200
    malformed = [e for e in logs if e["event"] == "fleet_bus_malformed"]
    assert sorted(e["reason"] for e in malformed) == [
        "not JSON",
        "reply_to is not a string",
        "unknown version",
    ]
    assert all("not json" not in str(e) for e in malformed)


async def test_concurrent_claims_from_three_nodes_hold_both_caps(pool: Pool) -> None:
    fleets = [(await pool.start(f"node-{n}"))[0] for n in "abc"]
    fleet_cap = ClaimLimits(fleet_max_calls=12)
    burst = [fleets[i % 3].claim(pending(f"f{i}", company=f"co{i % 4}"), fleet_cap) for i in range(60)]
    results = await asyncio.gather(*burst, return_exceptions=True)
    assert sum(r is None for r in results) == 12
    assert {r.code for r in results if isinstance(r, ClaimRefused)} == {"at_capacity"}
    assert all(r is None or isinstance(r, ClaimRefused) for r in results)
    assert await fleets[0].live_calls() == 12

    company_cap = ClaimLimits(company_max_live_calls=5)
    burst = [fleets[i % 3].claim(pending(f"k{i}", company="busy"), company_cap) for i in range(30)]
    results = await asyncio.gather(*burst, return_exceptions=True)
    assert sum(r is None for r in results) == 5
    assert {r.code for r in results if isinstance(r, ClaimRefused)} == {"too_many_calls"}
    assert await fleets[1].live_calls("busy") == 5
    assert await fleets[2].live_calls() == 17


async def test_a_crashed_node_is_reaped_once_by_one_survivor(pool: Pool) -> None:
    a, _ = await pool.start("node-a")
    b, node_b = await pool.start("node-b")
    c, node_c = await pool.start("node-c")
    for i in range(3):
        await a.claim(pending(f"a{i}", state="active"), ClaimLimits())
    await b.claim(pending("b0", state="active"), ClaimLimits())
    crashed = time.monotonic()
    await a.abandon()
    await eventually(lambda: len(node_b.lost) + len(node_c.lost) == 1)
    elapsed = time.monotonic() - crashed
    assert elapsed < TTL + WAIT  # the TTL plus a bound a loaded machine always meets
    await asyncio.sleep(TTL)  # several more beats: nobody is told twice
    told = node_b.lost + node_c.lost
    assert len(told) == 1
    lost_node, entries = told[0]
    assert lost_node == "node-a"
    assert sorted(e.call_id for e in entries) == ["a0", "a1", "a2"]
    assert {(e.node_id, e.state, e.company_id) for e in entries} == {("node-a", "active", "acme")}
    assert await b.locate("a0") is None
    assert await c.live_calls() == 1
    assert await c.locate("b0") is not None
    assert sorted(n.node_id for n in await c.nodes()) == ["node-b", "node-c"]


async def test_a_failing_lost_handler_is_retried_and_the_calls_stay_until_it_succeeds(pool: Pool) -> None:
    a, _ = await pool.start("node-a")
    b, node_b = await pool.start("node-b")
    await a.claim(pending("a0", state="active"), ClaimLimits())
    node_b.fail_lost = 1
    node_b.release_lost.clear()  # hold the first attempt to look at the registry meanwhile
    await a.abandon()
    await eventually(lambda: node_b.lost_attempts == 1)
    [status_a] = [n for n in await b.nodes() if n.node_id == "node-a"]
    assert status_a.alive is False
    assert await b.live_calls() == 1  # the lost node's call is still registered until reaped
    located_a0 = await b.locate("a0")  # still there, under its lost node: asking it fails (503)
    assert located_a0 is not None
    assert located_a0.node_id == "node-a"
    with pytest.raises(OwnerUnreachable):
        await b.ask("node-a", ControlRequest("end", "a0", "acme"), 1.0)
    node_b.release_lost.set()
    await eventually(lambda: len(node_b.lost) == 1)
    assert node_b.lost_attempts == 2
    assert [e.call_id for e in node_b.lost[0][1]] == ["a0"]
    await eventually(lambda: True)
    assert await b.live_calls() == 0


async def test_a_node_restarting_within_the_ttl_settles_its_own_calls(pool: Pool) -> None:
    a, _ = await pool.start("node-a", node_ttl_seconds=30.0)
    b, node_b = await pool.start("node-b")
    await a.claim(pending("a0", state="active"), ClaimLimits())
    await a.claim(pending("a1", company="zeta"), ClaimLimits())
    await a.abandon()
    again, node_again = await pool.start("node-a", node_ttl_seconds=30.0)
    assert [(n, sorted(e.call_id for e in es)) for n, es in node_again.lost] == [("node-a", ["a0", "a1"])]
    assert await again.live_calls() == 0
    await again.claim(pending("a0"), ClaimLimits())  # the id is free again
    await asyncio.sleep(TTL)
    assert node_b.lost == []
    assert {n.node_id: n.alive for n in await b.nodes()} == {"node-a": True, "node-b": True}


async def test_a_closed_node_leaves_nothing_behind(pool: Pool) -> None:
    a, _ = await pool.start("node-a")
    b, node_b = await pool.start("node-b")
    await a.claim(pending("a0"), ClaimLimits())
    await a.close()
    assert await b.live_calls() == 0
    assert [n.node_id for n in await b.nodes()] == ["node-b"]
    await asyncio.sleep(TTL)
    assert node_b.lost == []


async def test_the_fleet_survives_a_redis_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = RedisServer(tmp_path_factory.mktemp("redis-restart"))
    server.start()
    pool = Pool(server.url(0), "restart")
    try:
        a, _ = await pool.start("node-a")
        b, _ = await pool.start("node-b")
        await a.claim(pending("a0", state="active"), ClaimLimits())
        await a.claim(pending("a1", company="zeta", state="active"), ClaimLimits())
        assert (await b.ask("node-a", ControlRequest("dtmf", "a0", "acme"), 5.0)).status == 200
        server.stop()
        with pytest.raises(ClusterUnavailable):
            await b.claim(pending("b0"), ClaimLimits())
        with pytest.raises(OwnerUnreachable):
            await b.ask("node-a", ControlRequest("dtmf", "a0", "acme"), 1.0)
        await a.update("a0", "ending")  # the live call goes on: neither raises
        await a.release("a0")
        await asyncio.sleep(3 * 0.2)
        server.start()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                reply = await b.ask("node-a", ControlRequest("dtmf", "a0", "acme"), 1.0)
                break
            except OwnerUnreachable:
                assert time.monotonic() < deadline, "the bus did not come back"
                await asyncio.sleep(0.1)
        assert reply.status == 200
        # Redis came back empty: node-a writes its live call back, the released one stays gone.
        await eventually_true(lambda: located(b, "a1", "node-a"))
        await b.claim(pending("b0"), ClaimLimits())
        assert await a.live_calls() == 2
        assert await a.live_calls("zeta") == 1
        assert await b.locate("a0") is None
    finally:
        await pool.close()
        server.stop()


async def test_a_node_that_cannot_reach_redis_does_not_start(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    nowhere = RedisServer(tmp_path_factory.mktemp("redis-absent"))  # never started: nothing listens
    pool = Pool(nowhere.url(0), "absent")
    with pytest.raises(ClusterUnavailable):
        await pool.start("node-a")
    await pool.close()


async def test_a_burst_wider_than_the_connection_pool_waits_instead_of_failing(pool: Pool) -> None:
    a, _ = await pool.start("node-a")
    await asyncio.gather(*(a.claim(pending(f"c{i}"), ClaimLimits()) for i in range(500)))
    assert await a.live_calls("acme") == 500


async def test_a_crashed_owner_still_within_its_ttl_is_unreachable_at_once(pool: Pool) -> None:
    a, _ = await pool.start("node-a", node_ttl_seconds=30.0)
    c, _ = await pool.start("node-c")
    await a.abandon()  # its liveness key outlives it, but nobody listens on its channel
    with pytest.raises(OwnerUnreachable, match="not listening"):
        await c.ask("node-a", ControlRequest("end", "p1", "acme"), WAIT)


async def test_a_failing_status_reader_costs_one_beat_not_the_node(pool: Pool) -> None:
    a, node_a = await pool.start("node-a")
    b, node_b = await pool.start("node-b")
    node_a.status_raises = True
    await asyncio.sleep(2 * HEARTBEAT)
    node_a.status_raises = False
    await asyncio.sleep(TTL + 2 * HEARTBEAT)  # had its heartbeat ended, node-a would be lost by now
    assert node_b.lost == []
    assert {n.node_id: n.alive for n in await b.nodes()} == {"node-a": True, "node-b": True}
    await a.claim(pending("a0"), ClaimLimits())
