"""The dashboard's routes over HTTP: the page and its files with their security and caching headers,
404 for anything else under /dashboard/static (`..` too), a page that holds no data, and the admin's
live calls (`GET /api/admin/calls/live`), which only an admin key opens."""

from __future__ import annotations

import asyncio
import fnmatch
import re
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bridge.api.routes_dashboard import ASSETS, SECURITY_HEADERS
from bridge.session.manager import SessionManager
from bridge.session.session import CallInfo
from bridge.session.state import EndedBy
from tests.helpers import ACME_KEY, ACME_PHONE, ADMIN_KEY, CONNECTOR_KEY, GLOBEX_KEY, GLOBEX_PHONE

Factory = Callable[..., Awaitable[tuple[TestClient[Any, Any], SessionManager]]]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a name, never fetched


def assert_secured(headers: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert headers[name] == value, name
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "default-src 'none'" in policy


async def test_the_page_is_a_shell_with_strict_headers(api_client_factory: Factory) -> None:
    client, _ = await api_client_factory()
    response = await client.get("/dashboard")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.charset == "utf-8"
    assert_secured(response.headers)
    assert response.headers["Cache-Control"] == "no-cache"
    html = await response.text()
    # The same bytes whoever asks: a key on the request changes nothing.
    assert await (await client.get("/dashboard", headers=ADMIN)).text() == html
    # No data and no secret: no key, no company, no number.
    for secret in (
        ACME_KEY,
        GLOBEX_KEY,
        ADMIN_KEY,
        CONNECTOR_KEY,
        "acme",
        "globex",
        ACME_PHONE,
        GLOBEX_PHONE,
    ):
        assert secret not in html
    # No inline script or style, nothing from another origin.
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)
    assert not re.search(r"\son[a-z]+\s*=", html)
    assert " style=" not in html
    assert not re.search(r"(src|href|action)=\"(https?:)?//", html)
    # The key form never sends the key anywhere by itself.
    assert re.search(r'<form id="login-form" method="post"', html)
    assert 'type="password"' in html


async def test_static_files_are_served_with_types_and_cache_headers(api_client_factory: Factory) -> None:
    client, _ = await api_client_factory()
    html = await (await client.get("/dashboard")).text()
    types = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
    for name, content_type in types.items():
        asset = ASSETS[name]
        url = f"/dashboard/static/{name}?v={asset.version}"
        assert url in html  # the page names the current version
        response = await client.get(url)
        assert response.status == 200
        assert response.content_type == content_type
        assert_secured(response.headers)
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        etag = response.headers["ETag"]
        body = await response.read()
        assert body == asset.body
        text = body.decode()
        assert not re.search(r"\blocalStorage\s*[.\[]|document\.cookie", text)  # the key: sessionStorage only
        assert not re.search(r"https?://", text.replace(SVG_NAMESPACE, ""))  # nothing from elsewhere
        # Revalidation: the same ETag is a 304 without a body; another (or no) version is not kept.
        again = await client.get(f"/dashboard/static/{name}", headers={"If-None-Match": etag})
        assert again.status == 304
        assert await again.read() == b""
        stale = await client.get(f"/dashboard/static/{name}?v=0000")
        assert stale.status == 200
        assert stale.headers["Cache-Control"] == "no-cache"
    script = ASSETS["dashboard.js"].body.decode()
    assert "innerHTML" not in script  # the API's values go in as text only


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/static/nope.js",
        "/dashboard/static/",
        "/dashboard/static/dashboard.js/x",
        "/dashboard/static/../../pyproject.toml",
        "/dashboard/static/%2e%2e/%2e%2e/pyproject.toml",
        "/dashboard/static/..%2f..%2fpyproject.toml",
        "/dashboard/static/dashboard.html",
        "/dashboard/../bridge/web/dashboard.html",
    ],
)
async def test_anything_else_under_static_is_a_json_404(api_client_factory: Factory, path: str) -> None:
    client, _ = await api_client_factory()
    # Raw bytes on the socket: an HTTP client would tidy the `..` away before sending.
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    answer = (await reader.read()).decode(errors="replace")
    writer.close()
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 404"), answer[:200]
    assert '"code": "not_found"' in body or '"code":"not_found"' in body
    assert "[project]" not in body


