"""The Ultravox protocol state machine and the create-call body (pure: no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.formats import ALAW, SLIN, SLIN12, SLIN16, SLIN24, SLIN44, SLIN48, ULAW, AudioFormat
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderUnavailable,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    ToolSpec,
    TranscriptLine,
    Usage,
)
from bridge.providers.brief import AgentBrief, resolve
from bridge.providers.ultravox.call_request import (
    CallSpec,
    call_body,
    created_call,
    dynamic_parameters,
    seconds,
    voice_for,
)
from bridge.providers.ultravox.client import UltravoxProvider
from bridge.providers.ultravox.events import CallStarted, ProtocolNote, UltravoxProtocol
from bridge.settings_agents import UltravoxSettings
from tests.fakes.ultravox import Invalid, check_start_call, parse_client_message


def msg(**fields: Any) -> str:
    return json.dumps(fields)


def events(protocol: UltravoxProtocol, *messages: str, now: float = 1.0) -> list[Any]:
    out: list[Any] = []
    for text in messages:
        out += protocol.receive(text, now)
    return out


def test_an_utterance_opens_with_its_audio_and_closes_when_the_agent_stops_speaking() -> None:
    p = UltravoxProtocol()
    p.joined(0.0)
    assert events(p, msg(type="call_started", callId="c-1")) == [CallStarted("c-1")]
    assert p.call_id == "c-1"
    first = p.audio(b"\x00\x01" * 160, 0.5)
    second = p.audio(b"\x00\x01" * 160, 0.6)
    assert isinstance(first, AudioOut)
    assert first.response_id == second.response_id == "uv-1"
    assert first.received_at == 0.5
    out = events(p, msg(type="state", state="listening"), now=2.0)
    assert out == [ResponseAudioDone("uv-1"), ResponseDone("uv-1", "completed"), Usage(model_seconds=2.0)]
    assert p.audio(b"\x00\x00", 2.5).response_id == "uv-2"  # the next utterance is a new response


def test_transcripts_are_assembled_from_text_and_deltas_per_ordinal() -> None:
    p = UltravoxProtocol()
    out = events(
        p,
        msg(type="transcript", role="agent", delta="Hello ", final=False, ordinal=0, medium="voice"),
        msg(type="transcript", role="user", text="hi th", final=False, ordinal=1, medium="voice"),
        msg(type="transcript", role="agent", delta="there.", final=False, ordinal=0, medium="voice"),
        msg(type="transcript", role="user", text="hi there", final=True, ordinal=1, medium="voice"),
        msg(type="transcript", role="agent", text="Hello there.", final=True, ordinal=0, medium="voice"),
    )
    assert out == [
        TranscriptLine("caller", "hi there", "uv-user-1"),
        TranscriptLine("bot", "Hello there.", "uv-agent-0"),
    ]


def test_playback_clear_buffer_is_a_barge_in_that_cuts_the_utterance_and_its_line() -> None:
    p = UltravoxProtocol()
    p.audio(b"\x00\x00", 0.1)
    events(p, msg(type="transcript", role="agent", delta="Welcome to", final=False, ordinal=0))
    out = events(p, msg(type="playback_clear_buffer"))
    assert out == [CallerSpeechStarted(), ResponseAudioDone("uv-1"), ResponseDone("uv-1", "cancelled")]
    (line,) = events(p, msg(type="transcript", role="agent", text="Welcome", final=True, ordinal=0))
    assert line == TranscriptLine("bot", "Welcome", "uv-agent-0", truncated=True)
    assert events(p, msg(type="state", state="thinking"), msg(type="state", state="listening")) == []


def test_a_local_barge_in_marks_the_utterance_cancelled() -> None:
    p = UltravoxProtocol()
    p.audio(b"\x00\x00", 0.1)
    p.interrupt()
    assert p.audio(b"\x00\x00", 0.2).response_id == "uv-1"  # the rest keeps the id the runner drops
    out = events(p, msg(type="state", state="listening"))
    assert ResponseDone("uv-1", "cancelled") in out


def test_caller_turn_end_is_the_move_from_listening_to_thinking() -> None:
    p = UltravoxProtocol()
    out = events(p, msg(type="state", state="listening"), msg(type="state", state="thinking"))
    assert out == [CallerSpeechStopped()]


def test_a_tool_invocation_is_a_tool_call_of_the_utterance_being_spoken() -> None:
    p = UltravoxProtocol()
    p.joined(0.0)
    p.audio(b"\x00\x00", 0.1)
    out = events(
        p,
        msg(type="client_tool_invocation", toolName="end_call", invocationId="inv-1", parameters={"r": 1}),
        now=3.0,
    )
    assert out == [Usage(model_seconds=3.0), ToolCall("inv-1", "end_call", '{"r": 1}', response_id="uv-1")]
    p.tool_result("inv-1", '{"ok": true}', respond=True)
    p.tool_result("inv-2", "{}", respond=False)
    sent = [json.loads(t) for t in p.take_outgoing()]
    assert sent == [
        {"type": "client_tool_result", "invocationId": "inv-1", "result": '{"ok": true}'},
        {"type": "client_tool_result", "invocationId": "inv-2", "result": "{}", "agentReaction": "listens"},
    ]


def test_what_the_bridge_sends_is_what_ultravox_accepts() -> None:
    p = UltravoxProtocol()
    p.tool_result("inv-1", "{}", respond=True)
    p.user_text("DTMF: 4", respond=True)
    p.user_text("DTMF: 5", respond=False)
    p.say("One moment.", interrupt=True)
    p.say("Later.", interrupt=False)
    p.hang_up()
    sent = p.take_outgoing()
    assert [parse_client_message(text)["type"] for text in sent] == [
        "client_tool_result",
        "user_text_message",
        "user_text_message",
        "forced_agent_message",
        "forced_agent_message",
        "hang_up",
    ]
    assert json.loads(sent[2])["urgency"] == "later"
    assert json.loads(sent[3])["urgency"] == "immediate"
    assert not p.has_outgoing


def test_a_say_is_the_next_utterance_and_finishes_with_it() -> None:
    p = UltravoxProtocol()
    p.audio(b"\x00\x00", 0.1)  # the greeting, still being spoken
    say_id = p.say("Your order ships today.", interrupt=False)
    out = events(p, msg(type="state", state="listening"))
    assert not [e for e in out if isinstance(e, SayFinished)]
    p.audio(b"\x00\x00", 0.2)
    out = events(p, msg(type="state", state="listening"))
    assert SayFinished(say_id, "completed") in out


def test_a_lost_socket_ends_the_utterance_and_reports_the_time() -> None:
    p = UltravoxProtocol()
    p.joined(10.0)
    p.audio(b"\x00\x00", 10.5)
    out = p.connection_lost(12.0)
    assert out == [ResponseAudioDone("uv-1"), ResponseDone("uv-1", "incomplete"), Usage(model_seconds=2.0)]
    assert p.bill(20.0) is None  # no time counts until the next call is joined
    p.joined(20.0)
    assert p.bill(21.5) == Usage(model_seconds=1.5)


def test_call_time_is_reported_at_least_every_five_seconds() -> None:
    p = UltravoxProtocol()
    p.joined(0.0)
    assert events(p, msg(type="pong", timestamp=1.0), now=4.0) == []
    assert events(p, msg(type="pong", timestamp=1.0), now=5.5) == [Usage(model_seconds=5.5)]
    assert p.usage_due(7.0) is None
    assert p.usage_due(11.0) == Usage(model_seconds=5.5)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        msg(type="state", state=3),
        msg(type="transcript", role="system", text="x", final=True),
        msg(type="transcript", role="user", text="x", final=True, ordinal="1"),
        msg(type="client_tool_invocation", toolName="", invocationId="i"),
        msg(type="brand_new_message"),
    ],
)
def test_malformed_messages_are_notes_not_errors(text: str) -> None:
    out = UltravoxProtocol().receive(text, 1.0)
    assert out
    assert all(isinstance(item, ProtocolNote) for item in out)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
TYPES = st.sampled_from(
    ["transcript", "state", "playback_clear_buffer", "client_tool_invocation", "call_started", "pong", "x"]
)
KEYS = st.sampled_from(
    ["role", "text", "delta", "final", "ordinal", "state", "toolName", "invocationId", "parameters", "callId"]
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    p = UltravoxProtocol()
    p.receive(data, 1.0)
    p.audio(data, 1.0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(TYPES, st.dictionaries(KEYS, JSON, max_size=6)), max_size=8), JSON)
def test_arbitrary_messages_of_every_type_never_raise(
    messages: list[tuple[str, dict[str, Any]]], other: Any
) -> None:
    p = UltravoxProtocol()
    p.joined(0.0)
    for kind, fields in messages:
        for item in p.receive(json.dumps({**fields, "type": kind}), 1.0):
            assert not isinstance(item, Exception)
    p.receive(json.dumps(other), 2.0)
    p.connection_lost(3.0)


# -- the create-call body -------------------------------------------------------------------------------

END_CALL = ToolSpec(
    "end_call",
    "Hang up",
    {"type": "object", "properties": {"reason": {"type": "string"}}, "required": ["reason"]},
)
NO_ARGS = ToolSpec("send_dtmf", "Press keys", {"type": "object", "properties": {}})


def spec(**overrides: Any) -> CallSpec:
    values: dict[str, Any] = {
        "model": "fixie-ai/ultravox",
        "voice": "Mark",
        "language": "es",
        "silence_ms": 500,
        "input_rate": 8000,
        "output_rate": 8000,
        "client_buffer_ms": 1000,
        "tools": (END_CALL, NO_ARGS),
    }
    values.update(overrides)
    return CallSpec(**values)


def test_the_body_greets_with_the_opening_line_and_declares_client_tools() -> None:
    resolved = resolve(
        AgentBrief(instructions="Be brief.", greeting="Hello {{name}}", variables={"name": "Ana"})
    )
    body = call_body(spec(), resolved, greet=True, resumed=False)
    check_start_call(body)  # the strict fake's schema accepts it
    assert body["firstSpeakerSettings"] == {"agent": {"text": "Hello Ana"}}
    assert body["medium"] == {
        "serverWebSocket": {"inputSampleRate": 8000, "outputSampleRate": 8000, "clientBufferSizeMs": 1000}
    }
    assert body["vadSettings"] == {"turnEndpointDelay": "0.5s"}
    assert body["languageHint"] == "es"
    end_call, no_args = body["selectedTools"]
    assert end_call == {
        "temporaryTool": {
            "modelToolName": "end_call",
            "description": "Hang up",
            "client": {},
            "dynamicParameters": [
                {
                    "name": "reason",
                    "location": "PARAMETER_LOCATION_BODY",
                    "schema": {"type": "string"},
                    "required": True,
                }
            ],
        }
    }
    assert "dynamicParameters" not in no_args["temporaryTool"]


@pytest.mark.parametrize(("greet", "resumed"), [(False, False), (True, True)])
def test_no_greeting_when_told_not_to_or_when_resuming(greet: bool, resumed: bool) -> None:
    resolved = resolve(AgentBrief(greeting="Hello"))
    body = call_body(spec(voice="", language="", tools=()), resolved, greet=greet, resumed=resumed)
    check_start_call(body)
    assert body["firstSpeakerSettings"] == {"user": {}}
    assert "voice" not in body
    assert "selectedTools" not in body


def test_a_takeover_does_not_greet() -> None:
    resolved = resolve(AgentBrief(greeting="Hello", history=(("caller", "hi"), ("bot", "Hello"))))
    body = call_body(spec(), resolved, greet=True, resumed=False)
    assert body["firstSpeakerSettings"] == {"user": {}}
    assert "Caller: hi" in body["systemPrompt"]


def test_helpers() -> None:
    assert [seconds(500), seconds(1000), seconds(0), seconds(384)] == ["0.5s", "1s", "0s", "0.384s"]
    assert dynamic_parameters({"type": "object"}) == []
    assert voice_for("", "marin") == ""
    assert voice_for("", "Jessica") == "Jessica"
    assert voice_for("Mark", "marin") == "Mark"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "invalid_request"),
        (401, "invalid_api_key"),
        (403, "permission_denied"),
        (503, "provider_unavailable"),
    ],
)
def test_a_refused_create_call_has_a_code(status: int, code: str) -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        created_call(status, '{"detail": "no"}')
    assert caught.value.code == code


def test_a_created_call_needs_a_join_url() -> None:
    call = created_call(201, json.dumps({"callId": "c-1", "joinUrl": "wss://x/calls/c-1"}))
    assert (call.call_id, call.join_url) == ("c-1", "wss://x/calls/c-1")
    for text in ("nope", "{}", json.dumps({"joinUrl": "http://x"}), "[]"):
        with pytest.raises(ProviderUnavailable):
            created_call(201, text)


@pytest.mark.parametrize(
    ("leg", "model"),
    [
        (ULAW, SLIN),
        (ALAW, SLIN),
        (SLIN, SLIN),
        (SLIN16, SLIN16),
        (SLIN24, SLIN24),
        (SLIN48, SLIN48),
        (SLIN12, SLIN16),
        (SLIN44, SLIN48),
    ],
)
def test_pcm_legs_pass_through_at_their_rate(leg: AudioFormat, model: AudioFormat) -> None:
    provider = UltravoxProvider(settings=UltravoxSettings(api_key="k"), brief=AgentBrief(), http=None)  # type: ignore[arg-type]
    formats = provider.negotiate(leg)
    assert formats.input == formats.output == model


def test_the_fake_refuses_what_ultravox_refuses() -> None:
    good = call_body(spec(), resolve(AgentBrief()), greet=True, resumed=False)
    bad_bodies = [
        {**good, "systemPromt": "typo"},  # unknown field
        {**good, "recordingEnabled": "no"},  # wrong type
        {**good, "medium": {"serverWebSocket": {"outputSampleRate": 8000}}},  # missing inputSampleRate
        {**good, "firstSpeakerSettings": {"user": {}, "agent": {}}},  # both speakers
        {**good, "vadSettings": {"turnEndpointDelay": "500ms"}},  # not a protobuf Duration
        {**good, "selectedTools": [{"temporaryTool": {"modelToolName": "x y", "client": {}}}]},
        {**good, "selectedTools": [{"temporaryTool": {"modelToolName": "x"}}]},  # no implementation
    ]
    for body in bad_bodies:
        with pytest.raises(Invalid):
            check_start_call(body)
    for text in (
        msg(type="user_text_message"),  # missing text
        msg(type="user_text_message", text=4),  # wrong type
        msg(type="user_text_message", text="x", deferResponse=True),  # not a field of today's protocol
        msg(type="input_text_message", text="x"),  # the SDK's old name
        msg(type="client_tool_result", invocationId="i", result="{}", errorType="undefined"),  # both
        msg(type="forced_agent_message", content="x", urgency="later"),
        "not json",
    ):
        with pytest.raises(Invalid):
            parse_client_message(text)
