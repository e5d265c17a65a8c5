"""The admin API on a live daemon: companies and keys created as data work at once on every route, a
key is shown once and stored only as its digest, revocation and disabling take effect at once, and
config companies stay read-only."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.api.appkeys import DIRECTORY
from bridge.api.openapi import OPERATIONS, Operation
from bridge.api.routes_admin import ADMIN as ADMIN_SERVICE
from bridge.app import Services, start_services
from bridge.settings import ConfigError, build_settings
from bridge.store import SqliteCallStore
from tests.helpers import ACME_KEY, ACME_PHONE, ADMIN_KEY, CONNECTOR_KEY, raw_config

NEW_PHONE = "+15550009999"
ADMIN = {"X-Admin-Key": ADMIN_KEY}


class Client:
    def __init__(self, services: Services, http: aiohttp.ClientSession) -> None:
        self.services = services
        self.http = http
        self.base = f"http://127.0.0.1:{services.http_port}"

    async def call(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[int, dict[str, Any], str]:
        async with self.http.request(method, self.base + path, json=body, headers=headers) as response:
            text = await response.text()
            return response.status, (json.loads(text) if text.startswith("{") else {}), text

    async def admin(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        status, payload, _ = await self.call(method, path, ADMIN, body)
        return status, payload

    async def new_company(self, company_id: str = "initech", phone: str = NEW_PHONE) -> None:
        status, payload = await self.admin(
            "POST",
            "/api/admin/companies",
            {"id": company_id, "name": "Initech", "phones": [phone], "agent": {"provider": "echo"}},
        )
        assert status == 201, payload

    async def new_key(self, company_id: str = "initech", name: str = "crm") -> tuple[str, str]:
        status, payload = await self.admin("POST", f"/api/admin/companies/{company_id}/keys", {"name": name})
        assert status == 201, payload
        return payload["data"]["key"], payload["data"]["key_info"]["id"]

    async def phones(self, key: str) -> int:
        return (await self.call("GET", "/api/phones", {"X-API-Key": key}))[0]


def _raw(url: str) -> dict[str, Any]:
    raw = raw_config()
    raw["storage"] = {"url": url}
    raw["rate_limits"] = {"failed_auths_per_address": 10_000}  # the tests refuse keys on purpose
    return raw


@pytest.fixture
async def client(store_url: str) -> AsyncIterator[Client]:
    services = await start_services(build_settings(_raw(store_url)))
    try:
        async with aiohttp.ClientSession() as http:
            yield Client(services, http)
    finally:
        await services.close()


def _operations(client: Client, auth: str) -> list[Operation]:
    return [op for op in client.services.app[OPERATIONS].items if op.auth == auth]


def _path(op: Operation) -> str:
    return re.sub(r"\{[^}]+\}", "nonexistent-1", op.path)


async def test_a_created_company_and_key_work_at_once_on_every_company_route(client: Client) -> None:
    await client.new_company()
    key, key_id = await client.new_key()
    assert key.startswith("bck_")
    company_ops = _operations(client, "company")
    assert len(company_ops) > 10
    for op in company_ops:
        status, payload, _ = await client.call(
            op.method, _path(op), {"X-API-Key": key}, {} if op.body else None
        )
        assert status != 401, (op.method, op.path, payload)
    status, payload, _ = await client.call("GET", "/api/phones", {"Authorization": f"Bearer {key}"})
    assert status == 200
    assert payload["data"]["phones"] == [NEW_PHONE]

    # Shown once: lists and reads show the prefix only.
    for path in ("/api/admin/companies/initech/keys", "/api/admin/companies/initech", "/api/admin/companies"):
        status, _, text = await client.call("GET", path, ADMIN)
        assert status == 200
        assert key not in text
    listed = (await client.admin("GET", "/api/admin/companies/initech/keys"))[1]["data"]["keys"]
    assert [(k["id"], k["prefix"], k["read_only"]) for k in listed] == [(key_id, key[:8], False)]

    # Only its digest is in the database file; its last use is flushed there (not per request).
    await client.services.app[ADMIN_SERVICE].flush()
    store = client.services.store
    if isinstance(store, SqliteCallStore):
        main = Path(store.path)
        # The write-ahead log holds the recent writes: read it too.
        db = b"".join(p.read_bytes() for p in (main, main.with_name(main.name + "-wal")) if p.exists())
    else:  # every column of every key row, as the database holds it
        found = await store.run(lambda conn: conn.execute("SELECT * FROM admin_keys").fetchall())
        db = b"".join(v if isinstance(v, bytes) else str(v).encode() for row in found for v in row)
    assert key.encode() not in db
    assert key[8:].encode() not in db
    assert hashlib.sha256(key.encode()).digest() in db
    listed = (await client.admin("GET", "/api/admin/companies/initech/keys"))[1]["data"]["keys"]
    assert listed[0]["last_used_at"] is not None


async def test_revocation_and_rotation_take_effect_at_once(client: Client) -> None:
    await client.new_company()
    key, key_id = await client.new_key()
    assert await client.phones(key) == 200
    status, payload = await client.admin("POST", f"/api/admin/companies/initech/keys/{key_id}/rotate", {})
    assert status == 201
    assert payload["data"]["revoked"] == key_id
    rotated, rotated_id = payload["data"]["key"], payload["data"]["key_info"]["id"]
    assert payload["data"]["key_info"]["name"] == "crm"
    assert await client.phones(key) == 401
    assert await client.phones(rotated) == 200
    status, _ = await client.admin("DELETE", f"/api/admin/companies/initech/keys/{rotated_id}")
    assert status == 200
    assert await client.phones(rotated) == 401
    assert (await client.admin("DELETE", f"/api/admin/companies/initech/keys/{rotated_id}"))[0] == 404
    # Another company's key id is unknown here.
    _, acme_key_id = await client.new_key("acme")
    assert (await client.admin("DELETE", f"/api/admin/companies/initech/keys/{acme_key_id}"))[0] == 404


async def test_a_company_key_is_refused_on_every_admin_route(client: Client) -> None:
    admin_ops = _operations(client, "admin")
    assert len(admin_ops) >= 12
    for op in admin_ops:
        body: dict[str, Any] | None = {} if op.body else None
        for headers in ({"X-Admin-Key": ACME_KEY}, {"Authorization": f"Bearer {ACME_KEY}"}, {}):
            status, payload, _ = await client.call(op.method, _path(op), headers, body)
            assert status == 401, (op.method, op.path, headers, payload)
    # Nor does the admin key open a company route.
    assert await client.phones(ADMIN_KEY) == 401


async def test_config_companies_and_keys_are_read_only(client: Client) -> None:
    status, payload = await client.admin("GET", "/api/admin/companies/acme")
    assert status == 200
    assert payload["data"]["company"]["read_only"] is True
    assert ACME_KEY not in json.dumps(payload)
    for method, body in (("PATCH", {"name": "x"}), ("DELETE", None)):
        status, payload = await client.admin(method, "/api/admin/companies/acme", body)
        assert (status, payload["code"]) == (409, "company_read_only")
    keys = (await client.admin("GET", "/api/admin/companies/acme/keys"))[1]["data"]["keys"]
    assert [k["prefix"] for k in keys] == [None, None]
    assert all(k["read_only"] for k in keys)
    status, payload = await client.admin("DELETE", f"/api/admin/companies/acme/keys/{keys[0]['id']}")
    assert (status, payload["code"]) == (409, "key_read_only")
    # Phones are unique across all companies, config and stored.
    status, payload = await client.admin(
        "POST", "/api/admin/companies", {"id": "copycat", "phones": [ACME_PHONE]}
    )
    assert (status, payload["code"]) == (409, "phone_taken")
    status, payload = await client.admin("POST", "/api/admin/companies", {"id": "acme"})
    assert (status, payload["code"]) == (409, "company_exists")
    assert (await client.admin("GET", "/api/admin/companies/nobody"))[0] == 404


async def test_a_disabled_company_is_refused_and_kept(client: Client) -> None:
    await client.new_company()
    key, _ = await client.new_key()
    assert await client.phones(key) == 200
    status, payload = await client.admin("DELETE", "/api/admin/companies/initech")
    assert status == 200
    assert payload["data"]["company"]["enabled"] is False
    assert await client.phones(key) == 401
    connect = {
        "callId": "c-1",
        "event": "connect",
        "callerPhone": "+34600111222",
        "websocketUrl": "ws://127.0.0.1/x",
        "b_number": NEW_PHONE,
    }
    status, _, _ = await client.call(
        "POST", "/api/voip/webhook", {"x-connector-api-key": CONNECTOR_KEY}, connect
    )
    assert status == 404
    # The record stays, and keeps its number from others.
    assert (await client.admin("GET", "/api/admin/companies/initech"))[0] == 200
    status, payload = await client.admin(
        "POST", "/api/admin/companies", {"id": "other", "phones": [NEW_PHONE]}
    )
    assert (status, payload["code"]) == (409, "phone_taken")
    status, payload = await client.admin("PATCH", "/api/admin/companies/initech", {"enabled": True})
    assert status == 200
    assert payload["data"]["company"]["enabled"] is True
    assert await client.phones(key) == 200


async def test_connector_keys_as_data(client: Client) -> None:
    status, payload = await client.admin("POST", "/api/admin/connector/keys", {"name": "pbx-2"})
    assert status == 201
    key, key_id = payload["data"]["key"], payload["data"]["key_info"]["id"]
    connect = {
        "callId": "c-2",
        "event": "connect",
        "callerPhone": "+34600111222",
        "websocketUrl": "ws://127.0.0.1/x",
        "b_number": ACME_PHONE,
    }
    status, _, _ = await client.call("POST", "/api/voip/webhook", {"x-connector-api-key": key}, connect)
    assert status == 200
    keys = (await client.admin("GET", "/api/admin/connector/keys"))[1]["data"]["keys"]
    assert [k["prefix"] for k in keys] == [None, key[:8]]
    assert (await client.admin("DELETE", f"/api/admin/connector/keys/{key_id}"))[0] == 200
    status, _, _ = await client.call("POST", "/api/voip/webhook", {"x-connector-api-key": key}, connect)
    assert status == 401


async def test_reload_and_restart_keep_stored_companies(store_url: str) -> None:
    db = store_url
    services = await start_services(build_settings(_raw(db)))
    try:
        async with aiohttp.ClientSession() as http:
            client = Client(services, http)
            await client.new_company()
            key, _ = await client.new_key()
            # What SIGHUP does: rebuild the directory from freshly read settings.
            holder = services.app[DIRECTORY]
            holder.current = holder.rebuild(build_settings(_raw(db)))
            assert await client.phones(key) == 200
            assert await client.phones(ACME_KEY) == 200
    finally:
        await services.close()
    services = await start_services(build_settings(_raw(db)))
    try:
        async with aiohttp.ClientSession() as http:
            client = Client(services, http)
            assert await client.phones(key) == 200
            listed = (await client.admin("GET", "/api/admin/companies/initech/keys"))[1]["data"]["keys"]
            assert listed[0]["last_used_at"] is not None  # flushed at shutdown
    finally:
        await services.close()


async def test_company_validation_errors_are_400(client: Client) -> None:
    for body in (
        {"id": "bad id"},
        {"id": "x", "phones": ["12"]},
        {"id": "x", "agent": {"provider": "nope"}},
        {"id": "x", "limits": {"requests_per_minute": 0}},
        {"id": "x", "surprise": 1},
    ):
        status, payload = await client.admin("POST", "/api/admin/companies", body)
        assert status == 400, (body, payload)
    status, payload = await client.admin("GET", "/api/admin/companies?limit=1&offset=1")
    assert status == 200
    assert payload["data"]["pagination"] == {"total": 2, "limit": 1, "offset": 1}
    assert [c["id"] for c in payload["data"]["companies"]] == ["globex"]


def test_an_admin_key_may_not_also_be_a_company_key(tmp_path: Path) -> None:
    raw = _raw(f"sqlite:///{tmp_path / 'bridge.db'}")
    raw["admin"] = {"api_keys": [ACME_KEY]}
    with pytest.raises(ConfigError, match=r"admin\.api_keys\[0\]: the same API key is already used"):
        build_settings(raw)
