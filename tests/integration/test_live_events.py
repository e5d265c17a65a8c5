"""Live call events: the token, the socket, and what streams over it during real calls."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.api.routes_live import LIVE_TOKENS
from bridge.app import Services
from bridge.session.state import CallState
from bridge.settings import build_settings
from bridge.simulate import AudioSource, SimulatedCallOptions, run_simulated_call
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import (
    ACME_KEY,
    ACME_PHONE,
    CONNECTOR_KEY,
    GLOBEX_KEY,
    GLOBEX_PHONE,
    raw_config,
    utterances,
)

StartBridge = Callable[..., Any]
FAKE_KEY = "sk-test-key"
DEADLINE = 30.0


@pytest.fixture
async def realtime() -> AsyncIterator[FakeRealtimeServer]:
    server = FakeRealtimeServer(
        api_key=FAKE_KEY, script=Script(greeting_reply_ms=600, turns=(Turn(reply_ms=500),))
    )
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(services: Services) -> str:
    return f"http://127.0.0.1:{services.http_port}"


async def announce(services: Services, http: aiohttp.ClientSession, call_id: str, company: str) -> None:
    caller, called = ("+34600111222", ACME_PHONE) if company == "acme" else ("+15551234567", GLOBEX_PHONE)
    body = {
        "callId": call_id,
        "event": "connect",
        "callerPhone": caller,
        "b_number": called,
        "websocketUrl": "ws://127.0.0.1/x",
    }
    headers = {"x-connector-api-key": CONNECTOR_KEY}
    async with http.post(base(services) + "/api/voip/webhook", json=body, headers=headers) as reply:
        assert reply.status == 200, await reply.text()


async def live_access(
    services: Services, http: aiohttp.ClientSession, call_id: str, key: str = ACME_KEY
) -> tuple[int, dict[str, Any]]:
    url = f"{base(services)}/api/calls/{call_id}/live"
    async with http.get(url, headers={"X-API-Key": key}) as reply:
        return reply.status, await reply.json()


async def refused(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    """Try to open the socket; it must be refused before the upgrade, in the JSON envelope."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(url)
    assert caught.value.status != 101
    async with http.get(url) as reply:  # the same request without the upgrade shows the body
        assert reply.status == caught.value.status
        return reply.status, await reply.json()


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_the_socket_streams_a_whole_call_with_the_openai_model(
    bridge_factory: StartBridge, realtime: FakeRealtimeServer, http: aiohttp.ClientSession
) -> None:
    raw = raw_config()
    raw["companies"][0]["agent"] = {"provider": "openai", "greeting": "Hello, Acme here."}
    raw["providers"] = {"openai": {"api_key": FAKE_KEY, "url": realtime.url, "model": "gpt-realtime"}}
    services = await bridge_factory(settings=build_settings(raw))
    # Announced first, so the stream is open before the call's media and sees every change.
    await announce(services, http, "live-1", "acme")
    status, reply = await live_access(services, http, "live-1")
    assert status == 200, reply
    access = reply["data"]
    assert access["websocket_url"].startswith("ws://127.0.0.1:")
    assert access["token"] in access["websocket_url"]
    assert access["expires_at"].endswith("Z")
    events: list[dict[str, Any]] = []
    async with http.ws_connect(access["websocket_url"]) as ws:
        options = SimulatedCallOptions(
            url=base(services),
            connector_key=CONNECTOR_KEY,
            call_id="live-1",
            caller="+34600111222",
            called=ACME_PHONE,
            send_webhook=False,
            format="ulaw",
            audio=AudioSource(pcm=utterances(8000, [(1.5, 2.5)]), sample_rate=8000),
            seconds=5.0,
        )
        call = asyncio.ensure_future(run_simulated_call(options))
        async with asyncio.timeout(DEADLINE):
            async for message in ws:
                assert message.type is aiohttp.WSMsgType.TEXT
                events.append(message.json())
        assert ws.close_code == 1000
        await call
    realtime.assert_clean()
    assert events[0] == {"type": "connected", "call_id": "live-1", "status": "pending"}
    statuses = [e["status"] for e in events if e["type"] == "call_status_update"]
    assert statuses[:2] == ["connecting", "active"]
    assert statuses[-1] == "ended"
    assert events[-1]["type"] == "call_status_update"
    assert events[-1]["disconnected_by"] == "caller"
    lines = [e for e in events if e["type"] == "transcript_update"]
    assert {line["role"] for line in lines} == {"bot", "caller"}
    assert all(line["call_id"] == "live-1" and line["at"].endswith("Z") for line in lines)
    # The stream's last version of each line is what the record keeps.
    latest = {line["index"]: (line["role"], line["text"]) for line in lines}
    record = await services.calls.record("acme", "live-1")
    assert [latest[i] for i in sorted(latest)] == [(line.role, line.text) for line in record.transcript]
    hub = services.live
    assert hub is not None
    await wait_for(lambda: hub.subscribers("live-1") == 0, "the socket's end")  # its close came first


