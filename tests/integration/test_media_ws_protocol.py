"""chan_websocket edge cases, driven by hand with the `websockets` client (a second implementation)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import Services
from bridge.session.state import CallState, EndedBy
from bridge.settings import build_settings
from tests.helpers import CONNECTOR_KEY, raw_config, voiced

StartBridge = Callable[..., Any]
FRAME = 640  # slin16, 20 ms


def media_start(fmt: str = "slin16", frame: int = FRAME) -> str:
    return json.dumps(
        {
            "event": "MEDIA_START",
            "connection_id": "bridge_media",
            "channel": "WebSocket/bridge_media/0x1",
            "channel_id": "1767225600.1",
            "format": fmt,
            "optimal_frame_size": frame,
            "ptime": 20,
            "channel_variables": {},
        },
        separators=(",", ":"),
    )


def url(services: Services, **query: str) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"ws://127.0.0.1:{services.http_port}/api/real-time-voice-stream?{params}"


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"asterisk:{password}".encode()).decode()}


async def open_call(services: Services, call_id: str, **extra: Any) -> ClientConnection:
    query = {"callId": call_id, "aNumberE164": "34600111222", "bNumberE164": "34987654321"}
    return await connect(
        url(services, **query),
        subprotocols=[websockets.Subprotocol("media")],
        compression=None,
        additional_headers=basic(CONNECTOR_KEY),
        **extra,
    )


async def next_text(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(ws.recv(), timeout)
        if isinstance(message, str):
            parsed: dict[str, Any] = json.loads(message)
            return parsed


async def wait_state(services: Services, call_id: str, state: CallState) -> None:
    for _ in range(250):
        session = services.manager.get(call_id)
        if session is not None and session.state is state:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{call_id} never reached {state}")


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ({"bNumberE164": "34987654321"}, {}, 401),  # no credentials, no call id
        ({"callId": "nobody-announced-me"}, {}, 401),  # no credentials: refused before any lookup
        ({"callId": "x", "bNumberE164": "34987654321"}, basic("wrong"), 401),
        ({"callId": "x", "bNumberE164": "19999999999"}, basic(CONNECTOR_KEY), 404),  # no such company number
        ({"callId": "bad!id", "bNumberE164": "34987654321"}, basic(CONNECTOR_KEY), 400),
        ({"callId": "x", "bNumberE164": "3498765432x"}, basic(CONNECTOR_KEY), 400),  # not a number
        ({"callId": "x"}, basic(CONNECTOR_KEY), 404),  # a webhook-less call must name the called number
        ({"callId": "x", "bNumberE164": "34987654321"}, {"Authorization": "Basic \u00e9\u00e9"}, 401),
    ],
)
async def test_refused_before_the_upgrade(
    bridge_factory: StartBridge, query: dict[str, str], headers: dict[str, str], status: int
) -> None:
    services: Services = await bridge_factory()
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(
            url(services, **query), subprotocols=[websockets.Subprotocol("media")], additional_headers=headers
        )
    assert info.value.response.status_code == status
    assert services.manager.capacity().active_calls == 0


async def announce(services: Services, call_id: str) -> None:
    async with aiohttp.ClientSession() as http:
        body = {
            "callId": call_id,
            "event": "connect",
            "callerPhone": "+34600111222",
            "b_number": "+34987654321",
            "websocketUrl": "ws://127.0.0.1/x",
        }
        async with http.post(
            f"http://127.0.0.1:{services.http_port}/api/voip/webhook",
            json=body,
            headers={"x-connector-api-key": CONNECTOR_KEY},
        ) as response:
            assert response.status == 200


async def test_a_pending_call_needs_credentials_to_attach(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    await announce(services, "p-1")
    # A guessed call id is not enough: refused before the upgrade, and the call is untouched.
    with pytest.raises(websockets.InvalidStatus) as info:
        await connect(url(services, callId="p-1"), subprotocols=[websockets.Subprotocol("media")])
    assert info.value.response.status_code == 401
    # Neither does a plain GET touch the call (it once failed it with upgrade_failed).
    async with (
        aiohttp.ClientSession() as http,
        http.get(url(services, callId="p-1").replace("ws://", "http://")) as plain,
    ):
        assert plain.status == 400
        assert (await plain.json())["code"] == "websocket_required"
    session = services.manager.get("p-1")
    assert session is not None
    assert session.state is CallState.PENDING
    # The PBX's own socket, with the connector's credentials, attaches.
    async with connect(
        url(services, callId="p-1"),
        subprotocols=[websockets.Subprotocol("media")],
        additional_headers=basic(CONNECTOR_KEY),
    ) as ws:
        await ws.send(media_start())
        await wait_state(services, "p-1", CallState.ACTIVE)
        # A second socket for the same call is refused.
        with pytest.raises(websockets.InvalidStatus) as second:
            await connect(
                url(services, callId="p-1"),
                subprotocols=[websockets.Subprotocol("media")],
                additional_headers=basic(CONNECTOR_KEY),
            )
        assert second.value.response.status_code == 409


async def test_allow_unauthenticated_media_lets_a_pending_call_attach_without_credentials(
    bridge_factory: StartBridge,
) -> None:
    raw = raw_config()
    raw["connector"]["allow_unauthenticated_media"] = True
    services: Services = await bridge_factory(settings=build_settings(raw))
    await announce(services, "p-1")
    async with connect(
        url(services, callId="p-1"), subprotocols=[websockets.Subprotocol("media")], compression=None
    ) as ws:
        assert ws.subprotocol == "media"
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        await ws.send(media_start())
        await wait_state(services, "p-1", CallState.ACTIVE)
        session = services.manager.get("p-1")
        assert session is not None
        assert session.company_id == "acme"
    # Still: no credentials cannot create a call, and an unknown id is 404.
    for query, status in (({"bNumberE164": "34987654321"}, 401), ({"callId": "nobody"}, 404)):
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(url(services, **query), subprotocols=[websockets.Subprotocol("media")])
        assert info.value.response.status_code == status


async def test_audio_before_media_start_is_kept(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    speech = voiced(16000, 0.4).tobytes()
    async with await open_call(services, "early-1") as ws:
        for i in range(0, len(speech), FRAME):  # Asterisk under load: audio first, MEDIA_START late
            await ws.send(speech[i : i + FRAME])
        await ws.send(media_start())
        echoed = 0
        while echoed < len(speech) // 2:
            message = await asyncio.wait_for(ws.recv(), 5)
            if isinstance(message, bytes):
                echoed += len(message)
    assert echoed >= len(speech) // 2


async def test_malformed_control_is_logged_and_the_call_continues(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    async with await open_call(services, "bad-text-1") as ws:
        await ws.send(media_start())
        await wait_state(services, "bad-text-1", CallState.ACTIVE)
        for junk in ("{not json", "NOT_AN_EVENT foo", '{"event":"MEDIA_XOFF","channel_id":5}', ""):
            await ws.send(junk)
        await ws.send(b"\x00" * FRAME)
        await asyncio.sleep(0.2)
        session = services.manager.get("bad-text-1")
        assert session is not None
        assert session.state is CallState.ACTIVE


async def test_garbage_binary_closes_with_a_reason(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    ws = await open_call(services, "garbage-1")
    await ws.send(media_start())
    await wait_state(services, "garbage-1", CallState.ACTIVE)
    session = services.manager.get("garbage-1")
    assert session is not None
    await ws.send(b"\x01\x02\x03")  # three bytes cannot be 16-bit samples
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1003
    assert "not whole samples" in (ws.close_reason or "")
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.disconnected_by is EndedBy.ERROR
    assert session.error_code == "protocol_error"


async def test_over_size_message_ends_the_call_as_error(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    ws = await open_call(services, "huge-1", max_size=None)
    await ws.send(media_start())
    await wait_state(services, "huge-1", CallState.ACTIVE)
    session = services.manager.get("huge-1")
    assert session is not None
    await ws.send(b"\x00" * 70_000)
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.disconnected_by is EndedBy.ERROR
    await asyncio.wait_for(ws.wait_closed(), 5)
    assert ws.close_code == 1009


async def test_xoff_stops_the_sender_until_xon(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    speech = voiced(16000, 0.02).tobytes()
    async with await open_call(services, "xoff-1") as ws:
        await ws.send(media_start())
        await wait_state(services, "xoff-1", CallState.ACTIVE)
        await ws.send(json.dumps({"event": "MEDIA_XOFF", "channel_id": "1767225600.1"}))
        for _ in range(40):  # 800 ms of caller audio: the echo has plenty to say
            await ws.send(speech)
            await asyncio.sleep(0.02)
        received_during_xoff = 0
        with pytest.raises(TimeoutError):
            while True:
                message = await asyncio.wait_for(ws.recv(), 0.3)
                received_during_xoff += isinstance(message, bytes)
        assert received_during_xoff == 0
        await ws.send(json.dumps({"event": "MEDIA_XON", "channel_id": "1767225600.1"}))
        # XON only says "below 800 frames"; the bridge asks how deep exactly before it resumes.
        assert (await next_text(ws)) == {"command": "GET_STATUS"}
        await ws.send(
            json.dumps(
                {
                    "event": "STATUS",
                    "channel_id": "1767225600.1",
                    "queue_length": 0,
                    "xon_level": 800,
                    "xoff_level": 900,
                    "queue_full": False,
                    "bulk_media": False,
                    "media_paused": False,
                }
            )
        )
        resumed = 0
        while resumed == 0:
            message = await asyncio.wait_for(ws.recv(), 5)
            if isinstance(message, bytes):
                resumed += len(message)
    assert resumed > 0


async def test_dtmf_reaches_the_session(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    async with await open_call(services, "dtmf-1") as ws:
        await ws.send(media_start())
        await wait_state(services, "dtmf-1", CallState.ACTIVE)
        await ws.send(json.dumps({"event": "DTMF_END", "digit": "7", "channel_id": "1767225600.1"}))
        await ws.send(b"\x00" * FRAME)
        await asyncio.sleep(0.2)
        session = services.manager.get("dtmf-1")
        assert session is not None
        assert session.dtmf_digits == "7"


async def test_caller_hangup_ends_the_session(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    ws = await open_call(services, "hup-1")
    await ws.send(media_start())
    await wait_state(services, "hup-1", CallState.ACTIVE)
    session = services.manager.get("hup-1")
    assert session is not None
    await ws.close()
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.state is CallState.ENDED
    assert session.disconnected_by is EndedBy.CALLER
    assert services.manager.get("hup-1") is None


async def test_a_socket_without_media_start_is_closed_by_the_bridge(bridge_factory: StartBridge) -> None:
    # No control channel yet, so the bridge hangs up by closing the socket (in its own task: the close
    # handshake waits under a timeout, which the write step that asks for it must not enter).
    services: Services = await bridge_factory()
    async with await open_call(services, "nostart-1") as ws:
        session = services.manager.get("nostart-1")
        assert session is not None
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert (ws.close_code, ws.close_reason) == (1000, "hangup")
    await asyncio.wait_for(session.ended.wait(), 5)
    assert (session.disconnected_by, session.error_code) == (EndedBy.ERROR, "media_start_timeout")
