"""The strict fake ElevenLabs server refuses what the real service refuses (so clean runs mean something)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.elevenlabs_agents import (
    POLICY_VIOLATION,
    SIGNED_URL_PATH,
    FakeElevenLabsServer,
    Script,
    Violation,
    audio_bytes,
    check_client_message,
)

INIT = {
    "type": "conversation_initiation_client_data",
    "conversation_config_override": {"agent": {"first_message": ""}},
}


@pytest.mark.parametrize(
    ("message", "initiated", "needle"),
    [
        ({"type": "pong", "event_id": 1}, False, "first message"),
        ({"user_audio_chunk": "AAAA"}, False, "first message"),
        ({**INIT, "bogus": 1}, False, "unknown field(s) bogus"),
        (
            {**INIT, "conversation_config_override": {"agent": {"first_mesage": "x"}}},
            False,
            "agent.first_mesage",
        ),
        ({**INIT, "conversation_config_override": {"agent": {"first_message": 5}}}, False, "first_message"),
        ({**INIT, "dynamic_variables": {"a": {"b": 1}}}, False, "dynamic variable"),
        ({"type": "pong", "event_id": "1"}, True, "wrong type"),
        ({"type": "pong"}, True, "lacks event_id"),
        ({"type": "client_tool_result", "tool_call_id": "c", "result": {"a": 1}}, True, "wrong type"),
        (
            {"type": "client_tool_result", "tool_call_id": "c", "result": "x", "is_error": 0},
            True,
            "wrong type",
        ),
        ({"type": "user_message", "text": "x", "extra": 1}, True, "no field 'extra'"),
        ({"type": "user_message"}, True, "lacks text"),
        ({"type": "response.create"}, True, "unknown message type"),
        (INIT, True, "already initiated"),
    ],
)
def test_validation_refuses(message: dict[str, Any], initiated: bool, needle: str) -> None:
    with pytest.raises(Violation, match=needle.replace("(", r"\(").replace(")", r"\)")) as caught:
        check_client_message(json.dumps(message), initiated=initiated)
    assert caught.value.code == POLICY_VIOLATION


def test_validation_accepts_documented_messages() -> None:
    check_client_message(json.dumps(INIT), initiated=False)
    for message in (
        {"type": "pong", "event_id": 3},
        {"type": "client_tool_result", "tool_call_id": "c", "result": "{}", "is_error": False},
        {"type": "contextual_update", "text": "x"},
        {"type": "user_message", "text": "x"},
        {"type": "user_activity"},
        {"user_audio_chunk": "AAAA"},
    ):
        check_client_message(json.dumps(message), initiated=True)


def test_a_forbidden_override_is_refused() -> None:
    message = {**INIT, "conversation_config_override": {"agent": {"prompt": {"prompt": "x"}}}}
    with pytest.raises(Violation, match=r"agent\.prompt\.prompt"):
        check_client_message(
            json.dumps(message), initiated=False, allowed_overrides=frozenset({"first_message"})
        )


def test_audio_chunks_must_be_whole_samples_of_base64() -> None:
    assert audio_bytes({"user_audio_chunk": "AAAA"}, 1) == b"\x00\x00\x00"
    with pytest.raises(Violation, match="splits a sample"):
        audio_bytes({"user_audio_chunk": "AAAA"}, 2)
    with pytest.raises(Violation, match="not base64"):
        audio_bytes({"user_audio_chunk": "!!"}, 1)
    with pytest.raises(Violation, match="fields"):
        audio_bytes({"user_audio_chunk": "AAAA", "type": "x"}, 1)


@pytest.fixture
async def fake() -> AsyncIterator[FakeElevenLabsServer]:
    async with FakeElevenLabsServer(
        script=Script(greeting_ms=0, ping_interval_s=0.05, pong_timeout_s=0.3)
    ) as server:
        yield server


async def signed_url(http: aiohttp.ClientSession, fake: FakeElevenLabsServer, key: str) -> tuple[int, Any]:
    url = f"http://127.0.0.1:{fake.port}{SIGNED_URL_PATH}"
    async with http.get(url, params={"agent_id": fake.agent_id}, headers={"xi-api-key": key}) as response:
        return response.status, await response.json()


async def test_signed_url_needs_the_key_and_the_agent_needs_a_signature(fake: FakeElevenLabsServer) -> None:
    async with aiohttp.ClientSession() as http:
        status, body = await signed_url(http, fake, "wrong")
        assert status == 401
        assert body["detail"]["status"] == "invalid_api_key"
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(f"{fake.url}?agent_id={fake.agent_id}")
        assert refused.value.status == 403
        status, body = await signed_url(http, fake, fake.api_key)
        assert status == 200
        async with http.ws_connect(body["signed_url"]) as ws:
            await ws.send_str(json.dumps(INIT))
            metadata = await ws.receive_json(timeout=5)
            assert metadata["type"] == "conversation_initiation_metadata"
            assert (
                metadata["conversation_initiation_metadata_event"]["user_input_audio_format"] == "ulaw_8000"
            )
        with pytest.raises(aiohttp.WSServerHandshakeError):  # a signature joins one conversation only
            await http.ws_connect(body["signed_url"])


async def test_a_malformed_message_closes_with_1008_and_is_recorded(fake: FakeElevenLabsServer) -> None:
    async with aiohttp.ClientSession() as http:
        _, body = await signed_url(http, fake, fake.api_key)
        async with http.ws_connect(body["signed_url"]) as ws:
            await ws.send_str(json.dumps({"type": "user_message", "text": "hi"}))  # before the initiation
            closed = await ws.receive(timeout=5)
            while closed.type is aiohttp.WSMsgType.TEXT:
                closed = await ws.receive(timeout=5)
            assert closed.type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == POLICY_VIOLATION
    with pytest.raises(AssertionError, match="first message must be conversation_initiation_client_data"):
        fake.assert_clean()
    assert fake.last.closed_by == "violation"


async def test_an_unanswered_ping_is_a_failure(fake: FakeElevenLabsServer) -> None:
    async with aiohttp.ClientSession() as http:
        _, body = await signed_url(http, fake, fake.api_key)
        async with http.ws_connect(body["signed_url"]) as ws:
            await ws.send_str(json.dumps(INIT))
            deadline = time.monotonic() + 10
            while not fake.failures and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
    with pytest.raises(AssertionError, match="no pong for ping"):
        fake.assert_clean()


async def test_answered_pings_are_clean(fake: FakeElevenLabsServer) -> None:
    async with aiohttp.ClientSession() as http:
        _, body = await signed_url(http, fake, fake.api_key)
        async with http.ws_connect(body["signed_url"]) as ws:
            await ws.send_str(json.dumps(INIT))
            while len(fake.last.pongs) < 3:
                message = await ws.receive_json(timeout=5)
                if message["type"] == "ping":
                    await ws.send_str(
                        json.dumps({"type": "pong", "event_id": message["ping_event"]["event_id"]})
                    )
    fake.assert_clean()


async def test_refused_connections_answer_503(fake: FakeElevenLabsServer) -> None:
    fake.refuse_connections = 1
    async with aiohttp.ClientSession() as http:
        status, _ = await signed_url(http, fake, fake.api_key)
        assert status == 503
        status, _ = await signed_url(http, fake, fake.api_key)
        assert status == 200
