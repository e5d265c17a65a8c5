"""Deepgram wire messages, the per-call conversation state, and the Settings message (all pure)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from deepgram.agent.v1.types import AgentV1Settings
from hypothesis import given
from hypothesis import strategies as st

from bridge.audio.formats import ALAW, SLIN, SLIN16, SLIN24, SLIN44, ULAW
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ModelFormats,
    ProviderError,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    ToolSpec,
    TranscriptLine,
    Usage,
)
from bridge.providers.deepgram import events as wire
from bridge.providers.deepgram.conversation import AgentConversation, Note
from bridge.providers.deepgram.session_config import build_settings, model_format
from bridge.settings_agents import DeepgramSettings
from tests.fakes.deepgram_agent import validate_client_message

# -- parsing -------------------------------------------------------------------------------------------


def parse(message: dict[str, Any]) -> wire.ServerMessage:
    return wire.parse_server_message(json.dumps(message))


def test_server_messages_are_typed() -> None:
    assert parse({"type": "Welcome", "request_id": "r1"}) == wire.Welcome("r1")
    assert parse({"type": "SettingsApplied"}) == wire.SettingsApplied()
    assert parse({"type": "ConversationText", "role": "user", "content": "hi"}) == wire.ConversationText(
        "user", "hi"
    )
    request = parse(
        {
            "type": "FunctionCallRequest",
            "functions": [{"id": "c1", "name": "end_call", "arguments": '{"a":1}', "client_side": True}],
        }
    )
    assert request == wire.FunctionCallRequest((wire.FunctionCall("c1", "end_call", '{"a":1}', True),))
    assert parse({"type": "AgentStartedSpeaking", "total_latency": 0.5}) == wire.AgentStartedSpeaking(0.5)
    assert parse({"type": "Error", "code": "X", "description": "d"}) == wire.ServerError("X", "d")
    assert parse({"type": "Warning", "code": "W", "description": "d"}) == wire.ServerWarning("W", "d")
    assert parse({"type": "History", "role": "user", "content": "x"}) == wire.Other("History")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"no":"type"}',
        '{"type":"ConversationText","role":"system","content":"x"}',
        '{"type":"FunctionCallRequest","functions":[{"id":"1","name":"f","arguments":"{}"}]}',
        '{"type":"Error","code":5,"description":"d"}',
    ],
)
def test_malformed_messages_raise_the_documented_error(text: str) -> None:
    with pytest.raises(wire.DeepgramMessageError):
        wire.parse_server_message(text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
TYPES = st.sampled_from(
    [
        "Welcome",
        "ConversationText",
        "FunctionCallRequest",
        "Error",
        "Warning",
        "InjectionRefused",
        "AgentThinking",
    ]
)


@given(st.binary(max_size=64) | st.text(max_size=64))
def test_arbitrary_bytes_raise_only_the_documented_error(data: bytes | str) -> None:
    with contextlib.suppress(wire.DeepgramMessageError):
        wire.parse_server_message(data)


@given(
    TYPES,
    st.dictionaries(
        st.sampled_from(["role", "content", "functions", "code", "description", "request_id"]), JSON
    ),
)
def test_arbitrary_fields_raise_only_the_documented_error(kind: str, fields: dict[str, Any]) -> None:
    with contextlib.suppress(wire.DeepgramMessageError):
        wire.parse_server_message(json.dumps({"type": kind, **fields}))


# -- conversation ----------------------------------------------------------------------------------


def feed(conv: AgentConversation, *messages: dict[str, Any]) -> list[Any]:
    return [event for m in messages for event in conv.receive(parse(m))]


def test_a_turn_numbers_its_response_and_ends_it_at_agent_audio_done() -> None:
    conv = AgentConversation()
    assert feed(conv, {"type": "UserStartedSpeaking"}) == [CallerSpeechStarted()]
    events = feed(
        conv,
        {"type": "ConversationText", "role": "user", "content": "Hi"},
        {"type": "ConversationText", "role": "assistant", "content": "Hello!"},
        {"type": "AgentStartedSpeaking", "total_latency": 0.3},
    )
    assert events == [
        CallerSpeechStopped(),
        TranscriptLine("caller", "Hi", item_id="dg-line-1"),
        TranscriptLine("bot", "Hello!", item_id="dg-line-2"),
    ]
    audio = conv.audio(b"\xff" * 160, 1.5)
    assert audio == AudioOut(b"\xff" * 160, "dg-response-1", 1.5)
    assert feed(conv, {"type": "AgentAudioDone"}) == [
        ResponseAudioDone("dg-response-1"),
        ResponseDone("dg-response-1"),
    ]
    assert conv.history == [("user", "Hi"), ("assistant", "Hello!")]


def test_user_started_speaking_cuts_the_response_and_its_line() -> None:
    conv = AgentConversation()
    feed(conv, {"type": "ConversationText", "role": "assistant", "content": "A long greeting"})
    conv.audio(b"\x00" * 320, None)
    assert feed(conv, {"type": "UserStartedSpeaking"}) == [
        CallerSpeechStarted(),
        TranscriptLine("bot", "A long greeting", item_id="dg-line-1", truncated=True),
        ResponseDone("dg-response-1", status="cancelled"),
    ]
    assert conv.interrupt() == []  # nothing left to cut: the response is over
    assert conv.audio(b"\x00", None).response_id == "dg-response-2"  # later audio is a new response


def test_a_barge_in_on_audio_still_queued_cuts_the_last_line() -> None:
    conv = AgentConversation()
    feed(
        conv,
        {"type": "ConversationText", "role": "assistant", "content": "Hi there"},
        {"type": "AgentStartedSpeaking"},
    )
    feed(conv, {"type": "AgentAudioDone"})
    assert feed(conv, {"type": "UserStartedSpeaking"}) == [CallerSpeechStarted()]
    assert conv.interrupt() == [TranscriptLine("bot", "Hi there", item_id="dg-line-1", truncated=True)]
    assert conv.interrupt() == []


def test_a_local_barge_in_keeps_the_response_id_so_its_audio_is_dropped() -> None:
    conv = AgentConversation()
    first = conv.audio(b"\x00", None).response_id
    assert conv.interrupt() == []
    assert conv.audio(b"\x00", None).response_id == first  # still the cut response: the runner drops it
    assert feed(conv, {"type": "AgentAudioDone"}) == [ResponseDone(first, status="cancelled")]


def test_client_side_function_calls_become_tool_calls_and_remember_their_name() -> None:
    conv = AgentConversation()
    conv.audio(b"\x00", None)
    events = feed(
        conv,
        {
            "type": "FunctionCallRequest",
            "functions": [
                {"id": "c1", "name": "end_call", "arguments": "{}", "client_side": True},
                {"id": "c2", "name": "weather", "arguments": "{}", "client_side": False},
            ],
        },
    )
    assert events[0] == ToolCall("c1", "end_call", "{}", response_id="dg-response-1")
    assert isinstance(events[1], Note)  # server side: Deepgram answers it itself
    assert conv.tool_name("c1") == "end_call"
    assert conv.tool_name("c1") is None  # answered once
    assert conv.tool_name("c2") is None


def test_a_function_call_with_the_agents_words_belongs_to_their_response() -> None:
    # end_call after "Goodbye": the call must end once that audio is over, not before it starts.
    conv = AgentConversation()
    feed(conv, {"type": "ConversationText", "role": "assistant", "content": "Goodbye!"})
    (call,) = feed(
        conv,
        {
            "type": "FunctionCallRequest",
            "functions": [{"id": "c1", "name": "end_call", "arguments": "{}", "client_side": True}],
        },
    )
    assert feed(conv, {"type": "AgentStartedSpeaking"}) == []
    assert conv.audio(b"\x00", None).response_id == call.response_id == "dg-response-1"
    assert ResponseDone("dg-response-1") in feed(conv, {"type": "AgentAudioDone"})


def test_says_finish_with_their_response_or_fail_when_refused() -> None:
    conv = AgentConversation()
    first, second = conv.new_say("One moment."), conv.new_say("Bye.")
    events = feed(
        conv,
        {"type": "ConversationText", "role": "assistant", "content": "One moment."},
        {"type": "AgentStartedSpeaking"},
        {"type": "AgentAudioDone"},
        {"type": "InjectionRefused", "message": "busy"},
    )
    assert SayFinished(first) in events
    assert SayFinished(second, status="failed") in events


def test_errors_are_fatal_and_time_is_billed_per_session() -> None:
    conv = AgentConversation()
    (error,) = feed(conv, {"type": "Error", "code": "CLIENT_MESSAGE_TIMEOUT", "description": "idle"})
    assert error == ProviderError("deepgram_client_message_timeout", "idle", fatal=True)
    assert conv.usage(5.0) is None  # not connected yet
    conv.connected(10.0)
    assert conv.usage(12.5) == Usage(model_seconds=2.5)
    assert conv.usage(12.5) is None
    assert Usage(model_seconds=1.5) in conv.connection_lost(14.0)
    assert conv.usage(20.0) is None  # nothing billed while away


# -- settings ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("leg", "expected"),
    [(ULAW, ULAW), (ALAW, ALAW), (SLIN, SLIN), (SLIN16, SLIN16), (SLIN24, SLIN24), (SLIN44, SLIN24)],
)
def test_the_leg_format_passes_through_where_deepgram_takes_it(leg: Any, expected: Any) -> None:
    assert model_format(leg) == expected


def test_the_settings_message_is_what_the_sdk_and_the_strict_fake_accept() -> None:
    tools = [ToolSpec("end_call", "Hang up", {"type": "object", "properties": {}})]
    text = build_settings(
        DeepgramSettings(api_key="k"),
        ModelFormats(SLIN16, SLIN16),
        prompt="Be brief.",
        voice="aura-2-orion-en",
        language="en",
        tools=tools,
        greeting="Hello!",
        history=[("user", "Hi"), ("assistant", "Hello")],
    )
    message = validate_client_message(text)  # strict shapes plus the SDK's AgentV1Settings
    AgentV1Settings.model_validate(message)
    assert message["audio"]["input"] == {"encoding": "linear16", "sample_rate": 16000}
    agent = message["agent"]
    assert agent["speak"]["provider"] == {"type": "deepgram", "model": "aura-2-orion-en"}
    assert agent["listen"]["provider"] == {
        "type": "deepgram",
        "version": "v1",
        "model": "nova-3",
        "language": "en",
    }
    assert agent["think"]["functions"] == [
        {"name": "end_call", "description": "Hang up", "parameters": tools[0].parameters}
    ]
    assert agent["context"]["messages"][0] == {"type": "History", "role": "user", "content": "Hi"}


@pytest.mark.parametrize(
    "text",
    [
        wire.KEEP_ALIVE,
        wire.inject_agent_message("Hello", "queue"),
        wire.inject_user_message("DTMF: 4"),
        wire.update_prompt("The caller pressed 4"),
        wire.function_call_response("c1", "end_call", '{"ok": true}'),
    ],
)
def test_client_messages_pass_the_strict_fake(text: str) -> None:
    validate_client_message(text)
