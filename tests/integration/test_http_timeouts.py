"""The HTTP header-read deadline (slowloris guard), over raw loopback sockets against the whole daemon."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.app import Services
from bridge.simulate import SimulatedCallOptions, run_simulated_call
from tests.helpers import CONNECTOR_KEY

StartBridge = Callable[..., Any]
HEADER_TIMEOUT = 0.5
# Far past the deadline: a guard that never fires fails the test instead of hanging it.
GIVE_UP_SECONDS = 10.0
HEALTH_REQUEST = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@pytest.fixture
async def bridge(bridge_factory: StartBridge) -> Services:
    services: Services = await bridge_factory(header_timeout_seconds=HEADER_TIMEOUT)
    return services


@contextlib.asynccontextmanager
async def connect(services: Services) -> AsyncIterator[Connection]:
    reader, writer = await asyncio.open_connection("127.0.0.1", services.http_port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GIVE_UP_SECONDS)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in header_lines if line)
    body = await asyncio.wait_for(reader.readexactly(int(headers["Content-Length"])), GIVE_UP_SECONDS)
    return int(status_line.split()[1]), body


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True once the server closes without answering; False if it answers or is still open at the end."""
    try:
        data = await asyncio.wait_for(reader.read(1024), GIVE_UP_SECONDS)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return data == b""


async def trickle_until_closed(connection: Connection, start: bytes) -> tuple[bool, int]:
    """Send `start`, then one header byte every 0.2 s: (was the connection closed, bytes trickled)."""
    reader, writer = connection
    writer.write(start + b"X-Slow: ")
    trickled = 0
    while trickled * 0.2 < GIVE_UP_SECONDS:
        try:
            writer.write(b"a")
            await writer.drain()
        except ConnectionError:
            return True, trickled
        trickled += 1
        try:
            data = await asyncio.wait_for(reader.read(1024), 0.2)
        except TimeoutError:
            continue
        except ConnectionError:
            return True, trickled
        assert data == b"", f"the server answered a request whose headers never ended: {data!r}"
        return True, trickled
    return False, trickled


async def test_a_request_whose_headers_trickle_in_is_cut_off(bridge: Services) -> None:
    async with connect(bridge) as connection:
        closed, trickled = await trickle_until_closed(connection, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert closed
    assert trickled >= 1  # it was open while the headers were still within their deadline


async def test_a_connection_that_never_sends_is_closed(bridge: Services) -> None:
    async with connect(bridge) as (reader, _):
        assert await closed_by_server(reader)


async def test_whole_requests_work_and_an_idle_keep_alive_connection_is_not_cut(bridge: Services) -> None:
    async with connect(bridge) as connection:
        reader, writer = connection
        writer.write(HEALTH_REQUEST)
        status, body = await read_response(reader)
        assert status == 200
        assert json.loads(body)["status"] == "ok"
        # Idle for twice the header deadline: that is the keep-alive timer's business, not this guard's.
        await asyncio.sleep(HEADER_TIMEOUT * 2)
        writer.write(HEALTH_REQUEST)
        assert (await read_response(reader))[0] == 200
        # The next request's clock starts at its first byte: trickled, it is cut like the first would be.
        await asyncio.sleep(HEADER_TIMEOUT * 2)
        closed, trickled = await trickle_until_closed(connection, b"GET /health HTTP/1.1\r\n")
    assert closed
    assert trickled >= 1


async def test_pipelined_requests_are_all_answered(bridge: Services) -> None:
    async with connect(bridge) as (reader, writer):
        writer.write(HEALTH_REQUEST * 3)
        for _ in range(3):
            assert (await read_response(reader))[0] == 200


async def test_a_slow_body_is_not_the_header_guards_business(bridge: Services) -> None:
    body = json.dumps(
        {
            "callId": "slow-body-1",
            "event": "connect",
            "callerPhone": "+34600000000",
            "b_number": "34987654321",
            "websocketUrl": "ws://127.0.0.1/x",
        }
    ).encode()
    head = (
        "POST /api/voip/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"x-connector-api-key: {CONNECTOR_KEY}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    async with connect(bridge) as (reader, writer):
        writer.write(head)
        # The body takes three header deadlines to arrive; the head was complete, so nothing is cut.
        third = len(body) // 3
        for piece in (body[:third], body[third : 2 * third], body[2 * third :]):
            await asyncio.sleep(HEADER_TIMEOUT)
            writer.write(piece)
        status, answer = await read_response(reader)
    assert status == 200, answer


async def test_a_media_websocket_outlives_the_header_deadline(bridge: Services) -> None:
    summary = await run_simulated_call(
        SimulatedCallOptions(
            url=f"http://127.0.0.1:{bridge.http_port}",
            connector_key=CONNECTOR_KEY,
            called="+34987654321",
            ws_username="asterisk",
            ws_password=CONNECTOR_KEY,
            seconds=HEADER_TIMEOUT * 4,
        )
    )
    assert summary.ok, summary.errors
    assert summary.hangup_by == "caller"
