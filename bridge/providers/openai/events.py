"""The OpenAI Realtime GA protocol as a sans-I/O state machine (also Azure's and xAI's).

Feed it the server's text messages (`receive`), get typed provider events back; ask it for
the client events to send (`take_outgoing`). It keeps what the protocol needs between
messages: the active response, how much audio each assistant item carried (so a truncate
is clamped to what was received), the conversation so far (replayed after a reconnect),
and the `response.create`s owed once the active response ends (see `responses.py`): after tool
results and the caller's keys, and the texts the bridge asks the model to say.
No asyncio, sockets, clocks or logging: the client logs the notes it returns, and says whether it
wants the debug-level ones at all (`debug_notes`): most server events are ignored, and building a
note for each only for the logger to drop it costs on every event.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.audio.formats import AudioFormat
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderError,
    ProviderEvent,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    TranscriptLine,
)
from bridge.providers.brief import AgentBrief, ResolvedBrief, opening_instructions, resolve, say_instructions
from bridge.providers.openai.conversation import ConversationHistory, text_item
from bridge.providers.openai.dialect import Dialect
from bridge.providers.openai.responses import ResponseRequest, ResponseSchedule
from bridge.providers.openai.session_config import session_body
from bridge.providers.openai.usage import response_usage, transcription_usage

# The session cannot go on: end the call as failed with this code.
FATAL_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "beta_api_shape_disabled",
        "model_not_found",
        "account_deactivated",
        "billing_hard_limit_reached",
    }
)
# Errors our own races produce (a truncate after the server already cut the item, a cancel of a
# response that just ended): expected, harmless.
BENIGN_CODES = frozenset({"response_cancel_not_active"})
# Our response.create met a response the server's VAD had just started: ours waits for its turn.
BUSY_CODE = "conversation_already_has_active_response"
# The server ended the session at its maximum duration: reconnect and replay, do not fail the call.
EXPIRY_CODES = frozenset({"session_expired", "session_expired_error"})
AUDIO_DELTA = "response.output_audio.delta"
APPEND_HEAD = b'{"type":"input_audio_buffer.append","audio":"'


@dataclass(frozen=True, slots=True)
class ProtocolNote:
    """Something the client should log (at `level`), not act on."""

    level: Literal["debug", "info", "warning"]
    message: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SessionExpired:
    """The provider says the session reached its limit: the client rotates to a new one."""


Incoming = ProviderEvent | ProtocolNote | SessionExpired


@dataclass(slots=True)
class _AssistantItem:
    response_id: str
    audio_bytes: int = 0
    transcript: str | None = None  # set at output_audio_transcript.done
    heard_ms: float | None = None  # set when we truncated it


@dataclass(slots=True)
class RealtimeProtocol:
    dialect: Dialect
    brief: AgentBrief
    debug_notes: bool = True  # False: no debug-level ProtocolNote is built (the client would drop it)
    resolved: ResolvedBrief = field(init=False)
    input_format: AudioFormat | None = None
    output_format: AudioFormat | None = None
    _outbox: list[str] = field(default_factory=list)
    _items: dict[str, _AssistantItem] = field(default_factory=dict)
    _last_audio_item: str | None = None
    _history: ConversationHistory = field(default_factory=ConversationHistory)
    _responses: ResponseSchedule = field(default_factory=ResponseSchedule)
    _cancelled: str | None = None  # the response we sent response.cancel for
    _says: int = 0  # say ids handed out
    _pending: list[Incoming] = field(default_factory=list)  # reported with the next server event

    def __post_init__(self) -> None:
        self.resolved = resolve(self.brief)

    # ------------------------------------------------------------------ client events

    def take_outgoing(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def has_outgoing(self) -> bool:
        """Something to send (checked after each server event: most bring nothing to flush)."""
        return bool(self._outbox)

    def _send(self, event: dict[str, Any]) -> None:
        self._outbox.append(json.dumps(event, separators=(",", ":"), ensure_ascii=False))

    @property
    def active_response(self) -> str | None:
        return self._responses.active

    def _want_response(self, request: ResponseRequest, *, first: bool = False) -> None:
        now = self._responses.want(request, first=first)
        if now is not None:
            self._send_create(now)

    def _send_create(self, request: ResponseRequest) -> None:
        if request.body:
            self._send({"type": "response.create", "response": request.body})
        else:
            self._send({"type": "response.create"})

    def _cancel_active(self) -> None:
        active = self._responses.active
        if active is not None and active != self._cancelled:
            self._cancelled = active
            self._send({"type": "response.cancel"})

    def configure(self, input_format: AudioFormat, output_format: AudioFormat, *, greet: bool) -> None:
        """session.update, then (first connection only) the greeting as a response of its own."""
        self.input_format, self.output_format = input_format, output_format
        body = session_body(self.dialect, self.brief, self.resolved, input_format, output_format)
        self._send({"type": "session.update", "session": body})
        if greet and self.resolved.opening_line:
            self._want_response(
                ResponseRequest({"instructions": opening_instructions(self.resolved.opening_line)})
            )

    def append_audio(self, data: bytes) -> bytes:
        """input_audio_buffer.append for one chunk as the UTF-8 text frame's payload, built without a
        JSON encoder or a str round trip (base64 is ASCII and needs no escaping)."""
        return APPEND_HEAD + binascii.b2a_base64(data, newline=False) + b'"}'

    def interrupt(self, played_ms: float, *, cancel: bool) -> int | None:
        """Barge-in: truncate the latest assistant item at what the caller heard (clamped to what came).

        `cancel`: the barge-in is ours (local VAD), so the server has not cancelled its response.
        Returns the `audio_end_ms` sent, or None when there was nothing to truncate.
        """
        if cancel:
            self._cancel_active()
        item_id = self._last_audio_item
        self._last_audio_item = None
        item = self._items.get(item_id) if item_id else None
        if item_id is None or item is None or item.heard_ms is not None:
            return None
        received_ms = self._output_ms(item.audio_bytes)
        heard = int(max(0.0, min(played_ms, received_ms)))
        item.heard_ms = float(heard)
        self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": heard,
            }
        )
        if item.transcript is not None:  # the full line was already reported: report what was heard
            self._pending.append(self._bot_line(item_id, item))
        return heard

    def tool_result(self, call_id: str, output: str, *, respond: bool) -> None:
        self._send(
            {
                "type": "conversation.item.create",
                "item": {"type": "function_call_output", "call_id": call_id, "output": output},
            }
        )
        if respond:
            self._want_response(ResponseRequest())  # after the active response, if there is one

    def user_text(self, text: str, *, respond: bool) -> None:
        """Text input from the caller's side (their keys, as the agent's DTMF rules made them): a user
        message item, then a response if `respond` (after the active one, if any)."""
        self._send(text_item("caller", text))
        self._history.add_input(text)
        if respond:
            self._want_response(ResponseRequest())

    def say(self, text: str, *, interrupt: bool) -> int:
        """A response that speaks `text` word for word; returns its say id (see SayFinished).

        `interrupt`: the active response is cancelled and this one goes first; otherwise it waits for
        the active response (and any owed before it) to end.
        """
        self._says += 1
        if interrupt:
            self._cancel_active()
        request = ResponseRequest({"instructions": say_instructions(text)}, say_id=self._says)
        self._want_response(request, first=interrupt)
        return self._says

    def replay(self) -> None:
        """After a reconnect: the same session, and the conversation so far as plain text items."""
        if self.input_format is None or self.output_format is None:
            return
        self.configure(self.input_format, self.output_format, greet=False)
        for event in self._history.replay():
            self._send(event)
        resumed = self._responses.resume()  # a response still owed goes to the new session
        if resumed is not None:
            self._send_create(resumed)

    def connection_lost(self) -> None:
        """The server forgot everything about responses and items; keep only the history (and the
        responses not yet started). A say cut short is reported over."""
        for say_id in self._responses.lost():
            self._pending.append(SayFinished(say_id, "failed"))
        self._cancelled = None
        self._last_audio_item = None
        self._items.clear()

    # ------------------------------------------------------------------ server events

    def receive(self, text: str | bytes, received_at: float | None = None) -> list[Incoming]:
        """The events one server message brings; `received_at` (the loop time it was read) goes on audio."""
        if self._pending:
            out, self._pending = self._pending, []
            return out + self._parse(text, received_at)
        return self._parse(text, received_at)

    def _parse(self, text: str | bytes, received_at: float | None) -> list[Incoming]:
        try:
            event = _loads(text)
        except ValueError:
            return [ProtocolNote("warning", "server sent a message that is not JSON")]
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return [ProtocolNote("warning", "server event without a type")]
        kind = event["type"]
        try:
            if kind == AUDIO_DELTA:  # most of the traffic: no table lookup, no extra call
                return self._audio_delta(event, received_at)
            handler = _HANDLERS.get(kind)
            if handler is None:
                return [ProtocolNote("debug", "ignored server event", kind)] if self.debug_notes else []
            return handler(self, event)
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            return [ProtocolNote("warning", f"malformed {kind}", repr(exc))]

    def _audio_delta(self, event: dict[str, Any], received_at: float | None) -> list[Incoming]:
        # strict_mode does in C what b64decode(validate=True) does with a regex over the whole payload.
        data = binascii.a2b_base64(event["delta"], strict_mode=True)
        item_id, response_id = str(event["item_id"]), str(event["response_id"])
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _AssistantItem(response_id)
        if item.heard_ms is not None:
            return []  # already truncated: late audio of an interrupted item
        item.audio_bytes += len(data)
        self._last_audio_item = item_id
        return [AudioOut(data, response_id, received_at)]

    def _audio_done(self, event: dict[str, Any]) -> list[Incoming]:
        return [ResponseAudioDone(str(event["response_id"]))]

    def _bot_transcript_done(self, event: dict[str, Any]) -> list[Incoming]:
        item_id = str(event["item_id"])
        item = self._items.setdefault(item_id, _AssistantItem(str(event.get("response_id", ""))))
        item.transcript = str(event["transcript"])
        return [self._bot_line(item_id, item)]

    def _bot_line(self, item_id: str, item: _AssistantItem) -> TranscriptLine:
        text = item.transcript or ""
        truncated = item.heard_ms is not None
        if truncated and text:
            # The transcript covers all the audio generated; keep the share the caller heard.
            total_ms = self._output_ms(item.audio_bytes)
            share = 1.0 if total_ms <= 0 else min(1.0, (item.heard_ms or 0.0) / total_ms)
            text = _cut_words(text, share)
        self._history.set(item_id, "bot", text)
        return TranscriptLine("bot", text, item_id, truncated=truncated)

    def _caller_transcript(self, event: dict[str, Any]) -> list[Incoming]:
        item_id = str(event["item_id"])
        text = str(event["transcript"]).strip()
        out: list[Incoming] = []
        if text:
            self._history.set(item_id, "caller", text)
            out.append(TranscriptLine("caller", text, item_id))
        usage = event.get("usage")
        if isinstance(usage, dict):
            out.append(transcription_usage(usage))
        return out

    def _speech_started(self, event: dict[str, Any]) -> list[Incoming]:
        return [CallerSpeechStarted(_float(event.get("audio_start_ms")))]

    def _speech_stopped(self, event: dict[str, Any]) -> list[Incoming]:
        return [CallerSpeechStopped(_float(event.get("audio_end_ms")))]

    def _response_created(self, event: dict[str, Any]) -> list[Incoming]:
        self._responses.created(str(event["response"]["id"]))
        return []

    def _response_done(self, event: dict[str, Any]) -> list[Incoming]:
        response = event["response"]
        response_id, status = str(response.get("id", "")), str(response.get("status", "completed"))
        said, next_request = self._responses.done(response_id)
        out: list[Incoming] = []
        usage = response.get("usage") or event.get("usage")
        if isinstance(usage, dict) and usage:
            out.append(response_usage(usage))
        details = response.get("status_details") or {}
        error = details.get("error") if isinstance(details, dict) else None
        if status == "failed" and isinstance(error, dict):
            code = str(error.get("code") or error.get("type") or "response_failed")
            out.append(ProviderError(code, str(error.get("message", "")), fatal=code in FATAL_CODES))
        out.append(ResponseDone(response_id, status))
        if said is not None:
            out.append(SayFinished(said, status))
        if next_request is not None:
            self._send_create(next_request)
        return out

    def _function_call(self, event: dict[str, Any]) -> list[Incoming]:
        return [
            ToolCall(
                call_id=str(event["call_id"]),
                name=str(event["name"]),
                arguments=str(event.get("arguments") or "{}"),
                response_id=str(event.get("response_id", "")),
            )
        ]

    def _error(self, event: dict[str, Any]) -> list[Incoming]:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "error")
        message = str(error.get("message", ""))
        if code in EXPIRY_CODES:
            return [SessionExpired()]
        if code == BUSY_CODE:
            self._responses.refused()
            return [ProtocolNote("debug", "response.create waits its turn", code)] if self.debug_notes else []
        if code in BENIGN_CODES or (code == "invalid_value" and "truncate" in message.lower()):
            return [ProtocolNote("debug", "benign provider error", code)] if self.debug_notes else []
        return [ProviderError(code, message, fatal=code in FATAL_CODES)]

    def _session_event(self, event: dict[str, Any]) -> list[Incoming]:
        return [ProtocolNote("debug", event["type"])] if self.debug_notes else []

    def _output_ms(self, nbytes: int) -> float:
        return self.output_format.ms_for_bytes(nbytes) if self.output_format else 0.0


_DECODER = json.JSONDecoder()


def _loads(text: str | bytes) -> Any:
    """`json.loads`, minus its two regex passes for whitespace around the usual server message."""
    if type(text) is str:
        try:
            value, end = _DECODER.raw_decode(text)
        except ValueError:
            pass  # leading whitespace, or not JSON: json.loads decides
        else:
            if end == len(text):
                return value
    return json.loads(text)


def _cut_words(text: str, share: float) -> str:
    words = text.split()
    keep = round(len(words) * share)
    return " ".join(words[:keep])


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


_HANDLERS = {  # besides AUDIO_DELTA, which `_parse` handles first
    "response.output_audio.done": RealtimeProtocol._audio_done,
    "response.output_audio_transcript.done": RealtimeProtocol._bot_transcript_done,
    "conversation.item.input_audio_transcription.completed": RealtimeProtocol._caller_transcript,
    "input_audio_buffer.speech_started": RealtimeProtocol._speech_started,
    "input_audio_buffer.speech_stopped": RealtimeProtocol._speech_stopped,
    "response.created": RealtimeProtocol._response_created,
    "response.done": RealtimeProtocol._response_done,
    "response.function_call_arguments.done": RealtimeProtocol._function_call,
    "error": RealtimeProtocol._error,
    "session.created": RealtimeProtocol._session_event,
    "session.updated": RealtimeProtocol._session_event,
}
