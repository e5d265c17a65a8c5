"""Tests for the fake OpenAI Realtime server itself, driven by a raw `websockets` client over loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from tests.fakes.openai_realtime import (
    PCM24,
    PCMA,
    PCMU,
    SERVER_EVENTS,
    AudioFormat,
    FakeRealtimeServer,
    FatalError,
    Script,
    ScriptedError,
    ToolCall,
    Turn,
    decode,
    encode,
)
from tests.fakes.openai_realtime.audio import ALAW_DECODE, ULAW_DECODE, rms, voiced_signal

FAST = Script(speed=0)  # no pauses between deltas: tests that do not race the response


async def open_ws(
    server: FakeRealtimeServer, model: str = "gpt-realtime", **headers: str
) -> ClientConnection:
    hdrs = headers or server.auth_headers()
    return await connect(server.url_for(model), additional_headers=hdrs, compression=None)


async def recv(ws: ClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), 5)
    event: dict[str, Any] = json.loads(raw)
    return event


async def recv_until(
    ws: ClientConnection, etype: str, *, skip: tuple[str, ...] = ("ping",)
) -> list[dict[str, Any]]:
    """Events up to and including the first of type `etype`."""
    seen: list[dict[str, Any]] = []
    while True:
        event = await recv(ws)
        if event["type"] in skip:
            continue
        seen.append(event)
        if event["type"] == etype:
            return seen


async def send(ws: ClientConnection, event: dict[str, Any]) -> None:
    await ws.send(json.dumps(event))


async def send_audio(ws: ClientConnection, fmt: AudioFormat, *, speech_ms: int, silence_ms: int) -> None:
    """Speech then silence, in 20 ms appends (not paced: the fake's VAD works on stream time)."""
    samples = np.concatenate(
        (voiced_signal(3, speech_ms, fmt.rate), np.zeros(fmt.rate * silence_ms // 1000, dtype=np.int16))
    )
    data = encode(samples, fmt)
    step = fmt.bytes_for_ms(20)
    for i in range(0, len(data), step):
        await send(
            ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(data[i : i + step]).decode()}
        )


def session_update(**session: Any) -> dict[str, Any]:
    return {"type": "session.update", "session": {"type": "realtime", **session}}


PCMU_SESSION = session_update(
    model="gpt-realtime",
    instructions="You are a concise phone agent.",
    output_modalities=["audio"],
    audio={
        "input": {
            "format": {"type": "audio/pcmu"},
            "noise_reduction": {"type": "near_field"},
            "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
                "idle_timeout_ms": None,
                "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin", "speed": 1.0},
    },
    tools=[
        {
            "type": "function",
            "name": "end_call",
            "description": "Hang up politely",
            "parameters": {"type": "object", "properties": {}},
        }
    ],
    tool_choice="auto",
    max_output_tokens="inf",
)


@pytest.fixture
async def server() -> AsyncIterator[FakeRealtimeServer]:
    async with FakeRealtimeServer(script=FAST) as srv:
        yield srv


async def configured(server: FakeRealtimeServer, update: dict[str, Any] = PCMU_SESSION) -> ClientConnection:
    ws = await open_ws(server)
    assert (await recv(ws))["type"] == "session.created"
    await send(ws, update)
    assert (await recv(ws))["type"] == "session.updated"
    return ws


async def wait_closed(server: FakeRealtimeServer, index: int) -> None:
    """The server notices a close slightly after the client; wait for its bookkeeping."""
    async with asyncio.timeout(5):
        while server.connections[index - 1].closed_t is None:
            await asyncio.sleep(0.01)


def audio_of(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


# --- pure pieces -------------------------------------------------------------------------------------


def test_g711_tables_match_reference_values() -> None:
    # Reference points of ITU-T G.711 (µ-law 0xFF is zero, A-law 0xD5 is +8).
    assert (ULAW_DECODE[0xFF], ULAW_DECODE[0x00], ULAW_DECODE[0x80]) == (0, -32124, 32124)
    assert (ALAW_DECODE[0xD5], ALAW_DECODE[0x55], ALAW_DECODE[0xAA]) == (8, -8, 32256)
    x = np.array([0, -1, 1, 32767, -32768], dtype=np.int16)
    assert encode(x, PCMU) == bytes([0xFF, 0x7E, 0xFF, 0x80, 0x00])
    assert encode(x, PCMA) == bytes([0xD5, 0x55, 0xD5, 0xAA, 0x2A])
    ramp = np.arange(-32768, 32768, 97, dtype=np.int16)
    for fmt in (PCMU, PCMA):
        err = np.abs(decode(encode(ramp, fmt), fmt).astype(np.int32) - ramp)
        assert int(err.max()) <= 1024  # coarsest segment step


def test_reply_audio_is_voiced_and_sized() -> None:
    sig = voiced_signal(0, 1000, 8000)
    assert sig.size == 8000
    assert rms(sig) > 2000
    # Syllable-like: the 50 ms envelope varies, but never drops to silence.
    frames = sig[: 8000 // 400 * 400].reshape(-1, 400).astype(np.float64)
    energies = np.sqrt((frames**2).mean(axis=1))
    assert energies.min() > 1000
    assert energies.max() > 1.5 * energies.min()


# --- handshake ---------------------------------------------------------------------------------------


async def test_session_created_first_with_full_default_session(server: FakeRealtimeServer) -> None:
    ws = await open_ws(server)
    first = await recv(ws)
    assert first["type"] == "session.created"
    SERVER_EVENTS.validate_python(first)
    session = first["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["output"]["voice"] == "marin"
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    await ws.close()
    assert server.last.headers.get("authorization") is None  # secrets are not recorded
    server.assert_clean()


async def test_bad_key_and_missing_model_are_refused_at_upgrade(server: FakeRealtimeServer) -> None:
    with pytest.raises(InvalidStatus) as bad_key:
        await open_ws(server, Authorization="Bearer wrong")
    assert bad_key.value.response.status_code == 401
    body = json.loads(bad_key.value.response.body)
    assert body["error"]["code"] == "invalid_api_key"
    assert body["error"]["type"] == "invalid_request_error"
    with pytest.raises(InvalidStatus) as no_model:
        await connect(server.url, additional_headers=server.auth_headers())
    assert no_model.value.response.status_code == 400
    assert [r["status"] for r in server.rejected] == [401, 400]
    assert server.connections == []
    with pytest.raises(AssertionError, match="invalid_api_key"):
        server.assert_clean()


async def test_beta_header_gets_error_then_close_4000(server: FakeRealtimeServer) -> None:
    ws = await open_ws(server, **server.auth_headers(), **{"OpenAI-Beta": "realtime=v1"})
    event = await recv(ws)
    assert event["type"] == "error"
    assert event["error"]["code"] == "beta_api_shape_disabled"
    with pytest.raises(ConnectionClosed):
        await recv(ws)
    assert ws.close_code == 4000
    assert any("OpenAI-Beta" in f for f in server.failures)


# --- session.update ----------------------------------------------------------------------------------


async def test_ga_session_update_is_accepted_and_merged(server: FakeRealtimeServer) -> None:
    ws = await open_ws(server)
    await recv(ws)
    await send(ws, PCMU_SESSION)
    updated = await recv(ws)
    assert updated["type"] == "session.updated"
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert updated["session"]["tools"][0]["name"] == "end_call"
    # A partial update changes only what it names; null disables turn detection.
    await send(ws, session_update(instructions="Be brief.", audio={"input": {"turn_detection": None}}))
    updated = (await recv(ws))["session"]
    assert updated["instructions"] == "Be brief."
    assert updated["audio"]["input"]["turn_detection"] is None
    assert updated["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert updated["audio"]["output"]["voice"] == "marin"
    assert server.last.session["instructions"] == "Be brief."
    server.assert_clean()


@pytest.mark.parametrize(
    ("event", "code", "param"),
    [
        (
            session_update(audio={"input": {"format": "g711_ulaw"}}),
            "invalid_type",
            "session.audio.input.format",
        ),
        (session_update(input_audio_format="g711_ulaw"), "unknown_parameter", "session.input_audio_format"),
        (
            session_update(audio={"input": {"format": {"type": "audio/pcm", "rate": 16000}}}),
            "invalid_value",
            "session.audio.input.format.rate",
        ),
        (
            {"type": "session.update", "session": {"modalities": ["audio", "text"]}},
            "missing_required_parameter",
            None,
        ),
        ({"type": "response.audio.delta", "delta": "AAAA"}, "invalid_value", "type"),
        ({"type": "input_audio_buffer.append", "audio": "AAAA", "extra": 1}, "unknown_parameter", "extra"),
        ({"type": "input_audio_buffer.append", "audio": "not base64!"}, "invalid_value", "audio"),
    ],
)
async def test_beta_and_malformed_events_get_an_error_and_the_socket_stays_open(
    server: FakeRealtimeServer, event: dict[str, Any], code: str, param: str | None
) -> None:
    ws = await open_ws(server)
    await recv(ws)
    await send(ws, {**event, "event_id": "evt_client_1"})
    error = await recv(ws)
    assert error["type"] == "error"
    SERVER_EVENTS.validate_python(error)
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == code
    assert error["error"]["event_id"] == "evt_client_1"
    if param is not None:
        assert error["error"]["param"] == param
    await send(ws, session_update(instructions="still here"))
    assert (await recv(ws))["type"] == "session.updated"
    assert len(server.failures) == 1


async def test_voice_cannot_change_after_audio_output(server: FakeRealtimeServer) -> None:
    ws = await configured(server)
    await send(ws, {"type": "response.create"})
    await recv_until(ws, "response.done")
    await send(ws, session_update(audio={"output": {"voice": "cedar"}}))
    error = await recv(ws)
    assert error["error"]["code"] == "cannot_update_voice"
    assert server.last.session["audio"]["output"]["voice"] == "marin"


# --- turns and responses -----------------------------------------------------------------------------

RESPONSE_ORDER = [
    "input_audio_buffer.speech_started",
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.input_audio_transcription.delta",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
    "rate_limits.updated",
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "response.output_item.done",
    "conversation.item.done",
    "response.done",
]


async def test_vad_turn_produces_the_response_sequence_with_decodable_audio() -> None:
    script = Script(
        speed=0, turns=(Turn(reply_ms=900, transcript="One two three four five.", caller_transcript="Hi"),)
    )
    async with FakeRealtimeServer(script=script) as server:
        ws = await configured(server)
        await send_audio(ws, PCMU, speech_ms=400, silence_ms=600)
        events = await recv_until(ws, "response.done")
        for event in events:
            SERVER_EVENTS.validate_python(event)
        deltas = ("response.output_audio.delta", "response.output_audio_transcript.delta")
        assert [e["type"] for e in events if e["type"] not in deltas] == RESPONSE_ORDER
        started = events[0]
        assert 0 <= started["audio_start_ms"] <= 40
        completed = next(e for e in events if e["type"].endswith("transcription.completed"))
        assert completed["transcript"] == "Hi"
        assert completed["usage"]["type"] == "tokens"
        audio = audio_of(events)
        assert len(audio) == 900 * 8  # µ-law, 8 bytes per ms
        assert rms(decode(audio, PCMU)) > 2000
        sizes = [len(base64.b64decode(e["delta"])) for e in events if e["type"] == deltas[0]]
        assert all(40 * 8 <= n <= 200 * 8 for n in sizes[:-1])
        text = "".join(e["delta"] for e in events if e["type"] == deltas[1])
        assert text == "One two three four five."
        done = events[-1]["response"]
        assert done["status"] == "completed"
        assert set(done["usage"]["input_token_details"]) >= {"text_tokens", "audio_tokens", "cached_tokens"}
        assert set(done["usage"]["output_token_details"]) == {"text_tokens", "audio_tokens"}
        rec = server.last.responses[0]
        assert (rec.kind, rec.status, rec.audio_ms_sent) == ("turn", "completed", 900)
        assert server.last.input_audio_ms == 1000
        server.assert_clean()


async def test_pluggable_audio_factory_output_arrives_verbatim() -> None:
    def factory(turn_index: int, ms: int, fmt: AudioFormat) -> bytes:
        return bytes([turn_index & 0xFF, 0x55]) * (fmt.bytes_for_ms(ms) // 2)

    async with FakeRealtimeServer(
        script=Script(speed=0, greeting_reply_ms=500), audio_factory=factory
    ) as server:
        ws = await open_ws(server)
        await recv(ws)
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
        assert audio_of(events) == factory(-1, 500, PCM24)  # greeting: turn_index -1
        server.assert_clean()


async def test_barge_in_cancels_the_response_and_truncate_is_answered() -> None:
    script = Script(speed=1.0, turns=(Turn(reply_ms=20000),))
    async with FakeRealtimeServer(script=script) as server:
        ws = await configured(server)
        await send_audio(ws, PCMU, speech_ms=300, silence_ms=600)
        first = await recv_until(ws, "response.output_audio.delta")
        item_id = first[-1]["item_id"]
        heard_ms = len(base64.b64decode(first[-1]["delta"])) // 8
        await send_audio(ws, PCMU, speech_ms=300, silence_ms=0)
        events = await recv_until(ws, "response.done")
        types = [e["type"] for e in events]
        assert "input_audio_buffer.speech_started" in types
        assert types.index("input_audio_buffer.speech_started") < types.index("response.done")
        done = events[-1]["response"]
        assert done["status"] == "cancelled"
        assert done["status_details"]["reason"] == "turn_detected"
        assert done["output"][0]["status"] == "incomplete"
        await send(
            ws,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": heard_ms,
            },
        )
        truncated = await recv_until(ws, "conversation.item.truncated")
        assert truncated[-1]["audio_end_ms"] == heard_ms
        rec = server.last
        assert rec.responses[0].status == "cancelled"
        assert rec.responses[0].audio_ms_sent < 20000
        assert len(rec.speech_started_at) == 2
        assert rec.truncates[0].accepted
        assert rec.truncates[0].audio_end_ms == heard_ms
        assert rec.truncates[0].t > rec.speech_started_at[1]
        server.assert_clean()


async def test_truncate_beyond_sent_audio_or_unknown_item_is_an_error(server: FakeRealtimeServer) -> None:
    ws = await configured(server)
    await send(ws, {"type": "response.create"})
    events = await recv_until(ws, "response.done")
    item_id = events[-1]["response"]["output"][0]["id"]
    sent_ms = len(audio_of(events)) // 8
    assert sent_ms == 1500
    await send(
        ws,
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": sent_ms + 100,
        },
    )
    error = await recv(ws)
    assert (error["type"], error["error"]["param"]) == ("error", "audio_end_ms")
    await send(
        ws,
        {"type": "conversation.item.truncate", "item_id": "item_nope", "content_index": 0, "audio_end_ms": 0},
    )
    assert (await recv(ws))["error"]["code"] == "item_not_found"
    assert [t.accepted for t in server.last.truncates] == [False, False]
    assert server.last.truncates[0].audio_ms_sent == 1500
    assert len(server.failures) == 2


async def test_response_cancel_by_client_and_when_nothing_is_active() -> None:
    async with FakeRealtimeServer(script=Script(speed=1.0, greeting_reply_ms=20000)) as server:
        ws = await open_ws(server)
        await recv(ws)
        await send(ws, {"type": "response.cancel"})
        error = await recv(ws)
        assert error["error"]["code"] == "response_cancel_not_active"
        await send(ws, {"type": "response.create"})
        await recv_until(ws, "response.output_audio.delta")
        await send(ws, {"type": "response.create"})
        busy = await recv_until(ws, "error")
        assert busy[-1]["error"]["code"] == "conversation_already_has_active_response"
        await send(ws, {"type": "response.cancel"})
        done = (await recv_until(ws, "response.done"))[-1]["response"]
        assert (done["status"], done["status_details"]["reason"]) == ("cancelled", "client_cancelled")
        assert server.last.responses[0].kind == "greeting"
        # Only the double response.create is the client's fault; the cancel race is not.
        assert len(server.failures) == 1


async def test_tool_call_round_trip_with_manual_turns() -> None:
    turns = (
        Turn(tool_call=ToolCall("end_call", {"reason": "done"})),
        Turn(reply_ms=300, transcript="Goodbye."),
    )
    async with FakeRealtimeServer(script=Script(speed=0, turns=turns)) as server:
        ws = await configured(server, session_update(audio={"input": {"turn_detection": None}}))
        await send_audio(ws, PCM24, speech_ms=200, silence_ms=0)
        await send(ws, {"type": "input_audio_buffer.commit"})
        assert (await recv(ws))["type"] == "input_audio_buffer.committed"
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
        args = next(e for e in events if e["type"] == "response.function_call_arguments.done")
        assert (args["name"], json.loads(args["arguments"])) == ("end_call", {"reason": "done"})
        assert events[-1]["response"]["output"][0]["type"] == "function_call"
        output = {"type": "function_call_output", "call_id": args["call_id"], "output": '{"ok": true}'}
        await send(ws, {"type": "conversation.item.create", "item": output})
        added = await recv(ws)
        assert added["type"] == "conversation.item.added"
        assert added["item"]["call_id"] == args["call_id"]
        await send(ws, {"type": "response.create"})
        events = await recv_until(ws, "response.done")
        assert events[-1]["response"]["output"][0]["content"][0]["transcript"] == "Goodbye."
        assert len(audio_of(events)) == 300 * 48
        rec = server.last
        assert rec.function_outputs == [{"call_id": args["call_id"], "output": '{"ok": true}'}]
        assert [r.kind for r in rec.responses] == ["tool_call", "turn"]
        server.assert_clean()


async def test_commit_of_a_too_short_buffer_is_an_error(server: FakeRealtimeServer) -> None:
    ws = await configured(server, session_update(audio={"input": {"turn_detection": None}}))
    await send_audio(ws, PCM24, speech_ms=40, silence_ms=0)
    await send(ws, {"type": "input_audio_buffer.commit"})
    assert (await recv(ws))["error"]["code"] == "input_audio_buffer_commit_empty"
    assert server.last.input_audio_ms == 40


async def test_scripted_error_turn_sends_an_error_and_keeps_the_session() -> None:
    turns = (Turn(error=ScriptedError("server_error", "boom")), Turn(reply_ms=200))
    async with FakeRealtimeServer(script=Script(speed=0, turns=turns)) as server:
        ws = await configured(server)
        await send(
            ws,
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "user",
                    "content": [{"type": "input_text", "text": "hi"}],
                },
            },
        )
        await recv_until(ws, "conversation.item.done")
        await send(ws, {"type": "response.create"})
        assert (await recv(ws))["error"]["message"] == "boom"
        await send(ws, {"type": "response.create"})
        assert (await recv_until(ws, "response.done"))[-1]["response"]["status"] == "completed"
        assert [r.kind for r in server.last.responses] == ["error", "turn"]
        server.assert_clean()


# --- connection faults -------------------------------------------------------------------------------


async def test_drop_after_s_closes_without_a_close_frame_on_the_first_connection_only() -> None:
    async with FakeRealtimeServer(script=Script(drop_after_s=0.1)) as server:
        ws = await open_ws(server)
        await recv(ws)
        with pytest.raises(ConnectionClosedError):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.protocol.close_rcvd is None  # abrupt: no close frame from the server
        ws2 = await open_ws(server)
        await recv(ws2)
        await send(ws2, session_update(instructions="second"))
        assert (await recv(ws2))["type"] == "session.updated"  # not dropped
        await ws2.close()
        await wait_closed(server, 2)
        assert [c.closed_by for c in server.connections] == ["drop", "client"]


async def test_max_session_sends_an_error_then_closes() -> None:
    async with FakeRealtimeServer(script=Script(max_session_s=0.1)) as server:
        ws = await open_ws(server)
        await recv(ws)
        error = await recv(ws)
        assert error["error"]["code"] == "session_expired"
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1000
        assert server.last.closed_by == "max_session"


async def test_fatal_error_on_first_response_create_closes() -> None:
    async with FakeRealtimeServer(script=Script(fatal_error=FatalError())) as server:
        ws = await open_ws(server)
        await recv(ws)
        await send(ws, {"type": "response.create"})
        error = await recv(ws)
        assert (error["error"]["code"], error["error"]["type"]) == (
            "insufficient_quota",
            "insufficient_quota",
        )
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert server.last.closed_by == "fatal_error"
        assert server.last.responses == []


# --- variants ----------------------------------------------------------------------------------------


async def test_xai_variant_shape_rates_ping_and_reduced_usage() -> None:
    script = Script(speed=0, ping_interval_s=0.05, turns=(Turn(reply_ms=400, caller_transcript="Hola"),))
    async with FakeRealtimeServer(variant="xai", script=script) as server:
        ws = await open_ws(server, model="grok-voice-latest")
        assert (await recv(ws))["type"] == "session.created"
        pcm16 = {"type": "audio/pcm", "rate": 16000}
        await send(
            ws,
            {
                "type": "session.update",
                "session": {
                    "voice": "Rex",
                    "turn_detection": {"type": "server_vad", "silence_duration_ms": 300},
                    "audio": {"input": {"format": pcm16}, "output": {"format": pcm16}},
                },
            },
        )
        updated = await recv_until(ws, "session.updated")
        assert updated[-1]["session"]["voice"] == "Rex"
        # The OpenAI GA placement of the voice is not xAI's.
        await send(ws, session_update(audio={"output": {"voice": "marin"}}))
        assert (await recv_until(ws, "error"))[-1]["error"]["param"] == "session.audio.output.voice"
        await send_audio(ws, AudioFormat("pcm", 16000), speech_ms=300, silence_ms=400)
        events = await recv_until(ws, "response.done", skip=())
        types = [e["type"] for e in events]
        assert "conversation.item.input_audio_transcription.updated" in types
        assert len(audio_of(events)) == 400 * 32  # 16 kHz s16le
        assert set(events[-1]["response"]["usage"]) == {"total_tokens", "input_tokens", "output_tokens"}
        ping = (await recv_until(ws, "ping", skip=()))[-1]
        assert isinstance(ping["timestamp"], int)
        assert server.last.input_audio_ms == 700
        assert server.last.model == "grok-voice-latest"
        assert len(server.failures) == 1  # the misplaced voice


async def test_azure_variant_path_and_api_key_header() -> None:
    async with FakeRealtimeServer(variant="azure", api_key="az-key", script=FAST) as server:
        assert server.url.endswith("/openai/v1/realtime")
        ws = await open_ws(server, model="my-deployment", **{"api-key": "az-key"})
        created = await recv(ws)
        assert created["session"]["model"] == "my-deployment"
        await ws.close()
        with pytest.raises(InvalidStatus) as bad:
            await open_ws(server, model="my-deployment", **{"api-key": "nope"})
        assert bad.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as wrong_path:
            await connect(
                server.url.replace("/openai/v1/", "/v1/") + "?model=x",
                additional_headers={"api-key": "az-key"},
            )
        assert wrong_path.value.response.status_code == 404
        assert "api-key" not in server.connections[0].headers
        assert server.connections[0].query == {"model": "my-deployment"}


async def test_fast_append_path_still_checks_shape_and_base64() -> None:
    async with FakeRealtimeServer(script=FAST, full_append_validation=False) as server:
        ws = await open_ws(server)
        await recv(ws)
        await send(ws, {"type": "input_audio_buffer.append", "audio": "AAAA", "audio_format": "pcm16"})
        assert (await recv(ws))["error"]["param"] == "audio_format"
        await send(ws, {"type": "input_audio_buffer.append", "audio": "AA=A"})
        assert (await recv(ws))["error"]["code"] == "invalid_value"
        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 960).decode()})
        await send(ws, {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\0" * 960).decode()})
        await send(ws, session_update(instructions="sync"))
        await recv_until(ws, "session.updated")
        assert server.last.input_audio_ms == 40  # 48 bytes per ms at 24 kHz
        appends = [e for e in server.last.events if e.type == "input_audio_buffer.append"]
        assert len(appends) == 1  # consecutive appends are folded into one record
        assert appends[0].data["count"] == 2
        assert len(server.failures) == 2
