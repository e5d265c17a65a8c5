"""Every way to authenticate, and every way to fail it, over a real loopback socket."""

from __future__ import annotations

import pytest

from tests.conftest import ApiFactory
from tests.helpers import ACME_KEY, ACME_KEY_2, CONNECTOR_KEY, GLOBEX_KEY

WEBHOOK = {
    "callId": "call-1",
    "event": "connect",
    "callerPhone": "+34600111222",
    "b_number": "34987654321",
    "websocketUrl": "ws://127.0.0.1:8080/api/real-time-voice-stream",
}


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"api_key": ACME_KEY}, {}),
        ({}, {"Authorization": f"Bearer {ACME_KEY}"}),
        ({}, {"X-API-Key": ACME_KEY}),
        ({}, {"X-API-Key": ACME_KEY_2}),  # a plain (unhashed) key in config works too
    ],
    ids=["query", "bearer", "x-api-key", "plain-config-key"],
)
async def test_company_key_three_ways(
    api_client_factory: ApiFactory, params: dict[str, str], headers: dict[str, str]
) -> None:
    client, _ = await api_client_factory()
    response = await client.get("/api/phones", params=params, headers=headers)
    assert response.status == 200
    assert await response.json() == {"success": True, "data": {"phones": ["+34987654321"]}}


@pytest.mark.parametrize(
    ("params", "headers", "message"),
    [
        ({}, {}, "an API key is required"),
        ({"api_key": "wrong"}, {}, "invalid API key"),
        ({}, {"Authorization": "Bearer wrong"}, "invalid API key"),
        ({}, {"Authorization": f"Basic {ACME_KEY}"}, "invalid API key"),  # a credential we cannot check
        ({}, {"X-API-Key": CONNECTOR_KEY}, "invalid API key"),  # a connector key is not a company key
        # Every key presented must be good: a wrong or empty one beside a good one is refused.
        ({"api_key": ""}, {"X-API-Key": ACME_KEY}, "invalid API key"),
        ({}, {"X-API-Key": ACME_KEY, "Authorization": "Bearer wrong"}, "invalid API key"),
        ({}, {"X-API-Key": ACME_KEY, "Authorization": f"Bearer {GLOBEX_KEY}"}, "invalid API key"),
    ],
    ids=[
        "missing",
        "wrong-query",
        "wrong-bearer",
        "not-bearer",
        "connector-key",
        "empty-beside-good",
        "wrong-beside-good",
        "two-companies",
    ],
)
async def test_company_key_refused(
    api_client_factory: ApiFactory, params: dict[str, str], headers: dict[str, str], message: str
) -> None:
    client, _ = await api_client_factory()
    response = await client.get("/api/emails", params=params, headers=headers)
    assert response.status == 401
    body = await response.json()
    assert body == {"success": False, "error": body["error"], "code": "unauthorized"}
    assert message in body["error"]


async def test_each_company_sees_only_its_own_data(api_client_factory: ApiFactory) -> None:
    client, _ = await api_client_factory()
    acme = await (await client.get("/api/phones", headers={"X-API-Key": ACME_KEY})).json()
    globex = await (await client.get("/api/phones", headers={"X-API-Key": GLOBEX_KEY})).json()
    assert acme["data"]["phones"] == ["+34987654321"]
    assert globex["data"]["phones"] == ["+442071234567"]


@pytest.mark.parametrize(
    "headers",
    [{"x-connector-api-key": CONNECTOR_KEY}, {"Authorization": f"Bearer {CONNECTOR_KEY}"}],
    ids=["x-connector-api-key", "bearer"],
)
async def test_connector_key_two_ways(api_client_factory: ApiFactory, headers: dict[str, str]) -> None:
    client, manager = await api_client_factory()
    response = await client.post("/api/voip/webhook", json=WEBHOOK, headers=headers)
    assert response.status == 200
    assert manager.get("call-1") is not None


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-connector-api-key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"X-API-Key": ACME_KEY},
        {"x-connector-api-key": ACME_KEY},
    ],
    ids=["missing", "wrong-header", "wrong-bearer", "company-key-header", "company-key-as-connector"],
)
async def test_connector_key_refused(api_client_factory: ApiFactory, headers: dict[str, str]) -> None:
    client, manager = await api_client_factory()
    response = await client.post("/api/voip/webhook", json=WEBHOOK, headers=headers)
    assert response.status == 401
    assert (await response.json())["code"] == "unauthorized"
    assert manager.get("call-1") is None


async def test_keys_never_appear_in_responses_or_logs(
    api_client_factory: ApiFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.logging import configure_logging

    configure_logging("debug", "json")
    client, _ = await api_client_factory()
    response = await client.get("/api/phones", params={"api_key": "guessed-key-123"})
    text = await response.text()
    response = await client.get("/api/phones", params={"api_key": ACME_KEY})
    text += await response.text()
    captured = capsys.readouterr()
    for secret in ("guessed-key-123", ACME_KEY):
        assert secret not in text
        assert secret not in captured.err + captured.out
    assert '"path": "/api/phones"' in captured.err
