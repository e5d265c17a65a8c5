"""What a hostile or careless client sends gets a clear 4xx in the envelope, never a 500, and loses
nothing; refusals carry Retry-After where waiting helps and are counted."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import connect

from bridge.app import Services
from tests.helpers import ACME_KEY, CONNECTOR_KEY

StartBridge = Callable[..., Any]


async def raw_exchange(port: int, request: bytes, *, pause: float = 0.0, tail: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    if pause:
        await asyncio.sleep(pause)
        writer.write(tail)
        await writer.drain()
    reply = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return reply


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: bridge", "Content-Type: application/json", *headers]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def status_and_body(reply: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested deeper"),
        (b"[" * 100_000, "nested deeper"),
        (b'{"callId": "c", "callId": "d"}', "duplicate key"),
        (b'{"callId": "c", "event": "connect", "b_number": NaN}', "NaN"),
        (b'{"x": 1e999}', "out of range"),
        (b'{"callerName": "\\ud800"}', "surrogate"),
    ],
)
async def test_hostile_json_is_a_400(bridge_factory: StartBridge, body: bytes, fragment: str) -> None:
    services: Services = await bridge_factory(max_body_bytes=1_000_000)
    reply = await raw_exchange(
        services.http_port, post("/api/voip/webhook", body, f"x-connector-api-key: {CONNECTOR_KEY}")
    )
    status, payload = status_and_body(reply)
    assert (status, payload["success"], payload["code"]) == (400, False, "invalid_json")
    assert fragment in payload["error"]


async def test_a_spoofed_caller_by_duplicate_key_is_refused(bridge_factory: StartBridge) -> None:
    # The sample dialplan once let a display name add keys: Python keeps the last duplicate.
    body = (
        b'{"callId": "c-1", "event": "connect", "callerPhone": "+34600111222", "callerName": "x",'
        b' "callerPhone": "+15551234567", "b_number": "+442071234567", "websocketUrl": "ws://h/x"}'
    )
    services: Services = await bridge_factory()
    reply = await raw_exchange(
        services.http_port, post("/api/voip/webhook", body, f"x-connector-api-key: {CONNECTOR_KEY}")
    )
    assert status_and_body(reply)[0] == 400
    assert services.manager.get("c-1") is None


@pytest.mark.parametrize(
    "query",
    [
        "from=nan",
        "from=inf",
        "to=-inf",
        "from=34987654321",  # a phone number is not a date
        "from=1767225600000",  # milliseconds
        "start_date=2026-01-01T00:00:00",  # no zone
        "limit=1e3",
        "limit=101",
        "offset=-1",
        "status=bogus",
        "status=ended&status=failed",
    ],
)
async def test_bad_query_parameters_are_a_400(bridge_factory: StartBridge, query: str) -> None:
    services: Services = await bridge_factory()
    request = f"GET /api/calls?{query} HTTP/1.1\r\nHost: b\r\nX-API-Key: {ACME_KEY}\r\n\r\n".encode()
    status, payload = status_and_body(await raw_exchange(services.http_port, request))
    assert (status, payload["code"]) == (400, "validation_error"), payload


async def test_dates_in_either_form_and_name_are_accepted(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    for query in (
        "from=1767225600&to=1767312000",
        "start_date=2026-01-01T00:00:00Z&end_date=2026-01-02T00:00:00%2B01:00",
        "from=1767225600&start_date=2026-06-01T00:00:00Z",  # both: the narrower bound holds
        "from=1767312000&to=1767225600",  # an empty range is an empty page
    ):
        request = f"GET /api/calls?{query} HTTP/1.1\r\nHost: b\r\nX-API-Key: {ACME_KEY}\r\n\r\n".encode()
        status, payload = status_and_body(await raw_exchange(services.http_port, request))
        assert status == 200, payload
        assert payload["data"]["calls"] == []


@pytest.mark.parametrize("header", ["X-API-Key", "Authorization", "x-connector-api-key"])
async def test_a_header_that_is_not_utf8_is_a_400(bridge_factory: StartBridge, header: str) -> None:
    services: Services = await bridge_factory()
    path = "/api/voip/webhook" if header == "x-connector-api-key" else "/api/phones"
    method = "POST" if header == "x-connector-api-key" else "GET"
    value = b"Bearer \xff\xfe" if header == "Authorization" else b"\xff\xfe"
    request = f"{method} {path} HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n".encode()
    request += header.encode() + b": " + value + b"\r\n\r\n{}"
    status, payload = status_and_body(await raw_exchange(services.http_port, request))
    assert (status, payload["code"]) == (400, "invalid_header")


async def test_a_body_that_never_arrives_is_a_408(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory(body_timeout_seconds=0.3)
    head = (
        "POST /api/voip/webhook HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        f"x-connector-api-key: {CONNECTOR_KEY}\r\nContent-Length: 100\r\n\r\n"
    )
    reply = await raw_exchange(services.http_port, head.encode() + b'{"callId":')
    status, payload = status_and_body(reply)
    assert (status, payload["code"]) == (408, "request_timeout")


async def test_a_media_socket_at_capacity_gets_503_with_retry_after(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory(max_calls=1)
    basic = "Basic " + base64.b64encode(f"asterisk:{CONNECTOR_KEY}".encode()).decode()
    url = f"ws://127.0.0.1:{services.http_port}/api/real-time-voice-stream"
    async with connect(
        url + "?callId=a-1&aNumberE164=34600111222&bNumberE164=34987654321",
        subprotocols=[websockets.Subprotocol("media")],
        additional_headers={"Authorization": basic},
    ):
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(
                url + "?callId=a-2&aNumberE164=34600111222&bNumberE164=34987654321",
                subprotocols=[websockets.Subprotocol("media")],
                additional_headers={"Authorization": basic},
            )
        response = info.value.response
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert json.loads(response.body or b"{}")["code"] == "at_capacity"
    reply = await raw_exchange(services.http_port, b"GET /metrics HTTP/1.1\r\nHost: b\r\n\r\n")
    assert b'bridge_calls_rejected_total{reason="at_capacity"} 1' in reply


async def test_the_openapi_document_is_public_and_lists_the_api(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", services.http_port)
    writer.write(b"GET /api/openapi.json HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
    reply = await asyncio.wait_for(reader.read(), 10)  # the whole document: it is over one read's 64 KiB
    writer.close()
    status, document = status_and_body(reply)
    assert status == 200
    assert document["openapi"].startswith("3.1")
    assert {"/api/voip/webhook", "/api/calls", "/api/real-time-voice-stream", "/health"} <= set(
        document["paths"]
    )
    webhook = document["paths"]["/api/voip/webhook"]["post"]
    assert webhook["security"] == [{"connectorKey": []}, {"bearer": []}]
    assert {"400", "401", "403", "404", "409", "413", "503"} <= set(webhook["responses"])
    assert "Retry-After" in webhook["responses"]["503"]["headers"]
