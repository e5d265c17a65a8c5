"""The strict fake Ultravox itself: what it refuses over the wire, and its scripted behaviour."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from tests.fakes.ultravox import FakeUltravoxServer, Script, ToolCall, Turn

KEY = "uv-key"
BODY: dict[str, Any] = {
    "systemPrompt": "Be brief.",
    "medium": {"serverWebSocket": {"inputSampleRate": 8000, "outputSampleRate": 16000}},
    "firstSpeakerSettings": {"agent": {"text": "Hello there"}},
    "selectedTools": [{"temporaryTool": {"modelToolName": "lookup", "description": "d", "client": {}}}],
}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def create(
    http: aiohttp.ClientSession, fake: FakeUltravoxServer, body: Any, **kw: Any
) -> tuple[int, Any]:
    headers = {"X-API-Key": kw.pop("key", KEY)}
    async with http.post(fake.url, json=body, headers=headers, params=kw.get("params")) as reply:
        return reply.status, await reply.json()


async def messages_until(ws: aiohttp.ClientWebSocketResponse, kind: str) -> list[Any]:
    seen: list[Any] = []
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                seen.append(message.data)
                continue
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise AssertionError(f"socket ended: {message.type}")
            data = message.json()
            seen.append(data)
            if data["type"] == kind:
                return seen


async def test_the_rest_endpoint_checks_the_key_and_the_body(http: aiohttp.ClientSession) -> None:
    async with FakeUltravoxServer(api_key=KEY) as fake:
        assert (await create(http, fake, BODY, key="wrong"))[0] == 401
        status, reply = await create(http, fake, {**BODY, "unknownField": 1})
        assert status == 400
        assert "unknownField" in reply["detail"]
        assert (await create(http, fake, {**BODY, "systemPrompt": 7}))[0] == 400
        assert (await create(http, fake, BODY, params={"priorCallId": "nope"}))[0] == 404
        assert fake.refusals == [401, 400, 400, 404]
        assert len(fake.violations) == 4
        with pytest.raises(AssertionError):
            fake.assert_clean()
        status, reply = await create(http, fake, BODY)
        assert status == 201
        assert reply["joinUrl"].startswith("ws://")
        status, _ = await create(http, fake, BODY, params={"priorCallId": reply["callId"]})
        assert status == 201
        assert list(fake.calls.values())[1].prior_call_id == reply["callId"]


async def test_a_malformed_data_message_closes_the_socket_and_is_recorded(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeUltravoxServer(api_key=KEY, script=Script(speed=0)) as fake:
        _, reply = await create(http, fake, BODY)
        async with http.ws_connect(reply["joinUrl"]) as ws:
            await messages_until(ws, "call_started")
            await ws.send_json({"type": "ping", "timestamp": 1.5})
            seen = await messages_until(ws, "pong")
            assert seen[-1] == {"type": "pong", "timestamp": 1.5}
            await ws.send_json(
                {"type": "client_tool_result", "invocationId": 5, "result": "{}"}
            )  # wrong type
            while not ws.closed:
                await ws.receive()
            assert ws.close_code == 1007
        assert fake.last.closed_by == "violation"
        assert any("invocationId" in v for v in fake.violations)
        # A join URL is good once.
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(reply["joinUrl"])
        assert refused.value.status == 409
    with pytest.raises(AssertionError):
        fake.assert_clean()


async def test_greeting_turn_tool_and_barge_in(http: aiohttp.ClientSession) -> None:
    script = Script(
        greeting_ms=200, turns=(Turn(reply_ms=2000, tool_call=ToolCall("lookup", {"q": 1})),), speed=1.0
    )
    async with FakeUltravoxServer(api_key=KEY, script=script) as fake:
        _, reply = await create(http, fake, BODY)
        async with http.ws_connect(reply["joinUrl"]) as ws:
            seen = await messages_until(ws, "transcript")
            audio = [m for m in seen if isinstance(m, bytes)]
            await messages_until(ws, "state")  # the greeting is generated
            await asyncio.sleep(0.3)  # and heard
            assert len(audio[0]) == 16000 * 20 // 1000 * 2  # 20 ms at the requested output rate
            # The caller speaks (400 ms of tone) then is silent: a turn, answered with a tool invocation.
            t = np.arange(8000 * 2) / 8000
            voice = (np.sin(2 * np.pi * 200 * t) * 8000).astype("<i2").tobytes()
            for i in range(0, 8000 * 2 * 2 // 5, 320):
                await ws.send_bytes(voice[i : i + 320])
            for _ in range(20):
                await ws.send_bytes(b"\x00" * 320)
            seen = await messages_until(ws, "client_tool_invocation")
            invocation = seen[-1]
            assert invocation["toolName"] == "lookup"
            assert invocation["parameters"] == {"q": 1}
            await ws.send_json(
                {"type": "client_tool_result", "invocationId": invocation["invocationId"], "result": "{}"}
            )
            await messages_until(ws, "transcript")  # the agent speaks about it
            for i in range(0, 8000 * 2 * 2 // 5, 320):  # and the caller talks over it
                await ws.send_bytes(voice[i : i + 320])
            seen = await messages_until(ws, "playback_clear_buffer")
            seen = await messages_until(ws, "transcript")
            assert seen[-1]["final"] is True
            assert seen[-1]["role"] == "agent"
            await ws.send_json({"type": "hang_up"})
            while not ws.closed:
                await ws.receive()
        conn = fake.last
        assert conn.utterances == ["greeting", "turn"]
        assert len(conn.barge_ins) == 1
        assert conn.closed_by == "hang_up"
        fake.assert_clean()


async def test_drop_and_refusal_on_command(http: aiohttp.ClientSession) -> None:
    async with FakeUltravoxServer(api_key=KEY, script=Script(speed=0)) as fake:
        _, reply = await create(http, fake, BODY)
        async with http.ws_connect(reply["joinUrl"]) as ws:
            await messages_until(ws, "call_started")
            fake.drop_now()
            while not ws.closed:
                message = await ws.receive()
                if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
            assert ws.close_code != 1000
        fake.refuse_all = True
        assert (await create(http, fake, BODY))[0] == 503
        assert fake.last.closed_by == "drop"
        fake.assert_clean()  # refusals on command are not the client's fault
