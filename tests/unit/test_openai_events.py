"""The sans-I/O OpenAI Realtime protocol: every client event it builds is valid GA (openai models)."""

from __future__ import annotations

import base64
import json
import typing
from typing import Annotated, Any, Union

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.realtime import RealtimeClientEvent
from pydantic import Field, TypeAdapter

from bridge.audio.formats import SLIN16, SLIN24, ULAW, AudioFormat
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    ProviderError,
    ResponseAudioDone,
    ResponseDone,
    ToolCall,
    ToolSpec,
    TranscriptLine,
    Usage,
)
from bridge.providers.brief import AgentBrief, fill_placeholders
from bridge.providers.openai.dialect import AZURE_OPENAI, OPENAI, XAI
from bridge.providers.openai.events import ProtocolNote, RealtimeProtocol, SessionExpired


def _discriminated(sdk_union: Any) -> TypeAdapter[Any]:
    members = typing.get_args(typing.get_args(sdk_union)[0])
    union: Any = Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


CLIENT_EVENTS = _discriminated(RealtimeClientEvent)


def _no_extra(model: Any, path: str = "") -> list[str]:
    extras: list[str] = []
    if hasattr(model, "model_extra") and model.model_extra:
        extras.append(f"{path}: {sorted(model.model_extra)}")
    for name in getattr(type(model), "model_fields", {}):
        value = getattr(model, name)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            extras += _no_extra(item, f"{path}.{name}[{index}]")
    return extras


def valid(text: str) -> dict[str, Any]:
    event = CLIENT_EVENTS.validate_json(text)
    assert _no_extra(event) == [], text
    parsed: dict[str, Any] = json.loads(text)
    return parsed


BRIEF = AgentBrief(
    instructions="You are the receptionist of {{company}}.",
    greeting="Hello {{name}}, this is {{company}}.",
    voice="marin",
    language="es",
    tools=(ToolSpec("end_call", "Hang up", {"type": "object", "properties": {}}),),
    variables={"company": "Acme"},
)


def protocol(fmt: AudioFormat = ULAW, dialect: Any = OPENAI) -> RealtimeProtocol:
    proto = RealtimeProtocol(dialect, BRIEF)
    proto.configure(fmt, fmt, greet=True)
    return proto


def server(proto: RealtimeProtocol, **event: Any) -> list[Any]:
    return proto.receive(json.dumps(event))


def delta(proto: RealtimeProtocol, item: str, response: str, nbytes: int) -> list[Any]:
    audio = base64.b64encode(b"\xff" * nbytes).decode()
    return server(
        proto,
        type="response.output_audio.delta",
        response_id=response,
        item_id=item,
        output_index=0,
        content_index=0,
        delta=audio,
        event_id="e",
    )


@pytest.mark.parametrize("fmt", [ULAW, SLIN24])
def test_session_update_and_greeting_are_valid_ga(fmt: AudioFormat) -> None:
    update, greeting = (valid(t) for t in protocol(fmt).take_outgoing())
    session = update["session"]
    assert session["type"] == "realtime"
    assert session["audio"]["input"]["format"] == session["audio"]["output"]["format"]
    assert session["audio"]["input"]["turn_detection"]["interrupt_response"] is True
    assert session["audio"]["input"]["transcription"]["language"] == "es"
    assert session["instructions"].startswith("You are the receptionist of Acme.")
    assert session["tools"][0]["name"] == "end_call"
    assert greeting["type"] == "response.create"
    assert "Hello {{name}}, this is Acme." in greeting["response"]["instructions"]


def test_unknown_placeholders_stay_visible_and_are_reported() -> None:
    proto = RealtimeProtocol(OPENAI, BRIEF)
    assert proto.resolved.unknown_placeholders == frozenset({"name"})
    assert fill_placeholders("{{ a }}-{{b}}", {"a": "1"}) == ("1-{{b}}", {"b"})


def test_append_is_valid_and_round_trips_audio() -> None:
    payload = protocol().append_audio(b"\x01\x02\x03")
    assert base64.b64decode(valid(payload.decode("utf-8"))["audio"]) == b"\x01\x02\x03"


def test_audio_deltas_become_audio_out_and_truncate_is_clamped_to_what_came() -> None:
    proto = protocol(ULAW)
    proto.take_outgoing()
    server(proto, type="response.created", event_id="e", response={"id": "resp_1", "status": "in_progress"})
    events = delta(proto, "item_1", "resp_1", 800)  # 100 ms of µ-law
    assert events == [AudioOut(b"\xff" * 800, "resp_1")]
    assert proto.interrupt(5000.0, cancel=False) == 100
    (truncate,) = (valid(t) for t in proto.take_outgoing())
    assert truncate == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 100,
    }
    assert delta(proto, "item_1", "resp_1", 160) == []  # late audio of the cut item is dropped
    assert proto.interrupt(50.0, cancel=False) is None  # nothing new was said


