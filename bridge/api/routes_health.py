"""Liveness, capacity and Prometheus metrics (no auth: bind the listener privately)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Literal

from aiohttp import web
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import BaseModel, Field

from bridge.api.appkeys import CALLS, FLEET, MANAGER, SETTINGS
from bridge.api.openapi import Operation, register
from bridge.api.reload_status import CONFIG_RELOAD, ReloadStatus
from bridge.cluster.base import ClusterUnavailable
from bridge.errors import Unavailable
from bridge.session.loop_lag import probe_loop_lag
from bridge.session.metrics import LoopLagMetrics

# Each app's own registry (several apps can share a process, e.g. in tests): its calls and its reloads.
METRICS_REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


class ConfigReload(BaseModel):
    """The last SIGHUP reload: outcome, time and how many problems (never their text)."""

    last_reload: Literal["ok", "failed"] | None = Field(description="null until the first SIGHUP")
    last_reload_at: str | None
    problems: int


class Health(BaseModel):
    status: Literal["ok", "draining"]
    asterisk: Literal["ok", "degraded", "down", "disabled"] = Field(
        description="Call control (AMI or ARI): what outbound calls, transfers and DTMF need"
    )
    config: ConfigReload
    node_id: str | None = Field(
        None, description="This process's node of the fleet ([cluster] node_id; `-<n>` per worker)"
    )


class FleetNode(BaseModel):
    node_id: str
    alive: bool = Field(description="false: silent past node_ttl_seconds, its calls about to be node_lost")
    live_calls: int
    max_calls: int
    draining: bool
    started_at: str
    last_seen: str


class FleetTotals(BaseModel):
    nodes: int
    alive: int
    live_calls: int = Field(description="Calls in the fleet's registry")
    max_calls: int = Field(description="The sum of the alive nodes' max_calls")
    fleet_max_calls: int = Field(description="[cluster] max_calls (0: no fleet-wide cap)")


class Fleet(BaseModel):
    """This node's capacity (top level, as one process reports it), and with [cluster] every node's."""

    max_calls: int
    active_calls: int
    available: int
    draining: bool
    node_id: str | None = Field(None, description="Absent without [cluster]")
    nodes: list[FleetNode] = Field(default_factory=list, description="Absent without [cluster]")
    fleet: FleetTotals | None = Field(None, description="Absent without [cluster]")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


async def health(request: web.Request) -> web.Response:
    """Liveness plus readiness of what outbound calls need (Asterisk call control)."""
    manager = request.app[MANAGER]
    controller = request.app[CALLS].controller_health
    body = Health(
        status="draining" if manager.draining else "ok",
        asterisk=controller.value if controller is not None else "disabled",
        config=reload_summary(request.app[CONFIG_RELOAD]),
        node_id=cluster.node_id if (cluster := request.app[SETTINGS].cluster) is not None else None,
    )
    return web.json_response(body.model_dump(mode="json"))


def reload_summary(status: ReloadStatus) -> ConfigReload:
    return ConfigReload(
        last_reload=None if status.last_ok is None else ("ok" if status.last_ok else "failed"),
        last_reload_at=None
        if status.last_at is None
        else datetime.fromtimestamp(status.last_at, UTC).isoformat(timespec="milliseconds"),
        problems=status.problems,
    )


class ReloadMetrics:
    """A prometheus-client collector over an app's SIGHUP reloads, read at scrape time."""

    def __init__(self, status: ReloadStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        # As Prometheus reports its own reloads: the start-up load counts as the first successful one.
        succeeded = status.last_ok is not False
        loaded_at = status.last_at if status.last_at is not None else status.started_at
        yield CounterMetricFamily(
            "bridge_config_reload_failures_total",
            "SIGHUP reloads refused (the running config stayed).",
            value=status.failures,
        )
        yield GaugeMetricFamily(
            "bridge_config_last_reload_success",
            "1 if the last config load (start-up or SIGHUP) applied.",
            value=int(succeeded),
        )
        yield GaugeMetricFamily(
            "bridge_config_last_reload_timestamp_seconds",
            "When the last config load was attempted.",
            value=round(loaded_at, 3),
        )


async def fleet(request: web.Request) -> web.Response:
    capacity = request.app[MANAGER].capacity()
    body = Fleet(
        max_calls=capacity.max_calls,
        active_calls=capacity.active_calls,
        available=capacity.available,
        draining=capacity.draining,
    )
    link = request.app.get(FLEET)
    if link is not None and link.distributed:
        try:
            nodes = await link.fleet.nodes()
            live_calls = await link.fleet.live_calls()
        except ClusterUnavailable as exc:
            raise Unavailable("the fleet's registry is unreachable", code="cluster_unavailable") from exc
        body.node_id = link.node_id
        body.nodes = [
            FleetNode(
                node_id=node.node_id,
                alive=node.alive,
                live_calls=node.live_calls,
                max_calls=node.max_calls,
                draining=node.draining,
                started_at=_iso(node.started_at),
                last_seen=_iso(node.last_seen),
            )
            for node in sorted(nodes, key=lambda each: each.node_id)
        ]
        alive = [node for node in nodes if node.alive]
        body.fleet = FleetTotals(
            nodes=len(nodes),
            alive=len(alive),
            live_calls=live_calls,
            max_calls=sum(node.max_calls for node in alive if not node.draining),
            fleet_max_calls=link.fleet_max_calls,
        )
    # Without [cluster] the body is what one process always said: the fleet's fields are left out.
    return web.json_response(body.model_dump(mode="json", exclude_unset=True))


async def metrics(request: web.Request) -> web.Response:
    # Rendered on the event loop, like every change to what it reads: no lock is needed.
    body = generate_latest(request.app[METRICS_REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


async def _probing_loop_lag(metrics: LoopLagMetrics, app: web.Application) -> AsyncIterator[None]:
    """The loop-lag probe, for as long as the app runs."""
    probe = asyncio.create_task(probe_loop_lag(metrics.tally.observe))
    yield
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe


def setup_routes(app: web.Application) -> None:
    # Every app gets one (tests build apps without the daemon); SIGHUP handling in bridge.app fills it.
    status = app[CONFIG_RELOAD] = ReloadStatus()
    # auto_describe: registering a collector whose metric names are already taken fails at start-up.
    registry = CollectorRegistry(auto_describe=True)
    registry.register(app[MANAGER].metrics)
    registry.register(ReloadMetrics(status))
    loop_lag = LoopLagMetrics()
    registry.register(loop_lag)
    app.cleanup_ctx.append(functools.partial(_probing_loop_lag, loop_lag))
    app[METRICS_REGISTRY] = registry
    register(app, OPERATIONS)


OPERATIONS = (
    Operation(
        "GET",
        "/health",
        health,
        "Liveness, call control and the last reload",
        "health",
        auth="none",
        plain_response=Health,
    ),
    Operation(
        "GET",
        "/health/fleet",
        fleet,
        "Capacity: how many more calls fit, here and (with [cluster]) on every node of the fleet",
        "health",
        auth="none",
        plain_response=Fleet,
        errors=(503,),
    ),
    Operation(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (bind the listener privately)",
        "health",
        auth="none",
        text_response="text/plain",
    ),
)
