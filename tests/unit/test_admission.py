"""session/admission.py: who may create a call or attach a media socket, on every path."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.directory import Directory
from bridge.errors import BridgeError
from bridge.providers.echo import EchoProvider
from bridge.session.admission import Admission, AdmissionPolicy, Announcement, MediaClaim
from bridge.session.call import CallPlan
from bridge.session.manager import SessionManager
from bridge.session.session import CallInfo, Session
from bridge.session.state import EndedBy
from bridge.settings import build_settings
from bridge.store import Store, open_store
from bridge.store.records import CallRecord
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, GLOBEX_PHONE, raw_config

GLOBEX_CALLER = "+15551234567"  # the one caller globex allows


def rejected(admission: Admission) -> dict[str, float]:
    """bridge_calls_rejected_total by reason, as /metrics exports it."""
    return {
        sample.labels["reason"]: sample.value
        for family in admission.manager.metrics.collect()
        for sample in family.samples
        if sample.name == "bridge_calls_rejected_total"
    }


def plan(_: Session) -> CallPlan:
    return CallPlan(EchoProvider())


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = await open_store("sqlite://:memory:")
    yield opened
    await opened.close()


def make(store: Store, **policy: Any) -> Admission:
    directory = Directory.from_settings(build_settings(raw_config()))
    manager = SessionManager(max_calls=10)
    return Admission(manager, store, lambda: directory, plan, AdmissionPolicy(**policy))


async def refused(work: Any) -> tuple[int, str]:
    with pytest.raises(BridgeError) as info:
        await work
    return info.value.status, info.value.code


def announcement(**overrides: Any) -> Announcement:
    return dataclasses.replace(Announcement("c-1", "+34600111222", ACME_PHONE), **overrides)


# -- the ownership rule -----------------------------------------------------------------------


async def test_the_called_number_decides_the_company(store: Store) -> None:
    admission = make(store)
    session = await admission.announce(announcement(called="34987654321"))
    assert session.company_id == "acme"
    assert (session.info.caller, session.info.called) == ("+34600111222", ACME_PHONE)


async def test_a_company_id_that_disagrees_with_the_number_is_refused(store: Store) -> None:
    admission = make(store)
    assert await refused(admission.announce(announcement(company_id="globex"))) == (403, "company_mismatch")
    assert await refused(admission.announce(announcement(company_id="nope"))) == (403, "company_mismatch")
    assert admission.manager.capacity().active_calls == 0
    assert rejected(admission)["company_mismatch"] == 2


async def test_a_company_id_alone_is_taken_only_without_a_number(store: Store) -> None:
    admission = make(store)
    session = await admission.announce(announcement(called="", company_id="globex", caller=GLOBEX_CALLER))
    assert session.company_id == "globex"
    assert await refused(admission.announce(announcement(call_id="c-2", called="", company_id="x"))) == (
        404,
        "unknown_company",
    )
    assert await refused(admission.announce(announcement(call_id="c-3", called=""))) == (
        400,
        "validation_error",
    )


# -- allowed callers on every path that creates a call ---------------------------------------


async def test_allowed_callers_hold_for_the_webhook(store: Store) -> None:
    admission = make(store)
    stranger = announcement(called=GLOBEX_PHONE, caller="+34600111222")
    assert await refused(admission.announce(stranger)) == (403, "caller_not_allowed")
    withheld = announcement(called=GLOBEX_PHONE, caller="anonymous")
    assert await refused(admission.announce(withheld)) == (403, "caller_not_allowed")
    allowed = await admission.announce(announcement(called=GLOBEX_PHONE, caller="15551234567"))
    assert allowed.info.caller == GLOBEX_CALLER


async def test_allowed_callers_hold_for_a_webhookless_media_socket(store: Store) -> None:
    admission = make(store)
    claim = MediaClaim("chan_websocket", "m-1", "34600111222", "442071234567", (CONNECTOR_KEY,))
    assert await refused(admission.admit_media(claim)) == (403, "caller_not_allowed")
    ok = MediaClaim("chan_websocket", "m-2", "15551234567", "442071234567", (CONNECTOR_KEY,))
    call = await admission.admit_media(ok)
    assert call.session.company_id == "globex"
    assert (call.session.info.caller, call.session.info.called) == (GLOBEX_CALLER, GLOBEX_PHONE)


async def test_allowed_callers_hold_for_a_webhookless_audiosocket(store: Store) -> None:
    # AudioSocket never says who calls: a company that limits its callers takes no such call.
    admission = make(store, webhookless_audiosocket_company="globex")
    claim = MediaClaim("audiosocket", "0b6a5b5e-9d5c-4a3e-8a67-2f1c1f1f1f1f")
    assert await refused(admission.admit_media(claim)) == (403, "caller_not_allowed")
    open_company = make(store, webhookless_audiosocket_company="acme")
    call = await open_company.admit_media(claim)
    assert (call.session.company_id, call.session.info.caller) == ("acme", "")


async def test_audiosocket_without_a_webhook_or_a_company_is_refused(store: Store) -> None:
    admission = make(store)
    claim = MediaClaim("audiosocket", "0b6a5b5e-9d5c-4a3e-8a67-2f1c1f1f1f1f")
    assert await refused(admission.admit_media(claim)) == (404, "unknown_call")


# -- media credentials --------------------------------------------------------------------------


async def test_a_pending_call_needs_connector_credentials(store: Store) -> None:
    admission = make(store)
    await admission.announce(announcement())
    assert await refused(admission.admit_media(MediaClaim("chan_websocket", "c-1"))) == (401, "unauthorized")
    wrong = MediaClaim("chan_websocket", "c-1", credentials=("wrong",))
    assert await refused(admission.admit_media(wrong)) == (401, "unauthorized")
    # Every credential presented must be good: a wrong one beside the right one is refused too.
    mixed = MediaClaim("chan_websocket", "c-1", credentials=(CONNECTOR_KEY, ""))
    assert await refused(admission.admit_media(mixed)) == (401, "unauthorized")
    pending = admission.manager.get("c-1")
    assert pending is not None
    assert pending.state.value == "pending"
    call = await admission.admit_media(MediaClaim("chan_websocket", "c-1", credentials=(CONNECTOR_KEY,)))
    assert call.session is pending
    assert pending.state.value == "connecting"


async def test_allow_unauthenticated_media_attaches_pending_calls_only(store: Store) -> None:
    admission = make(store, allow_unauthenticated_media=True)
    await admission.announce(announcement())
    call = await admission.admit_media(MediaClaim("chan_websocket", "c-1"))
    assert call.session.call_id == "c-1"
    assert await refused(
        admission.admit_media(MediaClaim("chan_websocket", "c-2", called="34987654321"))
    ) == (
        404,
        "unknown_call",
    )
    assert await refused(admission.admit_media(MediaClaim("chan_websocket", called="34987654321"))) == (
        401,
        "unauthorized",
    )


async def test_a_second_socket_for_a_call_is_refused(store: Store) -> None:
    admission = make(store)
    claim = MediaClaim("chan_websocket", "m-1", "34600111222", ACME_PHONE, (CONNECTOR_KEY,))
    await admission.admit_media(claim)
    assert await refused(admission.admit_media(claim)) == (409, "already_attached")


@pytest.mark.parametrize(
    ("claim", "expected"),
    [
        (
            MediaClaim("chan_websocket", "bad id", "1", ACME_PHONE, (CONNECTOR_KEY,)),
            (400, "validation_error"),
        ),
        (
            MediaClaim("chan_websocket", "x" * 129, "1", ACME_PHONE, (CONNECTOR_KEY,)),
            (400, "validation_error"),
        ),
        (MediaClaim("chan_websocket", "m", "abc", ACME_PHONE, (CONNECTOR_KEY,)), (400, "invalid_number")),
        (MediaClaim("chan_websocket", "m", "1", "nine", (CONNECTOR_KEY,)), (400, "invalid_number")),
        (MediaClaim("chan_websocket", "m", "1", "", (CONNECTOR_KEY,)), (404, "unknown_number")),
        (MediaClaim("chan_websocket", "m", "1", "+19999999999", (CONNECTOR_KEY,)), (404, "unknown_number")),
    ],
)
async def test_bad_media_claims_are_refused(
    store: Store, claim: MediaClaim, expected: tuple[int, str]
) -> None:
    admission = make(store)
    assert await refused(admission.admit_media(claim)) == expected
    assert admission.manager.capacity().active_calls == 0
    assert rejected(admission)[expected[1]] == 1


# -- call ids are used once -------------------------------------------------------------------


async def test_a_repeated_connect_is_refused_and_the_first_answer_stands(store: Store) -> None:
    admission = make(store)
    first = await admission.announce(announcement(caller_name="Ana"))
    assert await refused(admission.announce(announcement(caller_name="Eve"))) == (409, "duplicate_call")
    other_company = announcement(called=GLOBEX_PHONE, caller=GLOBEX_CALLER)
    assert await refused(admission.announce(other_company)) == (409, "duplicate_call")
    assert admission.manager.get("c-1") is first
    assert first.info.caller_name == "Ana"


async def test_an_id_in_the_store_is_never_reused(store: Store) -> None:
    # A finished call of another company, from an earlier run: neither a webhook nor a socket reuses it.
    await store.save(
        CallRecord(
            call_id="old-1",
            company_id="globex",
            direction="inbound",
            from_number=GLOBEX_CALLER,
            to_number=GLOBEX_PHONE,
            created_at=1_767_225_600.0,
            status="ended",
        )
    )
    admission = make(store)
    assert await refused(admission.announce(announcement(call_id="old-1"))) == (409, "duplicate_call")
    claim = MediaClaim("chan_websocket", "old-1", "34600111222", ACME_PHONE, (CONNECTOR_KEY,))
    assert await refused(admission.admit_media(claim)) == (409, "duplicate_call")
    kept = await store.get("globex", "old-1")
    assert kept is not None
    assert kept.status == "ended"


async def test_concurrent_connects_for_one_id_admit_exactly_one(store: Store) -> None:
    admission = make(store)
    results = await asyncio.gather(
        *(admission.announce(announcement(caller_name=str(n))) for n in range(8)), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, Session)]
    refusals = [r for r in results if isinstance(r, BridgeError)]
    assert len(admitted) == 1
    assert [r.code for r in refusals] == ["duplicate_call"] * 7
    assert admission.manager.capacity().active_calls == 1


async def test_a_refused_id_can_still_be_announced_once_it_is_free(store: Store) -> None:
    # A refusal for another reason must not leave the id claimed.
    admission = make(store)
    assert await refused(admission.announce(announcement(called=GLOBEX_PHONE))) == (403, "caller_not_allowed")
    session = await admission.announce(announcement())
    assert session.call_id == "c-1"


# -- outbound and capacity ---------------------------------------------------------------------


async def test_capacity_refusals_are_counted(store: Store) -> None:
    directory = Directory.from_settings(build_settings(raw_config()))
    admission = Admission(SessionManager(max_calls=1), store, lambda: directory, plan)
    await admission.outbound(CallInfo("o-1", "acme", "outbound", ACME_PHONE, "+15550000001"), ttl_seconds=30)
    with pytest.raises(BridgeError) as info:
        await admission.outbound(
            CallInfo("o-2", "acme", "outbound", ACME_PHONE, "+15550000002"), ttl_seconds=30
        )
    assert (info.value.status, info.value.code, info.value.retry_after_seconds) == (503, "at_capacity", 5)
    assert await refused(admission.announce(announcement())) == (503, "at_capacity")
    assert rejected(admission) == {"at_capacity": 2}


# -- a company's live-call cap ([companies.limits] max_live_calls) -----------------------------


def capped(store: Store, cap: int) -> Admission:
    raw = raw_config()
    raw["companies"][0]["limits"] = {"max_live_calls": cap}
    directory = Directory.from_settings(build_settings(raw))
    return Admission(SessionManager(max_calls=10), store, lambda: directory, plan, AdmissionPolicy())


async def test_max_live_calls_refuses_on_every_path_with_429(store: Store) -> None:
    admission = capped(store, 1)
    first = await admission.announce(announcement(call_id="cap-1"))
    assert await refused(admission.announce(announcement(call_id="cap-2"))) == (429, "too_many_calls")
    outbound = CallInfo("cap-out", "acme", "outbound", ACME_PHONE, "+34600111222")
    with pytest.raises(BridgeError) as info:
        await admission.outbound(outbound, 30)
    assert (info.value.status, info.value.code) == (429, "too_many_calls")
    assert info.value.retry_after_seconds is not None
    claim = MediaClaim("chan_websocket", "cap-3", "+34600111222", ACME_PHONE, credentials=(CONNECTOR_KEY,))
    assert await refused(admission.admit_media(claim)) == (429, "too_many_calls")
    # Another company is not affected, and the pending call's own socket still attaches.
    globex = await admission.announce(announcement(call_id="g-1", caller=GLOBEX_CALLER, called=GLOBEX_PHONE))
    assert globex.company_id == "globex"
    admitted = await admission.admit_media(
        MediaClaim("chan_websocket", "cap-1", credentials=(CONNECTOR_KEY,))
    )
    assert admitted.session is first
    assert rejected(admission)["too_many_calls"] == 3


async def test_a_slot_frees_when_the_call_ends(store: Store) -> None:
    admission = capped(store, 1)
    first = await admission.announce(announcement(call_id="cap-a"))
    first.request_end(EndedBy.CALLER)
    for _ in range(100):
        if admission.manager.get("cap-a") is None:
            break
        await asyncio.sleep(0.01)
    second = await admission.announce(announcement(call_id="cap-b"))
    assert second.company_id == "acme"