def test_local_barge_in_also_cancels_the_active_response() -> None:
    proto = protocol(SLIN24)
    proto.take_outgoing()
    server(proto, type="response.created", event_id="e", response={"id": "resp_1"})
    delta(proto, "item_1", "resp_1", 4800)
    proto.interrupt(40.0, cancel=True)
    sent = [valid(t) for t in proto.take_outgoing()]
    assert [e["type"] for e in sent] == ["response.cancel", "conversation.item.truncate"]
    assert sent[1]["audio_end_ms"] == 40


def test_bot_transcript_is_cut_to_what_was_heard() -> None:
    proto = protocol(ULAW)
    delta(proto, "item_1", "resp_1", 8000)  # 1 s
    proto.interrupt(500.0, cancel=False)
    lines = server(
        proto,
        type="response.output_audio_transcript.done",
        response_id="resp_1",
        item_id="item_1",
        output_index=0,
        content_index=0,
        transcript="one two three four five six",
        event_id="e",
    )
    assert lines == [TranscriptLine("bot", "one two three", "item_1", truncated=True)]


def test_a_line_already_reported_is_reported_again_cut_after_a_truncate() -> None:
    proto = protocol(ULAW)
    delta(proto, "item_1", "resp_1", 8000)
    done = server(proto, type="response.output_audio_transcript.done", item_id="item_1", transcript="a b c d")
    assert done == [TranscriptLine("bot", "a b c d", "item_1")]
    proto.interrupt(250.0, cancel=False)
    later = server(proto, type="input_audio_buffer.speech_stopped", audio_end_ms=10, item_id="u")
    assert TranscriptLine("bot", "a", "item_1", truncated=True) in later


def test_turn_events_usage_and_tool_calls() -> None:
    proto = protocol()
    assert server(proto, type="input_audio_buffer.speech_started", audio_start_ms=120, item_id="u1") == [
        CallerSpeechStarted(120.0)
    ]
    caller = server(
        proto,
        type="conversation.item.input_audio_transcription.completed",
        item_id="u1",
        content_index=0,
        transcript=" Hola ",
        usage={"type": "tokens", "input_tokens": 7, "output_tokens": 3, "total_tokens": 10},
    )
    assert caller == [
        TranscriptLine("caller", "Hola", "u1"),
        Usage(transcription_input_tokens=7, transcription_output_tokens=3),
    ]
    call = server(
        proto,
        type="response.function_call_arguments.done",
        call_id="c1",
        name="end_call",
        arguments="{}",
        item_id="i",
        output_index=0,
        response_id="resp_2",
    )
    assert call == [ToolCall("c1", "end_call", "{}", "resp_2")]
    assert server(proto, type="response.output_audio.done", response_id="resp_2", item_id="i") == [
        ResponseAudioDone("resp_2")
    ]
    done = server(
        proto,
        type="response.done",
        response={
            "id": "resp_2",
            "status": "completed",
            "usage": {
                "total_tokens": 300,
                "input_tokens": 200,
                "output_tokens": 100,
                "input_token_details": {
                    "text_tokens": 150,
                    "audio_tokens": 50,
                    "cached_tokens": 64,
                    "cached_tokens_details": {"text_tokens": 64, "audio_tokens": 0},
                },
                "output_token_details": {"text_tokens": 20, "audio_tokens": 80},
            },
        },
    )
    assert done == [
        Usage(
            input_text_tokens=150,
            input_audio_tokens=50,
            input_cached_text_tokens=64,
            output_text_tokens=20,
            output_audio_tokens=80,
            responses=1,
        ),
        ResponseDone("resp_2", "completed"),
    ]


def test_tool_result_waits_for_the_active_response_before_asking_for_another() -> None:
    proto = protocol()
    proto.take_outgoing()
    server(proto, type="response.created", response={"id": "resp_1"})
    proto.tool_result("c1", '{"ok":true}', respond=True)
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["conversation.item.create"]
    server(proto, type="response.done", response={"id": "resp_1", "status": "completed"})
    assert [valid(t)["type"] for t in proto.take_outgoing()] == ["response.create"]


def test_replay_after_a_drop_is_valid_and_carries_the_conversation() -> None:
    proto = protocol()
    server(proto, type="conversation.item.input_audio_transcription.completed", item_id="u1", transcript="Hi")
    delta(proto, "a1", "r1", 160)
    server(proto, type="response.output_audio_transcript.done", item_id="a1", transcript="Hello there")
    proto.take_outgoing()
    proto.connection_lost()
    proto.replay()
    sent = [valid(t) for t in proto.take_outgoing()]
    assert [e["type"] for e in sent] == [
        "session.update",
        "conversation.item.create",
        "conversation.item.create",
    ]
    assert sent[1]["item"]["role"] == "user"
    assert sent[2]["item"]["content"] == [{"type": "output_text", "text": "Hello there"}]