async def test_bad_tokens_are_refused_before_the_upgrade(
    bridge_factory: StartBridge, http: aiohttp.ClientSession
) -> None:
    services = await bridge_factory()
    for call_id, company in (("acme-a", "acme"), ("acme-b", "acme"), ("globex-a", "globex")):
        await announce(services, http, call_id, company)
    status, reply = await live_access(services, http, "acme-a")
    assert status == 200
    token: str = reply["data"]["token"]
    root = f"ws://127.0.0.1:{services.http_port}/api/calls"

    # Another company cannot even ask for a token: the call is not theirs (404, as for an unknown id).
    assert (await live_access(services, http, "acme-a", GLOBEX_KEY))[1]["code"] == "unknown_call"
    assert (await live_access(services, http, "nobody", ACME_KEY))[1]["code"] == "unknown_call"
    # Another call's token, another company's token, a tampered one, none at all: 401.
    _, globex = await live_access(services, http, "globex-a", GLOBEX_KEY)
    expires, company, mac = token.split(".")
    flipped = mac[:-1] + ("0" if mac[-1] != "0" else "1")
    cases = {
        "other call": f"{root}/acme-b/live/socket?token={token}",
        "other company": f"{root}/acme-a/live/socket?token={globex['data']['token']}",
        "tampered mac": f"{root}/acme-a/live/socket?token={expires}.{company}.{flipped}",
        "longer life": f"{root}/acme-a/live/socket?token={int(expires) + 3600}.{company}.{mac}",
        "other company claimed": f"{root}/acme-a/live/socket?token={expires}.Z2xvYmV4.{mac}",
        "garbage": f"{root}/acme-a/live/socket?token=abc",
        "missing": f"{root}/acme-a/live/socket",
    }
    for case, url in cases.items():
        status, body = await refused(http, url)
        assert status == 401, case
        assert body["success"] is False
        assert body["code"] in ("invalid_token", "unauthorized"), (case, body)
    # Expired: a token issued six minutes ago.
    tokens = services.app[LIVE_TOKENS]
    real_clock = tokens.clock
    tokens.clock = lambda: real_clock() - 360
    try:
        old = tokens.issue("acme-a", "acme").token
    finally:
        tokens.clock = real_clock
    status, body = await refused(http, f"{root}/acme-a/live/socket?token={old}")
    assert (status, body["code"]) == (401, "token_expired")
    # The good token works, and the token is the only credential the socket needs.
    async with http.ws_connect(f"{root}/acme-a/live/socket?token={token}") as ws:
        first = await ws.receive_json(timeout=DEADLINE)
        assert first == {"type": "connected", "call_id": "acme-a", "status": "pending"}
        await ws.send_json({"type": "ping"})
        assert await ws.receive_json(timeout=DEADLINE) == {"type": "pong"}
    # Once the call is over: 409 for a new token, and the old one opens nothing.
    async with http.post(f"{base(services)}/api/calls/acme-a/end", headers={"X-API-Key": ACME_KEY}) as ended:
        assert ended.status == 200
    status, reply = await live_access(services, http, "acme-a")
    assert (status, reply["code"]) == (409, "call_finished")
    status, body = await refused(http, f"{root}/acme-a/live/socket?token={token}")
    assert (status, body["code"]) == (409, "call_finished")


async def test_a_slow_consumer_is_dropped_and_the_call_goes_on(
    bridge_factory: StartBridge, http: aiohttp.ClientSession
) -> None:
    services = await bridge_factory()
    assert services.live is not None
    services.live.queue_size = 16  # drop sooner; the mechanism is the same at any size
    options = SimulatedCallOptions(
        url=base(services),
        connector_key=CONNECTOR_KEY,
        call_id="slow-1",
        caller="+34600111222",
        called=ACME_PHONE,
        send_webhook=False,
        format="ulaw",
        audio=AudioSource(pcm=b"\x00\x00" * 8000, sample_rate=8000),
        seconds=120,
        wait_for_bridge_hangup=True,
    )
    call = asyncio.ensure_future(run_simulated_call(options))
    await wait_for(
        lambda: (s := services.manager.get("slow-1")) is not None and s.state is CallState.ACTIVE, "active"
    )
    session = services.manager.get("slow-1")
    assert session is not None
    _, reply = await live_access(services, http, "slow-1")
    url = reply["data"]["websocket_url"]
    # The slow one: a raw socket with a tiny receive buffer that never reads after the handshake.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", services.http_port))
    reader, writer = await asyncio.open_connection(sock=sock)
    path = url.split(str(services.http_port), 1)[1]
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE)
    assert head.startswith(b"HTTP/1.1 101")
    fast_events: list[dict[str, Any]] = []
    async with http.ws_connect(url) as fast:
        assert (await fast.receive_json(timeout=DEADLINE))["type"] == "connected"
        await wait_for(lambda: services.live is not None and services.live.subscribers("slow-1") == 2, "subs")

        async def read_fast() -> None:
            async for message in fast:
                fast_events.append(message.json())

        reading = asyncio.ensure_future(read_fast())
        sent = 0
        deadline = time.monotonic() + DEADLINE
        while services.live.dropped == 0:
            assert time.monotonic() < deadline, "the slow consumer was never dropped"
            for _ in range(4):  # bursts of long lines, as fast as the session can add them
                session.add_line("bot", f"{sent:06d} " + "x" * 8000)
                sent += 1
            await asyncio.sleep(0.02)
        # Dropped: its socket is closed (or aborted), the other subscriber stays, the call goes on.
        await wait_for(lambda: services.live is not None and services.live.subscribers("slow-1") == 1, "drop")
        assert session.state is CallState.ACTIVE
        session.add_line("caller", "still here")
        await wait_for(lambda: any(e.get("text") == "still here" for e in fast_events), "the next line")
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(DEADLINE):
                while await reader.read(65536):
                    pass  # drain what was buffered; the server has closed its side
        writer.close()
        async with http.post(f"{base(services)}/api/calls/slow-1/end", headers={"X-API-Key": ACME_KEY}):
            pass
        await asyncio.wait_for(reading, DEADLINE)
    await call
    texts = [e["text"][:6] for e in fast_events if e["type"] == "transcript_update"]
    assert texts[:sent] == [f"{n:06d}" for n in range(sent)]  # the fast one missed nothing
    assert fast_events[-1]["type"] == "call_status_update"
    assert fast_events[-1]["status"] == "ended"
