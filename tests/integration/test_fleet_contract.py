"""What every Fleet promises, run against the embedded LocalFleet and the RedisFleet on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.cluster.base import (
    CallEntry,
    ClaimLimits,
    ClaimRefused,
    ControlRequest,
    Fleet,
    OwnerUnreachable,
)
from bridge.cluster.local import LocalFleet
from tests.integration.fleet_support import Node, Pool
from tests.services_redis import RedisDb

NO_LIMITS = ClaimLimits()


@pytest.fixture(params=["local", "redis"])
async def fleet(request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    if request.param == "local":
        node = Node("local")
        local = LocalFleet("local")
        await local.start(
            control=node.control, handed_over=node.on_handed_over, lost=node.on_lost, status=node.status
        )
        yield local
        await local.close()
        return
    db: RedisDb = request.getfixturevalue("redis_db")
    pool = Pool(db.url, db.prefix)
    redis_fleet, _ = await pool.start("node-a")
    yield redis_fleet
    await pool.close()


def entry(call_id: str, company: str = "acme", state: str = "pending") -> CallEntry:
    return CallEntry(
        call_id, company, "ignored", state, {"from": "+15550100", "tags": [], "nested": {"a": 1}}
    )


async def test_claim_registers_the_call_as_this_nodes(fleet: Fleet) -> None:
    await fleet.claim(entry("c1"), NO_LIMITS)
    found = await fleet.locate("c1")
    assert found == CallEntry(
        "c1", "acme", fleet.node_id, "pending", {"from": "+15550100", "tags": [], "nested": {"a": 1}}
    )
    assert await fleet.locate("nope") is None


async def test_a_live_call_id_cannot_be_claimed_twice(fleet: Fleet) -> None:
    await fleet.claim(entry("c1"), NO_LIMITS)
    with pytest.raises(ClaimRefused) as refused:
        await fleet.claim(entry("c1", company="other"), NO_LIMITS)
    assert refused.value.code == "duplicate_call"
    await fleet.release("c1")
    await fleet.claim(entry("c1"), NO_LIMITS)  # free again once released


async def test_fleet_cap_refuses_at_capacity(fleet: Fleet) -> None:
    limits = ClaimLimits(fleet_max_calls=2)
    await fleet.claim(entry("c1", "acme"), limits)
    await fleet.claim(entry("c2", "zeta"), limits)
    with pytest.raises(ClaimRefused) as refused:
        await fleet.claim(entry("c3", "zeta"), limits)
    assert refused.value.code == "at_capacity"
    await fleet.release("c1")
    await fleet.claim(entry("c3", "zeta"), limits)


async def test_company_cap_counts_only_that_companys_calls(fleet: Fleet) -> None:
    limits = ClaimLimits(company_max_live_calls=1)
    await fleet.claim(entry("c1", "acme"), limits)
    await fleet.claim(entry("c2", "zeta"), limits)
    with pytest.raises(ClaimRefused) as refused:
        await fleet.claim(entry("c3", "acme"), limits)
    assert refused.value.code == "too_many_calls"
    # The duplicate check comes first: a live id is a duplicate whatever the caps say.
    with pytest.raises(ClaimRefused) as duplicate:
        await fleet.claim(entry("c1", "acme"), limits)
    assert duplicate.value.code == "duplicate_call"


async def test_update_and_release_change_only_known_calls(fleet: Fleet) -> None:
    await fleet.claim(entry("c1"), NO_LIMITS)
    await fleet.update("c1", "active")
    found = await fleet.locate("c1")
    assert found is not None
    assert found.state == "active"
    await fleet.update("unknown", "active")
    await fleet.release("unknown")
    assert await fleet.locate("unknown") is None
    await fleet.release("c1")
    await fleet.release("c1")
    assert await fleet.locate("c1") is None


async def test_live_calls_fleet_wide_and_per_company(fleet: Fleet) -> None:
    for i, company in enumerate(["acme", "acme", "zeta"]):
        await fleet.claim(entry(f"c{i}", company), NO_LIMITS)
    assert await fleet.live_calls() == 3
    assert await fleet.live_calls("acme") == 2
    assert await fleet.live_calls("zeta") == 1
    assert await fleet.live_calls("nobody") == 0
    await fleet.release("c0")
    assert await fleet.live_calls("acme") == 1


async def test_take_pending_finds_no_other_node_for_its_own_calls(fleet: Fleet) -> None:
    await fleet.claim(entry("c1"), NO_LIMITS)
    assert await fleet.take_pending("c1") is None
    assert await fleet.take_pending("missing") is None


async def test_ask_reaches_this_node_and_no_unknown_one(fleet: Fleet) -> None:
    reply = await fleet.ask(fleet.node_id, ControlRequest("dtmf", "c1", "acme", {"digits": "12"}), 5.0)
    assert reply.status == 200
    assert reply.body["args"] == {"digits": "12"}
    with pytest.raises(OwnerUnreachable):
        await fleet.ask("node-unknown", ControlRequest("end", "c1", "acme"), 5.0)


async def test_nodes_lists_this_node_alive(fleet: Fleet) -> None:
    nodes = await fleet.nodes()
    assert [(n.node_id, n.alive, n.max_calls) for n in nodes] == [(fleet.node_id, True, 50)]


async def test_concurrent_claims_never_pass_the_caps(fleet: Fleet) -> None:
    limits = ClaimLimits(fleet_max_calls=5, company_max_live_calls=3)
    results = await asyncio.gather(
        *(fleet.claim(entry(f"c{i}", "acme" if i % 2 else "zeta"), limits) for i in range(20)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 5
    assert await fleet.live_calls() == 5
    assert await fleet.live_calls("acme") <= 3
    assert await fleet.live_calls("zeta") <= 3