def test_errors_are_classified() -> None:
    proto = protocol()
    fatal = server(proto, type="error", error={"type": "invalid_request_error", "code": "invalid_api_key"})
    assert fatal == [ProviderError("invalid_api_key", "", fatal=True)]
    benign = server(proto, type="error", error={"code": "response_cancel_not_active", "message": "x"})
    assert isinstance(benign[0], ProtocolNote)
    assert server(proto, type="error", error={"code": "session_expired"}) == [SessionExpired()]
    other = server(proto, type="error", error={"code": "invalid_value", "message": "bad param"})
    assert other == [ProviderError("invalid_value", "bad param", fatal=False)]


def test_xai_shape_and_native_rates() -> None:
    proto = RealtimeProtocol(XAI, BRIEF)
    proto.configure(SLIN16, SLIN16, greet=False)
    (update,) = (json.loads(t) for t in proto.take_outgoing())
    session = update["session"]
    assert session["voice"] == "marin"
    assert session["turn_detection"] == {"type": "server_vad"}
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}
    assert "type" not in session
    assert XAI.model_format(SLIN16) is SLIN16
    assert OPENAI.model_format(SLIN16) is SLIN24


def test_dialect_auth_and_urls() -> None:
    assert OPENAI.headers("k") == {"Authorization": "Bearer k"}
    assert AZURE_OPENAI.headers("k") == {"api-key": "k"}
    assert OPENAI.url("wss://h/v1/realtime", "gpt-realtime") == "wss://h/v1/realtime?model=gpt-realtime"
    assert (
        AZURE_OPENAI.url("wss://r/openai/v1/realtime?x=1", "dep")
        == "wss://r/openai/v1/realtime?x=1&model=dep"
    )


@given(st.binary(max_size=2000) | st.text(max_size=300))
def test_any_server_message_is_handled_without_raising(message: bytes | str) -> None:
    proto = protocol()
    for item in proto.receive(message):
        assert item is not None


@given(
    st.dictionaries(
        st.sampled_from(
            ["type", "delta", "item_id", "response_id", "response", "error", "transcript", "usage"]
        ),
        st.none()
        | st.integers()
        | st.text(max_size=20)
        | st.dictionaries(st.text(max_size=5), st.integers()),
    )
)
def test_malformed_known_events_become_notes(event: dict[str, Any]) -> None:
    proto = protocol()
    for type_ in ("response.output_audio.delta", "response.done", "error", "response.created"):
        proto.receive(json.dumps({**event, "type": type_}))


def test_audio_out_carries_the_read_time_it_is_given() -> None:
    proto = protocol(ULAW)
    audio = base64.b64encode(b"\x7f" * 160).decode()
    text = json.dumps(
        {"type": "response.output_audio.delta", "response_id": "r", "item_id": "i", "delta": audio}
    )
    assert proto.receive(text, 12.5) == [AudioOut(b"\x7f" * 160, "r", received_at=12.5)]
    assert proto.receive(text) == [AudioOut(b"\x7f" * 160, "r")]


def test_malformed_base64_audio_is_a_warning_not_audio() -> None:
    proto = protocol(ULAW)
    for bad in ("AAA", "AA=A", "A@==", "é"):
        (note,) = server(proto, type="response.output_audio.delta", response_id="r", item_id="i", delta=bad)
        assert isinstance(note, ProtocolNote)
        assert note.level == "warning"


def test_debug_notes_are_not_built_unless_asked_for() -> None:
    quiet = RealtimeProtocol(OPENAI, BRIEF, debug_notes=False)
    chatty = RealtimeProtocol(OPENAI, BRIEF)
    ignored = [
        {"type": "rate_limits.updated", "rate_limits": []},
        {"type": "response.output_audio_transcript.delta", "delta": "hi"},
        {"type": "session.created", "session": {}},
        {"type": "error", "error": {"code": "response_cancel_not_active"}},
    ]
    for event in ignored:
        assert quiet.receive(json.dumps(event)) == []
        (note,) = chatty.receive(json.dumps(event))
        assert isinstance(note, ProtocolNote)
        assert note.level == "debug"
    # Warnings are built either way: they are logged at the production level.
    (warning,) = quiet.receive("{not json")
    assert isinstance(warning, ProtocolNote)
    assert warning.level == "warning"


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (' {"type": "input_audio_buffer.speech_started", "audio_start_ms": 5} \n', True),
        ('{"type": "input_audio_buffer.speech_started", "audio_start_ms": 5}', True),
        (b'{"type": "input_audio_buffer.speech_started", "audio_start_ms": 5}', True),
        ('{"type": "input_audio_buffer.speech_started"} {"type": "x"}', False),
        ('{"type": "input_audio_buffer.speech_started"', False),
    ],
)
def test_server_json_is_read_as_json_loads_reads_it(text: str | bytes, parsed: bool) -> None:
    events = protocol().receive(text)
    if parsed:
        assert events == [CallerSpeechStarted(5.0)]
    else:
        assert [type(e) for e in events] == [ProtocolNote]
