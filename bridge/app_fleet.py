"""Joining the fleet: the registry and bus `[cluster]` names (Redis), or the embedded one (one process).

Part of the composition root (bridge/app.py): builds the `Fleet`, links it to the session layer (claims at
admission, hand-over of pending calls, control routed to a call's owner) and says what a survivor writes
for the calls of a lost node.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import web

from bridge.api.ratelimits import SHARED_BUCKETS
from bridge.cluster.base import CallEntry, ControlRequest, Fleet
from bridge.cluster.local import LocalFleet
from bridge.companies.admin import AdminService
from bridge.companies.balance import Balances
from bridge.directory import Directory
from bridge.integrations.outbox import Outbox
from bridge.session.admission import Admission
from bridge.session.calls import CallService
from bridge.session.fleet import FleetLink, lost_record
from bridge.session.manager import SessionManager
from bridge.settings import ConfigError, Settings
from bridge.store.base import Store
from bridge.store.lost import NODE_LOST, mark_lost

LOCAL_NODE_ID = "local"


def build_fleet(settings: Settings) -> Fleet:
    """RedisFleet for `[cluster]`, else the in-process LocalFleet."""
    cluster = settings.cluster
    if cluster is None:
        return LocalFleet(LOCAL_NODE_ID)
    try:
        from bridge.cluster.redis import RedisFleet  # noqa: PLC0415  (an optional dependency)
    except ImportError as exc:
        raise ConfigError(
            ["[cluster] needs the fleet extra (redis-py): pip install 'bridge[fleet]'"]
        ) from exc
    return RedisFleet(cluster)


def link_fleet(
    settings: Settings,
    manager: SessionManager,
    admission: Admission,
    calls: CallService,
    directory: Callable[[], Directory],
) -> FleetLink:
    """The session layer's link to the fleet (started later, with `start_fleet`)."""

    def company_cap(company_id: str) -> int:
        company = directory().companies.get(company_id)
        return company.settings.limits.max_live_calls if company is not None else 0

    cluster = settings.cluster
    link = FleetLink(
        build_fleet(settings),
        manager,
        distributed=cluster is not None,
        fleet_max_calls=cluster.max_calls if cluster is not None else 0,
        company_cap=company_cap,
        control_timeout_seconds=cluster.control_timeout_seconds if cluster is not None else 3.0,
    )
    admission.link = link
    calls.serve_fleet(link)
    return link


REFRESH_SECONDS = 5.0  # how soon another node's top-ups, deductions and admin changes are seen at worst


def share_changes(link: FleetLink, admin: AdminService, balances: Balances) -> None:
    """What one node changes in memory-held state (companies and keys, balances) reaches the others: at
    once by a broadcast after an admin change or a top-up, and every REFRESH_SECONDS in any case (a call's
    deduction, a node that missed a broadcast)."""

    async def refresh() -> None:
        await admin.load()
        await balances.load()

    async def on_request(_: ControlRequest) -> Mapping[str, Any]:
        await refresh()
        return {"refreshed": True}

    link.serve("refresh", on_request)
    admin.changed = balances.changed = lambda: link.broadcast("refresh")
    link.every(REFRESH_SECONDS, refresh)


def share_rate_limits(settings: Settings, app: web.Application) -> None:
    """A fleet counts each key's and address's requests in Redis, so a limit holds however a client's
    requests spread over the nodes (one process: its own buckets, as before)."""
    if settings.cluster is None:
        return
    from bridge.cluster.redis_limits import RedisRateLimits  # noqa: PLC0415  (an optional dependency)

    shared = RedisRateLimits(settings.cluster.redis_url)
    app[SHARED_BUCKETS] = shared

    async def close(_: web.Application) -> None:
        await shared.close()

    app.on_cleanup.append(close)


def lost_call_writer(
    store: Store,
    outbox: Outbox,
    retry_for_seconds: float,
    backfill_usage: Callable[[], Awaitable[object]],
) -> Callable[[Sequence[CallEntry]], Awaitable[int]]:
    """What a survivor writes for a lost node's calls: each fails as node_lost (once, whoever writes),
    its `call_failed` goes out through the outbox, and its usage rows come from its last record."""

    async def write(entries: Sequence[CallEntry]) -> int:
        records = [lost_record(entry) for entry in entries]
        changed = await store.run(mark_lost, records, time.time())
        if changed:
            await store.run(outbox.write_interrupted, time.time() - retry_for_seconds, NODE_LOST)
            await backfill_usage()
        return len(changed)

    return write