async def test_the_document_describes_the_dashboard(api_client_factory: Factory) -> None:
    client, _ = await api_client_factory()
    document = await (await client.get("/api/openapi.json")).json()
    page = document["paths"]["/dashboard"]["get"]
    assert page["security"] == []
    assert "sessionStorage" in page["description"]
    assert "text/html" in page["responses"]["200"]["content"]
    live = document["paths"]["/api/admin/calls/live"]["get"]
    assert {"adminBearer": []} in live["security"]
    assert "company_id" in {p["name"] for p in live["parameters"]}


def _info(call_id: str, company: str, phone: str, agent: str = "") -> CallInfo:
    return CallInfo(call_id, company, "inbound", "+34600111222", phone, agent_id=agent)


async def test_admin_live_calls_lists_every_company(api_client_factory: Factory) -> None:
    client, manager = await api_client_factory()
    assert (await (await client.get("/api/admin/calls/live", headers=ADMIN)).json())["data"] == {
        "calls": [],
        "total": 0,
    }
    manager.create_pending(_info("live-a", "acme", ACME_PHONE, agent="sales"))
    await asyncio.sleep(0.01)  # distinct creation instants: the list is oldest first
    outbound = manager.create_pending(
        CallInfo("live-g", "globex", "outbound", GLOBEX_PHONE, "+34600111222"), dialing=True
    )
    response = await client.get("/api/admin/calls/live", headers=ADMIN)
    assert response.status == 200
    data = (await response.json())["data"]
    assert data["total"] == 2
    first, second = data["calls"]
    assert (first["call_id"], first["company_id"], first["state"]) == ("live-a", "acme", "pending")
    assert (first["direction"], first["agent_id"], first["duration_seconds"]) == ("inbound", "sales", 0.0)
    assert first["started_at"].endswith("Z")
    assert first["answered_at"] is None
    assert (second["call_id"], second["direction"], second["state"]) == ("live-g", "outbound", "dialing")
    assert second["agent_id"] is None
    # Filtered by company; an unknown one is an empty list.
    only = await (await client.get("/api/admin/calls/live?company_id=globex", headers=ADMIN)).json()
    assert [c["call_id"] for c in only["data"]["calls"]] == ["live-g"]
    none = await (await client.get("/api/admin/calls/live?company_id=nobody", headers=ADMIN)).json()
    assert none["data"] == {"calls": [], "total": 0}
    bad = await client.get("/api/admin/calls/live?company_id=a/b", headers=ADMIN)
    assert bad.status == 400
    assert (await bad.json())["code"] == "validation_error"
    # Once a call ends it leaves the list.
    manager.end(outbound.call_id, EndedBy.API)
    data = (await (await client.get("/api/admin/calls/live", headers=ADMIN)).json())["data"]
    assert [c["call_id"] for c in data["calls"]] == ["live-a"]


async def test_admin_live_calls_refuses_company_keys(api_client_factory: Factory) -> None:
    client, manager = await api_client_factory()
    manager.create_pending(_info("live-a", "acme", ACME_PHONE))
    # A company key never opens an admin route (the project answers 401 there, as on every admin
    # route); nor does no key or a wrong one. Nothing of the call leaks into the refusal.
    for headers in (
        {"Authorization": f"Bearer {ACME_KEY}"},
        {"X-Admin-Key": ACME_KEY},
        {"X-API-Key": ACME_KEY},
        {"Authorization": "Bearer nope"},
        {},
    ):
        response = await client.get("/api/admin/calls/live", headers=headers)
        assert response.status == 401, headers
        body = await response.json()
        assert body["success"] is False
        assert "live-a" not in await response.text()


def test_every_web_file_is_package_data() -> None:
    """An installed wheel has the page and its files (pyproject's package-data names them)."""
    repo = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((repo / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    files = [p.relative_to(repo / "bridge").as_posix() for p in (repo / "bridge" / "web").rglob("*")]
    shipped = [name for name in files if (repo / "bridge" / name).is_file()]
    assert {"web/dashboard.html", "web/static/dashboard.js", "web/static/dashboard.css"} <= set(shipped)
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns["bridge"]), name
