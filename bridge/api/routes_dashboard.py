"""The usage dashboard (`GET /dashboard` and its static files) and the admin's live calls
(`GET /api/admin/calls/live`).

A browser cannot add a header to a navigation, so the page carries no data and needs no key: it is a
fixed shell whose script asks for a key, keeps it in sessionStorage only, and reads the JSON API with
`Authorization: Bearer <key>`. The files live in `bridge/web/` (package data) and are read once, when
the routes are set up, so serving them never touches the disk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bridge.api.appkeys import FLEET, MANAGER
from bridge.api.envelope import ok, parse_query
from bridge.api.openapi import Operation, register
from bridge.cluster.base import ControlRequest
from bridge.session.fleet import OpHandler
from bridge.session.manager import SessionManager
from bridge.session.session import Session

SECURITY_HEADERS: Final = {
    # No inline script or style, nothing from elsewhere; only the daemon's own API is reachable. A
    # form never submits (the script reads it), so a key cannot end up in a URL even without the script.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The page names its files with their digest, so a browser may keep them for good; a request for
# another version (an older page) is still answered, but not kept.
_IMMUTABLE: Final = "public, max-age=31536000, immutable"
_REVALIDATE: Final = "no-cache"
_STATIC: Final = {
    "dashboard.js": "application/javascript",
    "dashboard.css": "text/css",
    "favicon.svg": "image/svg+xml",  # without one, every browser asks for /favicon.ico (a 404)
}
CompanyId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    version: str  # the first hex digits of the body's SHA-256: its URL's ?v= and its ETag


def _read(name: str) -> bytes:
    return resources.files("bridge").joinpath("web", name).read_bytes()


def _asset(name: str, content_type: str) -> Asset:
    body = _read(name)
    return Asset(body, content_type, hashlib.sha256(body).hexdigest()[:16])


ASSETS: Final = {name: _asset(f"static/{name}", kind) for name, kind in _STATIC.items()}


def _page() -> bytes:
    html = _read("dashboard.html").decode()
    for name, asset in ASSETS.items():
        html = html.replace("{{" + name + "}}", f"/dashboard/static/{name}?v={asset.version}")
    return html.encode()


PAGE: Final = _page()


async def dashboard(request: web.Request) -> web.Response:
    response = web.Response(body=PAGE, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = _REVALIDATE  # it names the current files: always ask
    return response


def _static(name: str) -> web.Response:
    asset = ASSETS[name]
    return web.Response(body=asset.body, content_type=asset.content_type, charset="utf-8")


def _static_handler(name: str) -> Operation:
    asset = ASSETS[name]
    etag = f'"{asset.version}"'

    async def handler(request: web.Request) -> web.Response:
        asked = request.headers.get("If-None-Match", "")
        wanted = {tag.strip().removeprefix("W/") for tag in asked.split(",")}
        response = web.Response(status=304) if etag in wanted else _static(name)
        response.headers.update(SECURITY_HEADERS)
        response.headers["ETag"] = etag
        current = request.query.get("v") == asset.version
        response.headers["Cache-Control"] = _IMMUTABLE if current else _REVALIDATE
        return response

    handler.__name__ = "dashboard_" + name.replace(".", "_")  # the document's operationId
    return Operation(
        "GET",
        f"/dashboard/static/{name}",
        handler,
        f"The dashboard's {name}",
        "dashboard",
        auth="none",
        text_response=asset.content_type,
        description="Cached for good under the ?v= the page names; ETag and If-None-Match otherwise.",
    )


# -- the admin's live calls ------------------------------------------------------------------------


class LiveQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    company_id: CompanyId | None = Field(None, description="Only this company's calls")


class LiveCallOut(BaseModel):
    call_id: str
    company_id: str
    direction: Literal["inbound", "outbound"]
    state: Literal["pending", "dialing", "connecting", "active", "ended", "failed"] = Field(
        description="ended/failed only for the moment a call takes to leave the list"
    )
    started_at: str = Field(description="When the bridge took the call")
    answered_at: str | None
    duration_seconds: float = Field(description="Connected so far (0 before media attached)")
    agent_id: str | None = Field(description="null: the company's default agent")
    provider: str = Field(description="The model serving it now ('' before it started)")
    model: str


class LiveCalls(BaseModel):
    calls: list[LiveCallOut]
    total: int


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _live_call(session: Session) -> LiveCallOut:
    return LiveCallOut.model_validate(
        {
            "call_id": session.call_id,
            "company_id": session.company_id,
            "direction": session.info.direction,
            "state": session.state.value,
            "started_at": _iso(session.created_at),
            "answered_at": _iso(session.answered_at or session.connected_at),
            "duration_seconds": session.duration_seconds,
            "agent_id": session.info.agent_id or None,
            "provider": session.provider,
            "model": session.model,
        }
    )


def fleet_live_calls(manager: SessionManager) -> OpHandler:
    """What this node answers when another node lists the fleet's live calls."""

    async def answer(request: ControlRequest) -> Mapping[str, Any]:
        company_id = request.args.get("company_id")
        sessions = manager.live_sessions()
        calls = [_live_call(s) for s in sessions if company_id in (None, s.company_id)]
        return {"calls": [call.model_dump(mode="json") for call in calls]}

    return answer


async def admin_live_calls(request: web.Request) -> web.Response:
    query = parse_query(request, LiveQuery)
    sessions = request.app[MANAGER].live_sessions()
    calls = [_live_call(s) for s in sessions if query.company_id in (None, s.company_id)]
    link = request.app.get(FLEET)
    if link is not None:  # a fleet: every other node's too
        for body in await link.gather("live_calls", {"company_id": query.company_id}):
            calls += [LiveCallOut.model_validate(call) for call in body.get("calls", [])]
        calls.sort(key=lambda call: call.started_at)
    return ok(LiveCalls(calls=calls, total=len(calls)))


_DASHBOARD_DESCRIPTION: Final = (
    "The usage dashboard: an HTML page that holds no data and needs no key to load. Its script asks for "
    "a key, keeps it in the tab's sessionStorage only (never a URL, a cookie or localStorage) and reads "
    "the JSON API with `Authorization: Bearer <key>`: an admin key (accepted by GET /api/admin/usage) "
    "sees every company, its model breakdown and every live call (GET /api/admin/calls/live); a company "
    "key (accepted by GET /api/usage) sees its own usage and live calls (GET /api/calls?status=...). "
    "Served with a strict Content-Security-Policy (no inline script, nothing from other origins)."
)
OPERATIONS: Final = (
    Operation(
        "GET",
        "/dashboard",
        dashboard,
        "The usage dashboard (HTML)",
        "dashboard",
        auth="none",
        text_response="text/html",
        description=_DASHBOARD_DESCRIPTION,
    ),
    *(_static_handler(name) for name in _STATIC),
    Operation(
        "GET",
        "/api/admin/calls/live",
        admin_live_calls,
        "Every company's live calls (this node's)",
        "admin",
        auth="admin",
        query=LiveQuery,
        response=LiveCalls,
        description="Calls holding a slot on this bridge: pending, dialing or connected, oldest first.",
    ),
)


def setup_routes(app: web.Application) -> None:
    register(app, OPERATIONS)
