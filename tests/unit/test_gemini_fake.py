"""The fake Gemini Live's validation refuses what the service refuses, and accepts what the SDK sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.fakes.gemini_live import ClientMessageError, parse_client_message

# What google-genai 3.x sends (the spec's sample): mixed camelCase / snake_case.
SDK_SETUP: dict[str, Any] = {
    "setup": {
        "model": "models/gemini-live",
        "generationConfig": {
            "responseModalities": ["AUDIO"],
            "speechConfig": {"voice_config": {"prebuilt_voice_config": {"voice_name": "Kore"}}},
        },
        "systemInstruction": {"role": "user", "parts": [{"text": "You are a phone agent."}]},
        "tools": [{"functionDeclarations": [{"name": "end_call", "description": "Hang up",
                   "parameters": {"type": "OBJECT", "properties": {}}}]}],
        "realtimeInputConfig": {
            "automatic_activity_detection": {"disabled": False,
                                             "start_of_speech_sensitivity": "START_SENSITIVITY_LOW",
                                             "prefix_padding_ms": 20, "silence_duration_ms": 500},
            "activity_handling": "START_OF_ACTIVITY_INTERRUPTS",
        },
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
        "sessionResumption": {},
        "contextWindowCompression": {"trigger_tokens": 25600, "sliding_window": {}},
    }
}  # fmt: skip


def test_the_sdks_own_messages_pass() -> None:
    assert parse_client_message(json.dumps(SDK_SETUP)).kind == "setup"
    audio = {"realtime_input": {"audio": {"data": "AAEC_-8=", "mime_type": "audio/pcm;rate=16000"}}}
    assert parse_client_message(json.dumps(audio)).kind == "realtime_input"
    text = {"client_content": {"turns": [{"role": "user", "parts": [{"text": "hi"}]}], "turnComplete": True}}
    assert parse_client_message(json.dumps(text)).kind == "client_content"
    tool = {"tool_response": {"functionResponses": [{"id": "fc-1", "name": "f", "response": {"a": 1}}]}}
    assert parse_client_message(json.dumps(tool)).kind == "tool_response"


def _with(path: list[str], value: Any) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(json.dumps(SDK_SETUP))
    target = message
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return message


@pytest.mark.parametrize(
    "message",
    [
        _with(["setup", "unknownField"], 1),  # extra field
        _with(["setup", "generationConfig", "temperature"], "hot"),  # wrong type
        _with(["setup", "model"], "gemini-live"),  # not models/<id>
        _with(["setup", "generationConfig", "responseModalities"], ["AUDIO", "TEXT"]),
        _with(["setup", "realtimeInputConfig", "activity_handling"], "SOMETIMES"),  # unknown enum value
        _with(["setup", "realtimeInputConfig", "bogus"], True),
        {"setup": {"model": "models/x"}, "realtimeInput": {"text": "hi"}},  # two kinds in one frame
        {"realtimeInput": {"audio": {"data": 12, "mimeType": "audio/pcm;rate=16000"}}},
        {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/wav"}}},
        {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/pcm"}, "text": "hi"}},
        {"toolResponse": {"functionResponses": [{"name": "f", "response": {}}]}},  # id missing
        {"toolResponse": {"functionResponses": [{"id": "1", "response": {}}]}},  # name missing
        {"clientContent": {"turns": [{"role": "system", "parts": [{"text": "x"}]}], "turnComplete": True}},
        {"clientContent": {"turns": [], "turnComplete": "yes"}},
        {"response.create": {}},
        [],
    ],
)
def test_invalid_messages_are_refused_with_1007(message: Any) -> None:
    with pytest.raises(ClientMessageError) as info:
        parse_client_message(json.dumps(message))
    assert info.value.code == 1007


def test_not_json_is_refused() -> None:
    with pytest.raises(ClientMessageError):
        parse_client_message(b"\xff{")
