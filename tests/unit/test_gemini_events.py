"""The sans-I/O Gemini Live protocol: every client message it builds passes google-genai's strict models
(through the fake's validator), and server messages become the right provider events."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.audio.formats import ALAW, SLIN, SLIN16, SLIN24, SLIN48, ULAW
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    ToolSpec,
    TranscriptLine,
    Usage,
)
from bridge.providers.brief import AgentBrief
from bridge.providers.gemini.client import close_code_error
from bridge.providers.gemini.events import GeminiProtocol
from bridge.providers.gemini.setup import input_format, voice_name
from bridge.providers.gemini.usage import TurnUsage, usage_from_metadata
from bridge.providers.gemini.wire import GoAway, ProtocolNote, SetupComplete
from tests.fakes.gemini_live import parse_client_message

TOOLS = (
    ToolSpec("end_call", "Hang up", {"type": "object", "properties": {"reason": {"type": "string"}}}),
    ToolSpec("lookup", "Find", {"type": "object", "properties": {"order": {"type": "string"}}}),
)


def protocol(**brief: Any) -> GeminiProtocol:
    fields: dict[str, Any] = {
        "instructions": "Be brief.",
        "greeting": "Hello there.",
        "tools": TOOLS,
        **brief,
    }
    return GeminiProtocol(AgentBrief(**fields), "gemini-live-test")


def sent(p: GeminiProtocol) -> list[dict[str, Any]]:
    out = []
    for text in p.take_outgoing():
        msg = parse_client_message(text)  # raises on anything the service would refuse
        out.append(json.loads(text) | {"_kind": msg.kind})
    return out


def audio_msg(ms: int = 100) -> str:
    data = base64.b64encode(b"\x01\x00" * (24 * ms)).decode()
    return json.dumps(
        {
            "serverContent": {
                "modelTurn": {"parts": [{"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": data}}]}
            }
        }
    )


def content(**fields: Any) -> str:
    return json.dumps({"serverContent": fields})


def test_setup_is_valid_and_carries_the_brief() -> None:
    p = protocol(voice="puck", vad_threshold=0.8)
    msg = parse_client_message(p.setup())
    setup = json.loads(p.setup())["setup"]
    assert setup["model"] == "models/gemini-live-test"
    assert (
        setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"] == "Puck"
    )
    assert setup["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"] == dict(TOOLS[0].parameters)
    assert setup["sessionResumption"] == {}
    assert setup["inputAudioTranscription"] == {}
    assert setup["outputAudioTranscription"] == {}
    assert msg.realtime_input_config is not None
    detection = msg.realtime_input_config.automatic_activity_detection
    assert detection is not None
    assert detection.start_of_speech_sensitivity == "START_SENSITIVITY_LOW"


def test_voice_mapping_and_formats() -> None:
    assert voice_name("marin", "Kore") == "Kore"
    assert voice_name("CHARON", "Kore") == "Charon"
    assert input_format(ULAW) == SLIN
    assert input_format(ALAW) == SLIN
    assert input_format(SLIN16) == SLIN16
    assert input_format(SLIN24) == SLIN24
    assert input_format(SLIN48) == SLIN16


def test_greeting_then_audio_at_the_declared_rate() -> None:
    p = protocol()
    p.configure(SLIN, greet=True)
    (greeting,) = sent(p)
    turn = greeting["clientContent"]
    assert turn["turnComplete"] is True
    assert "Hello there." in turn["turns"][0]["parts"][0]["text"]
    audio = parse_client_message(p.append_audio(b"\x00\x01" * 160))
    assert audio.body["audio"]["mimeType"] == "audio/pcm;rate=8000"
    assert audio.parsed.realtime_input is not None
    assert audio.parsed.realtime_input.audio is not None
    assert audio.parsed.realtime_input.audio.data == b"\x00\x01" * 160


def test_a_turn_becomes_audio_transcript_and_done_with_usage() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    events = p.receive(content(inputTranscription={"text": "Hi, "}))
    events += p.receive(content(inputTranscription={"text": "there"}))
    events += p.receive(audio_msg(), 5.0)
    events += p.receive(content(outputTranscription={"text": "Hello "}))
    events += p.receive(content(outputTranscription={"text": "caller."}))
    events += p.receive(content(generationComplete=True))
    meta = {
        "promptTokenCount": 340,
        "responseTokenCount": 50,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 300},
            {"modality": "AUDIO", "tokenCount": 40},
        ],
        "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": 50}],
    }
    events += p.receive(json.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": meta}))
    assert events[0] == TranscriptLine("caller", "Hi, there", "caller-1")
    audio = events[1]
    assert isinstance(audio, AudioOut)
    assert audio.response_id == "turn-1"
    assert audio.received_at == 5.0
    assert events[2:] == [
        ResponseAudioDone("turn-1"),
        Usage(input_text_tokens=300, input_audio_tokens=40, output_audio_tokens=50, responses=1),
        TranscriptLine("bot", "Hello caller.", "turn-1"),
        ResponseDone("turn-1", "completed"),
    ]


def test_interrupted_is_a_barge_in_and_the_line_is_cut_at_what_was_heard() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    p.receive(audio_msg(1000))
    p.receive(content(outputTranscription={"text": "one two three four five six seven eight nine ten"}))
    events = p.receive(content(interrupted=True))
    assert events == [CallerSpeechStarted()]
    assert p.interrupt(300.0, cancel=False) == 300.0
    events = p.receive(content(turnComplete=True))
    assert TranscriptLine("bot", "one two three", "turn-1", truncated=True) in events
    assert events[-1] == ResponseDone("turn-1", "cancelled")


def test_a_late_local_barge_in_recuts_a_finished_line() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    p.receive(audio_msg(1000))
    p.receive(content(outputTranscription={"text": "a b c d"}))
    p.receive(content(turnComplete=True))
    assert p.interrupt(500.0, cancel=True) == 500.0
    assert p.interrupt(600.0, cancel=True) is None  # once
    assert p.receive(json.dumps({"sessionResumptionUpdate": {"newHandle": "h1", "resumable": True}})) == [
        TranscriptLine("bot", "a b", "turn-1", truncated=True)
    ]
    assert p.handle == "h1"


def test_tool_call_and_result() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    events = p.receive(
        json.dumps(
            {"toolCall": {"functionCalls": [{"id": "fc-9", "name": "lookup", "args": {"order": "A"}}]}}
        )
    )
    assert events == [ToolCall("fc-9", "lookup", '{"order":"A"}', response_id="turn-1")]
    p.tool_result("fc-9", '{"status": "shipped"}', respond=True)
    p.tool_result("fc-9", "{}", respond=True)  # a second answer to the same call is not sent
    (reply,) = sent(p)
    assert reply["toolResponse"]["functionResponses"] == [
        {"id": "fc-9", "name": "lookup", "response": {"status": "shipped"}}
    ]


def test_a_cancelled_tool_call_gets_no_result() -> None:
    p = protocol()
    p.receive(json.dumps({"toolCall": {"functionCalls": [{"id": "fc-1", "name": "lookup", "args": {}}]}}))
    events = p.receive(json.dumps({"toolCallCancellation": {"ids": ["fc-1"]}}))
    assert isinstance(events[0], ProtocolNote)
    p.tool_result("fc-1", "[1, 2]", respond=True)
    assert p.take_outgoing() == []


def test_a_local_barge_in_drops_the_rest_of_the_turn() -> None:
    p = protocol()
    p.receive(audio_msg())
    p.interrupt(50.0, cancel=True)  # Gemini has no cancel: the server goes on generating
    assert p.receive(audio_msg()) == []
    assert p.receive(content(turnComplete=True))[-1] == ResponseDone("turn-1", "completed")


def test_respond_false_mutes_the_rest_of_the_turn() -> None:
    p = protocol()
    p.receive(audio_msg())
    p.receive(json.dumps({"toolCall": {"functionCalls": [{"id": "fc-1", "name": "end_call", "args": {}}]}}))
    p.tool_result("fc-1", '{"ok": true}', respond=False)
    assert p.receive(audio_msg()) == []
    assert p.receive(content(turnComplete=True))[-1] == ResponseDone("turn-1", "completed")
    assert isinstance(p.receive(audio_msg())[0], AudioOut)  # the next turn plays


def test_text_inputs_wait_for_the_turn_and_say_reports_its_turn() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    p.receive(audio_msg())
    p.user_text("DTMF: 4", respond=True)
    say_id = p.say("Your code is 1234.", interrupt=False)
    assert p.take_outgoing() == []  # the model is speaking: after its turn
    p.receive(content(turnComplete=True))
    (dtmf,) = sent(p)
    assert dtmf["clientContent"]["turns"][0]["parts"][0]["text"] == "DTMF: 4"
    p.receive(audio_msg())
    p.receive(content(turnComplete=True))
    (say,) = sent(p)
    assert "Your code is 1234." in say["clientContent"]["turns"][0]["parts"][0]["text"]
    p.receive(audio_msg())
    assert p.receive(content(turnComplete=True))[-1] == SayFinished(say_id, "completed")


def test_say_with_interrupt_cuts_the_model_without_a_barge_in() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    p.receive(audio_msg())
    say_id = p.say("Goodbye.", interrupt=True)
    assert len(sent(p)) == 1
    assert p.receive(content(interrupted=True)) == []  # our own doing, not the caller's
    p.receive(content(turnComplete=True))
    p.receive(audio_msg())
    assert p.receive(content(turnComplete=True))[-1] == SayFinished(say_id, "completed")


def test_resumption_handle_goaway_and_a_fresh_session_with_history() -> None:
    p = protocol()
    p.receive(json.dumps({"sessionResumptionUpdate": {"newHandle": "h-1", "resumable": False}}))
    assert p.handle is None
    assert p.receive(json.dumps({"setupComplete": {}})) == [SetupComplete()]
    assert p.receive(json.dumps({"goAway": {"timeLeft": "50s"}})) == [GoAway("50s")]
    p.receive(content(inputTranscription={"text": "I need a plumber", "finished": True}))
    p.receive(json.dumps({"session_resumption_update": {"new_handle": "h-2", "resumable": True}}))
    assert json.loads(p.setup())["setup"]["sessionResumption"] == {"handle": "h-2"}
    p.handle = None  # refused: a fresh session is told the conversation
    text = json.loads(p.setup())["setup"]["systemInstruction"]["parts"][0]["text"]
    assert "Caller: I need a plumber" in text


def test_connection_lost_fails_the_turn_and_pending_says() -> None:
    p = protocol()
    p.configure(SLIN16, greet=False)
    p.receive(audio_msg())
    say_id = p.say("Hi.", interrupt=True)
    events = p.connection_lost()
    assert ResponseDone("turn-1", "failed") in events
    assert SayFinished(say_id, "failed") in events


def test_usage_snapshots_within_a_turn_count_once() -> None:
    tracker = TurnUsage()
    first = usage_from_metadata({"promptTokenCount": 100, "responseTokenCount": 10})
    assert tracker.add(first) == first
    grown = tracker.add(usage_from_metadata({"promptTokenCount": 100, "responseTokenCount": 25}))
    assert grown == Usage(output_audio_tokens=15)
    assert tracker.add(usage_from_metadata({"promptTokenCount": 100, "responseTokenCount": 25})) is None


def test_close_codes() -> None:
    assert close_code_error(1007, "API key not valid. Please pass a valid API key.") == (
        "invalid_api_key",
        True,
    )
    assert close_code_error(1008, "Requested entity was not found.") == ("model_not_found", True)
    assert close_code_error(1011, "Internal error encountered.") == ("provider_disconnected", False)
    assert close_code_error(None, "") == ("provider_disconnected", False)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = st.sampled_from(
    ["serverContent", "toolCall", "toolCallCancellation", "usageMetadata", "goAway",
     "sessionResumptionUpdate", "setupComplete", "voiceActivity", "modelTurn", "parts", "inlineData", "data",
     "turnComplete", "interrupted", "inputTranscription", "outputTranscription", "text", "functionCalls",
     "ids", "name", "args", "id"]
)  # fmt: skip
SHAPED = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.just("AAEC") | st.just(True),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | JSON.map(json.dumps) | SHAPED.map(json.dumps))
def test_arbitrary_server_messages_never_raise(message: Any) -> None:
    p = protocol()
    p.configure(SLIN16, greet=True)
    for item in p.receive(message, 1.0):
        assert not isinstance(item, BaseException)
    p.interrupt(100.0, cancel=True)
    p.connection_lost()
