"""Liveness, capacity and Prometheus metrics (no auth: bind the listener privately)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from bridge.api.appkeys import CALLS, MANAGER
from bridge.api.openapi import Operation, register
from bridge.api.reload_status import CONFIG_RELOAD, ReloadStatus

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


class Fleet(BaseModel):
    max_calls: int
    active_calls: int
    available: int
    draining: bool


async def health(request: web.Request) -> web.Response:
    """Liveness plus readiness of what outbound calls need (Asterisk call control)."""
    manager = request.app[MANAGER]
    controller = request.app[CALLS].controller_health
    body = Health(
        status="draining" if manager.draining else "ok",
        asterisk=controller.value if controller is not None else "disabled",
        config=reload_summary(request.app[CONFIG_RELOAD]),
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


def reload_metrics(status: ReloadStatus) -> list[str]:
    # As Prometheus reports its own reloads: the start-up load counts as the first successful one.
    succeeded = status.last_ok is not False
    loaded_at = status.last_at if status.last_at is not None else status.started_at
    return [
        "# HELP bridge_config_reload_failures_total SIGHUP reloads refused (the running config stayed).",
        "# TYPE bridge_config_reload_failures_total counter",
        f"bridge_config_reload_failures_total {status.failures}",
        "# HELP bridge_config_last_reload_success 1 if the last config load (start-up or SIGHUP) applied.",
        "# TYPE bridge_config_last_reload_success gauge",
        f"bridge_config_last_reload_success {int(succeeded)}",
        "# HELP bridge_config_last_reload_timestamp_seconds When the last config load was attempted.",
        "# TYPE bridge_config_last_reload_timestamp_seconds gauge",
        f"bridge_config_last_reload_timestamp_seconds {loaded_at:.3f}",
    ]


async def fleet(request: web.Request) -> web.Response:
    capacity = request.app[MANAGER].capacity()
    body = Fleet(
        max_calls=capacity.max_calls,
        active_calls=capacity.active_calls,
        available=capacity.available,
        draining=capacity.draining,
    )
    return web.json_response(body.model_dump(mode="json"))


async def metrics(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    capacity = manager.capacity()
    lines = [
        "# HELP bridge_calls_active Calls pending, connecting or active.",
        "# TYPE bridge_calls_active gauge",
        f"bridge_calls_active {capacity.active_calls}",
        "# HELP bridge_calls_max Admission limit (max_calls).",
        "# TYPE bridge_calls_max gauge",
        f"bridge_calls_max {capacity.max_calls}",
        "# HELP bridge_draining 1 while shutting down.",
        "# TYPE bridge_draining gauge",
        f"bridge_draining {int(capacity.draining)}",
        *manager.metrics.render(),
        *reload_metrics(request.app[CONFIG_RELOAD]),
    ]
    body = "\n".join(lines) + "\n"
    return web.Response(body=body.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


def setup_routes(app: web.Application) -> None:
    # Every app gets one (tests build apps without the daemon); SIGHUP handling in bridge.app fills it.
    app[CONFIG_RELOAD] = ReloadStatus()
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
        "Capacity: how many more calls fit",
        "health",
        auth="none",
        plain_response=Fleet,
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
