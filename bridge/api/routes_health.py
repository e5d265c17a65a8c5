"""Liveness, capacity and Prometheus metrics (no auth: bind the listener privately)."""

from __future__ import annotations

from aiohttp import web

from bridge.api.appkeys import CALLS, MANAGER

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def health(request: web.Request) -> web.Response:
    """Liveness plus readiness of what outbound calls need (Asterisk call control)."""
    manager = request.app[MANAGER]
    controller = request.app[CALLS].controller_health
    return web.json_response(
        {
            "status": "draining" if manager.draining else "ok",
            "asterisk": controller.value if controller is not None else "disabled",
        }
    )


async def fleet(request: web.Request) -> web.Response:
    capacity = request.app[MANAGER].capacity()
    return web.json_response(
        {
            "max_calls": capacity.max_calls,
            "active_calls": capacity.active_calls,
            "available": capacity.available,
            "draining": capacity.draining,
        }
    )


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
    ]
    body = "\n".join(lines) + "\n"
    return web.Response(body=body.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/health/fleet", fleet)
    app.router.add_get("/metrics", metrics)
