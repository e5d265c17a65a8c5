"""The strict fake Deepgram agent refuses what the real service refuses (its checks, tested directly)."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from tests.fakes.deepgram_agent import (
    ERROR_CLOSE_CODE,
    ClientMessageError,
    FakeDeepgramAgent,
    validate_client_message,
)

SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "audio": {
        "input": {"encoding": "mulaw", "sample_rate": 8000},
        "output": {"encoding": "mulaw", "sample_rate": 8000},
    },
    "agent": {
        "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."},
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
    },
}


def refused(message: dict[str, Any]) -> ClientMessageError:
    with pytest.raises(ClientMessageError) as info:
        validate_client_message(json.dumps(message))
    return info.value


def test_a_well_formed_settings_passes() -> None:
    assert validate_client_message(json.dumps(SETTINGS))["type"] == "Settings"


@pytest.mark.parametrize(
    ("message", "code", "words"),
    [
        (
            {"type": "FunctionCallResponse", "name": "f", "content": "{}"},
            "UNPARSABLE_CLIENT_MESSAGE",
            "id is required",
        ),
        (
            {"type": "FunctionCallResponse", "id": 1, "name": "f", "content": "{}"},
            "UNPARSABLE_CLIENT_MESSAGE",
            "not str",
        ),
        (
            {"type": "InjectUserMessage", "content": "x", "extra": 1},
            "UNPARSABLE_CLIENT_MESSAGE",
            "not a known field",
        ),
        (
            {"type": "InjectAgentMessage", "message": "x", "behavior": "later"},
            "UNPARSABLE_CLIENT_MESSAGE",
            "not one of",
        ),
        ({"type": "Speak"}, "UNPARSABLE_CLIENT_MESSAGE", "unknown message type"),
        (
            {**SETTINGS, "audio": {"input": {"encoding": "mulaw", "sample_rate": "8000"}}},
            "INVALID_SETTINGS",
            "not int",
        ),
        (
            {**SETTINGS, "audio": {"input": {"encoding": "ulaw", "sample_rate": 8000}}},
            "INVALID_SETTINGS",
            "not one of",
        ),
        ({"type": "Settings", "agent": SETTINGS["agent"]}, "INVALID_SETTINGS", "audio is required"),
        ({**SETTINGS, "agent": {"think": {"prompt": "x"}}}, "INVALID_SETTINGS", "provider is required"),
        ({**SETTINGS, "agent": {"greeting": 3}}, "INVALID_SETTINGS", "not str"),
    ],
)
def test_malformed_client_messages_are_refused_with_the_services_code(
    message: dict[str, Any], code: str, words: str
) -> None:
    error = refused(message)
    assert error.code == code
    assert words in error.description


def test_unknown_fields_pass_the_sdk_models_but_not_the_fake() -> None:
    # AgentV1Settings allows extra fields; the fake's shapes do not.
    error = refused({**SETTINGS, "agent": {**SETTINGS["agent"], "voice": "marin"}})
    assert "agent.voice is not a known field" in error.description


def test_not_json_is_unparsable() -> None:
    with pytest.raises(ClientMessageError) as info:
        validate_client_message("{nope")
    assert info.value.code == "UNPARSABLE_CLIENT_MESSAGE"


async def test_the_server_checks_auth_order_and_shapes_on_the_wire() -> None:
    async with FakeDeepgramAgent(api_key="k") as fake, aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await http.ws_connect(fake.url, headers={"Authorization": "Bearer k"})
        assert info.value.status == 401
        # Audio before Settings: Error, then the socket closes.
        async with http.ws_connect(fake.url, headers={"Authorization": "Token k"}) as ws:
            assert json.loads((await ws.receive()).data)["type"] == "Welcome"
            await ws.send_bytes(b"\xff" * 160)
            error = json.loads((await ws.receive()).data)
            assert (error["type"], error["code"]) == ("Error", "UNPARSABLE_CLIENT_MESSAGE")
            assert (await ws.receive()).type is aiohttp.WSMsgType.CLOSE
            assert ws.close_code == ERROR_CLOSE_CODE
        # A well-formed Settings is applied; a FunctionCallResponse without its id is refused.
        async with http.ws_connect(fake.url, headers={"Authorization": "Token k"}) as ws:
            await ws.receive()
            await ws.send_str(json.dumps(SETTINGS))
            assert json.loads((await ws.receive()).data)["type"] == "SettingsApplied"
            await ws.send_str(json.dumps({"type": "FunctionCallResponse", "name": "f", "content": "{}"}))
            error = json.loads((await ws.receive()).data)
            assert error["code"] == "UNPARSABLE_CLIENT_MESSAGE"
        assert len(fake.failures) == 3  # the bad auth, the early audio, the missing id
        with pytest.raises(AssertionError):
            fake.assert_clean()
