"""The ElevenLabs Agents protocol module: client messages built, server messages parsed (and fuzzed)."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.formats import SLIN16, ULAW, slin_at
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderError,
    ResponseAudioDone,
    ResponseDone,
    ToolCall,
    TranscriptLine,
    Usage,
)
from bridge.providers.brief import AgentBrief, resolve
from bridge.providers.elevenlabs.events import (
    RESPONSE_IDLE_SECONDS,
    USAGE_EVERY_SECONDS,
    ConvaiProtocol,
    MalformedMessage,
    Metadata,
    ProtocolNote,
    agent_format,
    audio_message,
    initiation_message,
    parse,
    text_message,
    tool_result_message,
)
from tests.fakes.elevenlabs_agents import check_client_message


def audio(event_id: int, data: bytes = b"\xff" * 160) -> str:
    return json.dumps(
        {
            "type": "audio",
            "audio_event": {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id},
        }
    )


def msg(kind: str, key: str, body: dict[str, Any]) -> str:
    return json.dumps({"type": kind, key: body})


def started() -> ConvaiProtocol:
    protocol = ConvaiProtocol(end_call_tool="bridge_end_call")
    protocol.started(0.0)
    return protocol


def test_agent_formats_map_to_bridge_formats() -> None:
    assert agent_format("ulaw_8000") is ULAW
    assert agent_format("pcm_16000") == SLIN16
    assert agent_format("pcm_22050") == slin_at(22050)
    assert agent_format("pcm_12345") is None
    assert agent_format("mp3_44100") is None
    assert agent_format(16000) is None


def test_initiation_carries_the_allowed_overrides_and_variables() -> None:
    brief = AgentBrief(
        instructions="Hi {{name}}.", greeting="Hello {{name}}", language="es", variables={"name": "Ana"}
    )
    message = initiation_message(resolve(brief), brief, ["prompt", "first_message", "language"])
    agent = message["conversation_config_override"]["agent"]
    assert agent["prompt"]["prompt"].startswith("Hi Ana.")
    assert agent["first_message"] == "Hello Ana"
    assert agent["language"] == "es"
    assert message["dynamic_variables"] == {"name": "Ana"}
    # The strict fake (the SDK's model plus unknown-field checks) accepts it.
    check_client_message(json.dumps(message), initiated=False)
    only_greeting = initiation_message(resolve(brief), brief, ["first_message"])
    assert only_greeting["conversation_config_override"] == {"agent": {"first_message": "Hello Ana"}}
    assert "conversation_config_override" not in initiation_message(resolve(brief), brief, [])


def test_a_takeover_sends_an_empty_first_message() -> None:
    brief = AgentBrief(
        instructions="Be nice.", greeting="Hello", history=(("caller", "hi"), ("bot", "hello"))
    )
    agent = initiation_message(resolve(brief), brief, ["prompt", "first_message"])[
        "conversation_config_override"
    ]
    assert agent["agent"]["first_message"] == ""
    assert "Caller: hi" in agent["agent"]["prompt"]["prompt"]


def test_client_messages_pass_the_strict_fake() -> None:
    for text in (
        audio_message(b"\x01\x02"),
        tool_result_message("call_1", '{"ok": true}'),
        text_message("DTMF: 4", respond=True),
        text_message("DTMF: 4", respond=False),
    ):
        check_client_message(text, initiated=True)
    assert json.loads(audio_message(b"\x01\x02")) == {"user_audio_chunk": "AQI="}
    assert json.loads(tool_result_message("c", '{"ok": false, "error": "x"}'))["is_error"] is True
    assert json.loads(tool_result_message("c", '{"status": "shipped"}'))["is_error"] is False
    assert json.loads(text_message("x", respond=False))["type"] == "contextual_update"


def test_metadata_ping_and_audio() -> None:
    protocol = ConvaiProtocol()
    meta = msg(
        "conversation_initiation_metadata",
        "conversation_initiation_metadata_event",
        {
            "conversation_id": "c1",
            "agent_output_audio_format": "pcm_16000",
            "user_input_audio_format": "ulaw_8000",
        },
    )
    (metadata,) = protocol.receive(meta, 0.0)
    assert metadata == Metadata("c1", "ulaw_8000", "pcm_16000", ULAW, SLIN16)
    assert protocol.receive(msg("ping", "ping_event", {"event_id": 7, "ping_ms": 30}), 0.1) == []
    assert [json.loads(t) for t in protocol.take_outgoing()] == [{"type": "pong", "event_id": 7}]
    assert protocol.last_ping_ms == 30
    (out,) = protocol.receive(audio(1), 0.2)
    assert isinstance(out, AudioOut)
    assert (out.data, out.response_id, out.received_at) == (b"\xff" * 160, "r1", 0.2)


def test_interruption_drops_stale_audio_and_starts_a_new_response() -> None:
    protocol = started()
    protocol.receive(msg("agent_response", "agent_response_event", {"agent_response": "One two three"}), 0.1)
    assert protocol.receive(audio(1), 0.1)[0].response_id == "r1"  # type: ignore[union-attr]
    protocol.receive(audio(2), 0.1)
    out = protocol.receive(msg("interruption", "interruption_event", {"event_id": 2}), 0.2)
    assert out == [ResponseDone("r1", "cancelled"), CallerSpeechStarted()]
    assert protocol.receive(audio(2), 0.3) == []  # at the interrupted id: the cut response's audio
    assert protocol.stale_audio_dropped == 1
    correction = msg(
        "agent_response_correction",
        "agent_response_correction_event",
        {"original_agent_response": "One two three", "corrected_agent_response": "One"},
    )
    assert protocol.receive(correction, 0.3) == [
        TranscriptLine("bot", "One", item_id="bot-1", truncated=True)
    ]
    (fresh,) = protocol.receive(audio(3), 0.4)
    assert isinstance(fresh, AudioOut)
    assert fresh.response_id == "r2"


def test_a_caller_turn_ends_the_response_and_bills_the_time() -> None:
    protocol = started()
    protocol.receive(audio(1), 1.0)
    out = protocol.receive(
        msg("user_transcript", "user_transcription_event", {"user_transcript": " Hi "}), 2.5
    )
    assert out == [
        ResponseAudioDone("r1"),
        ResponseDone("r1", "completed"),
        CallerSpeechStopped(),
        TranscriptLine("caller", "Hi"),
        Usage(model_seconds=2.5),
    ]
    assert protocol.usage(2.5) is None


def test_time_is_billed_as_messages_arrive() -> None:
    protocol = started()
    assert protocol.receive(msg("vad_score", "vad_score_event", {"vad_score": 0.1}), 1.0) == []
    out = protocol.receive(msg("vad_score", "vad_score_event", {"vad_score": 0.1}), USAGE_EVERY_SECONDS + 1)
    assert out == [Usage(model_seconds=USAGE_EVERY_SECONDS + 1)]


def test_local_barge_in_mutes_the_rest_of_the_response() -> None:
    protocol = started()
    protocol.receive(audio(1), 0.1)
    protocol.mute_until_next_turn()
    assert protocol.receive(audio(2), 0.2) == []
    protocol.receive(msg("user_transcript", "user_transcription_event", {"user_transcript": "stop"}), 0.3)
    assert isinstance(protocol.receive(audio(3), 0.4)[0], AudioOut)


def test_tool_calls_map_our_end_call_name() -> None:
    protocol = started()
    body = {"tool_name": "bridge_end_call", "tool_call_id": "t1", "parameters": {"reason": "done"}}
    assert protocol.receive(msg("client_tool_call", "client_tool_call", body), 0.1) == [
        ToolCall("t1", "end_call", '{"reason": "done"}')
    ]
    other = {"tool_name": "lookup_order", "tool_call_id": "t2", "parameters": {"order": "A"}}
    (call,) = protocol.receive(msg("client_tool_call", "client_tool_call", other), 0.1)
    assert isinstance(call, ToolCall)
    assert call.name == "lookup_order"


def test_client_error_is_reported_not_fatal() -> None:
    (error,) = started().receive(json.dumps({"type": "client_error", "message": "bad"}), 0.1)
    assert isinstance(error, ProviderError)
    assert not error.fatal


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        '{"type": 3}',
        '{"type": "audio", "audio_event": {"audio_base_64": "!!", "event_id": 1}}',
        '{"type": "audio", "audio_event": {"audio_base_64": "AA==", "event_id": true}}',
        '{"type": "ping", "ping_event": []}',
        '{"type": "client_tool_call", "client_tool_call": {"tool_name": "x", "tool_call_id": "y", '
        '"parameters": 1}}',
    ],
)
def test_malformed_messages_become_warnings(text: str) -> None:
    (note,) = started().receive(text, 0.1)
    assert isinstance(note, ProtocolNote)
    assert note.level == "warning"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=30), children, max_size=4)
    ),
    max_leaves=20,
)
server_types = st.sampled_from(
    [
        "audio",
        "ping",
        "interruption",
        "user_transcript",
        "agent_response",
        "agent_response_correction",
        "client_tool_call",
        "conversation_initiation_metadata",
        "agent_tool_response",
        "client_error",
        "agent_response_complete",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    # parse() raises its own error only; receive() never raises at all.
    with contextlib.suppress(MalformedMessage):
        parse(data)
    started().receive(data, 1.0)


@settings(max_examples=500, deadline=None)
@given(server_types, st.dictionaries(st.text(max_size=40), json_values, max_size=5), json_values)
def test_arbitrary_json_never_raises(kind: str, body: dict[str, Any], extra: Any) -> None:
    protocol = started()
    for key in (f"{kind}_event", "client_tool_call", "user_transcription_event", "ping_event"):
        message = {"type": kind, key: body, "x": extra}
        for item in protocol.receive(json.dumps(message), 2.0):
            assert not isinstance(item, Exception)


def test_a_reply_whose_audio_stops_is_over() -> None:
    protocol = started()
    protocol.receive(audio(1), 1.0)
    assert protocol.response_idle_at == pytest.approx(1.0 + RESPONSE_IDLE_SECONDS)
    assert protocol.audio_idle(1.0 + RESPONSE_IDLE_SECONDS / 2) == []
    done = protocol.audio_idle(1.0 + RESPONSE_IDLE_SECONDS)
    assert done == [ResponseAudioDone("r1"), ResponseDone("r1", "completed")]
    assert protocol.response_idle_at is None
    later = protocol.receive(audio(2), 3.0)  # more audio after the gap: a new reply (and the time billed)
    assert [e.response_id for e in later if isinstance(e, AudioOut)] == ["r2"]
