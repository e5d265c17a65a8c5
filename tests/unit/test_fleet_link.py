"""The session layer's side of the fleet over the embedded LocalFleet: claims mapped to the API's refusals,
the owner's answers to routed control, a pending call handed off without a trace, and the records a
survivor writes for a lost node's calls (on SQLite and PostgreSQL, idempotent)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

from bridge.cluster.base import CallEntry, ControlRequest
from bridge.cluster.local import LocalFleet
from bridge.errors import BridgeError, Conflict
from bridge.session.fleet import FleetLink, info_from_json, info_to_json, lost_record
from bridge.session.manager import SessionManager
from bridge.session.session import CallInfo
from bridge.session.state import CallState, EndedBy
from bridge.store import CallStore, open_store
from bridge.store.lost import mark_lost


def info(call_id: str, company: str = "acme", **extra: Any) -> CallInfo:
    return CallInfo(call_id, company, "inbound", "+15551230001", "+34987654321", **extra)


def link(manager: SessionManager, *, fleet_max: int = 0, cap: int = 0) -> FleetLink:
    return FleetLink(
        LocalFleet("node-x"), manager, distributed=False, fleet_max_calls=fleet_max, company_cap=lambda _: cap
    )


def test_call_info_survives_the_registry_as_json() -> None:
    original = info(
        "c-1",
        variables={"crm.name": "Ada"},
        webhook_events=("call_failed",),
        agent_id="sales",
        amd=True,
    )
    assert info_from_json(info_to_json(original)) == original


async def refusal(coro: Any) -> tuple[int, str]:
    with pytest.raises(BridgeError) as raised:
        await coro
    return raised.value.status, raised.value.code


async def test_claims_are_refused_as_the_api_says() -> None:
    fleet_link = link(SessionManager(max_calls=10), fleet_max=2, cap=1)
    await fleet_link.claim(info("a-1"), CallState.PENDING)
    assert await refusal(fleet_link.claim(info("a-1", company="globex"), CallState.PENDING)) == (
        409,
        "duplicate_call",
    )
    assert await refusal(fleet_link.claim(info("a-2"), CallState.PENDING)) == (429, "too_many_calls")
    await fleet_link.claim(info("g-1", company="globex"), CallState.PENDING)
    assert await refusal(fleet_link.claim(info("g-2", company="globex"), CallState.PENDING)) == (
        503,
        "at_capacity",
    )
    await fleet_link.release("a-1")
    await fleet_link.claim(info("a-3"), CallState.PENDING)  # acme's slot is free again


async def test_the_registry_follows_a_tracked_call_and_forgets_it_at_its_end() -> None:
    manager = SessionManager(max_calls=10)
    fleet_link = link(manager)
    await fleet_link.claim(info("t-1"), CallState.PENDING)
    session = manager.create_pending(info("t-1"))
    fleet_link.track(session)
    session.attach_owner()
    await fleet_link.flush()  # the registry updates issued so far
    entry = await fleet_link.fleet.locate("t-1")
    assert entry is not None
    assert entry.state == "connecting"
    session.finish(EndedBy.CALLER)
    await fleet_link.flush()
    assert await fleet_link.fleet.locate("t-1") is None


async def test_the_owner_answers_routed_control_with_the_api_status_and_code() -> None:
    fleet_link = link(SessionManager(max_calls=10))

    async def end(request: ControlRequest) -> Mapping[str, Any]:
        if request.call_id == "gone":
            raise Conflict("call gone is already over", code="call_finished")
        return {"call_id": request.call_id, "status": "active"}

    async def broken(request: ControlRequest) -> Mapping[str, Any]:
        return {"text": request.args["text"]}  # a request without its argument

    fleet_link.serve("end", end)
    fleet_link.serve("say", broken)
    control = fleet_link._control
    ok = await control(ControlRequest("end", "c-1", "acme"))
    assert (ok.status, dict(ok.body)) == (200, {"call_id": "c-1", "status": "active"})
    refused = await control(ControlRequest("end", "gone", "acme"))
    assert (refused.status, refused.code) == (409, "call_finished")
    unknown = await control(ControlRequest("reboot", "c-1", "acme"))
    assert (unknown.status, unknown.code) == (400, "bad_request")
    malformed = await control(ControlRequest("say", "c-1", "acme"))
    assert (malformed.status, malformed.code) == (400, "bad_request")


async def test_a_handed_off_pending_call_leaves_without_an_end_of_its_own() -> None:
    manager = SessionManager(max_calls=10)
    session = manager.create_pending(info("h-1"))
    changes: list[str] = []
    session.on_change(lambda s: changes.append(s.state.value))
    assert manager.hand_off("h-1") is session
    assert session.handed_off
    assert manager.get("h-1") is None
    assert changes == []  # no save, no webhook: the new owner writes the record
    assert manager.outcomes == {}  # and it is not counted as one of this node's calls
    assert manager.hand_off("h-1") is None  # already gone
    attached = manager.create_pending(info("h-2"))
    attached.attach_owner()
    assert manager.hand_off("h-2") is None  # a call with media here is never handed off


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[CallStore]:
    opened = await open_store(store_url)
    yield opened
    await opened.close()


async def test_lost_calls_fail_once_and_unknown_ones_are_written(store: Any) -> None:
    manager = SessionManager(max_calls=10)
    live = manager.create_pending(info("lost-live"))
    live.attach_owner()
    live.mark_active()
    await store.save(live.record())
    over = manager.create_pending(info("lost-over"))
    over.finish(EndedBy.CALLER)
    await store.save(over.record())
    never_saved = CallEntry("lost-unsaved", "acme", "node-x", "pending", info_to_json(info("lost-unsaved")))
    entries = [
        CallEntry(i, "acme", "node-x", "active", info_to_json(info(i))) for i in ("lost-live", "lost-over")
    ] + [never_saved]
    records = [lost_record(entry) for entry in entries]
    now = time.time()
    assert sorted(await store.run(mark_lost, records, now)) == ["lost-live", "lost-unsaved"]
    assert await store.run(mark_lost, records, now + 5) == []  # a second survivor changes nothing
    failed = await store.get("acme", "lost-live")
    assert (failed.status, failed.error_code) == ("failed", "node_lost")
    assert failed.ended_at == pytest.approx(failed.updated_at)  # ends at its last save
    unsaved = await store.get("acme", "lost-unsaved")
    assert (unsaved.status, unsaved.error_code, unsaved.from_number) == (
        "failed",
        "node_lost",
        "+15551230001",
    )
    untouched = await store.get("acme", "lost-over")
    assert (untouched.status, untouched.error_code) == ("ended", None)
