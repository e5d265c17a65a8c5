"""The ElevenLabs Agents (Conversational AI) WebSocket protocol as a sans-I/O state machine.

Builds the client messages and turns the server's text messages into provider events. What it keeps
between messages: the last `interruption` id (audio with an id at or below it belongs to the response
the caller cut, and is dropped, as the SDK does), which synthetic response is playing (the protocol has
no response ids: one starts with the first audio after a turn boundary), the bot's last transcript
line (an `agent_response_correction` replaces it with what was heard), and the time billed so far.
No asyncio, sockets, clocks or logging: the client passes the loop time in and logs the notes.

Anything the server sends that is not a JSON object with a string `type`, or whose known fields have
the wrong shape, raises `MalformedMessage` from `parse`; `receive` turns that into a warning note.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bridge.audio.formats import ULAW, AudioFormat, slin_at
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderError,
    ProviderEvent,
    ResponseAudioDone,
    ResponseDone,
    ToolCall,
    TranscriptLine,
    Usage,
)
from bridge.providers.brief import AgentBrief, ResolvedBrief

# Time billed by the minute is reported at least this often while messages arrive (pings come every few
# seconds even in silence), so a call that ends abruptly loses at most about this much of its cost.
USAGE_EVERY_SECONDS = 2.0
# The protocol says when a reply's audio starts, not reliably when it ends (`agent_response_complete` is
# optional and late): a reply with no audio for this long is over (more audio later opens a new one).
RESPONSE_IDLE_SECONDS = 0.8
PCM_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
# Events the bridge has no use for (the SDK ignores them too).
IGNORED = frozenset(
    {
        "vad_score",
        "tentative_user_transcript",
        "internal_tentative_agent_response",
        "internal_turn_probability",
        "agent_chat_response_part",
        "agent_response_metadata",
        "asr_initiation_metadata",
        "agent_tool_request",
        "agent_tool_response_full_payload",
        "mcp_tool_call",
        "mcp_connection_status",
        "context_usage",
        "dtmf_request",
    }
)


class MalformedMessage(ValueError):
    """A server message the protocol cannot read (not JSON, no type, a known field of the wrong type)."""


def agent_format(name: object) -> AudioFormat | None:
    """The bridge's format for an agent format name (`ulaw_8000`, `pcm_16000`, ...), None if unknown."""
    if name == "ulaw_8000":
        return ULAW
    if isinstance(name, str) and name.startswith("pcm_"):
        rate = name.removeprefix("pcm_")
        if rate.isdigit() and int(rate) in PCM_RATES:
            return slin_at(int(rate))
    return None


@dataclass(frozen=True, slots=True)
class Metadata:
    """`conversation_initiation_metadata`: the conversation's id and the agent's audio formats."""

    conversation_id: str
    input_format_name: str
    output_format_name: str
    input: AudioFormat | None
    output: AudioFormat | None


@dataclass(frozen=True, slots=True)
class ProtocolNote:
    """Something the client should log (at `level`), not act on."""

    level: Literal["debug", "info", "warning"]
    message: str
    detail: str = ""


Incoming = ProviderEvent | Metadata | ProtocolNote


# -- client messages ---------------------------------------------------------------------------------


def initiation_message(
    resolved: ResolvedBrief, brief: AgentBrief, overrides: Sequence[str]
) -> dict[str, Any]:
    """`conversation_initiation_client_data`: the overrides the agent allows, and the call's variables."""
    agent: dict[str, Any] = {}
    if "prompt" in overrides and resolved.instructions:
        agent["prompt"] = {"prompt": resolved.instructions}
    if "first_message" in overrides:
        # "" makes the agent wait for the caller (a failover takeover, or no greeting configured).
        agent["first_message"] = resolved.opening_line
    if "language" in overrides and brief.language:
        agent["language"] = brief.language
    message: dict[str, Any] = {"type": "conversation_initiation_client_data"}
    if agent:
        message["conversation_config_override"] = {"agent": agent}
    if brief.variables:
        message["dynamic_variables"] = {str(k): str(v) for k, v in brief.variables.items()}
    return message


def audio_message(data: bytes) -> str:
    # The one client frame without a `type` (SDK and docs agree); built by hand: it is the hot path.
    return '{"user_audio_chunk":"' + base64.b64encode(data).decode("ascii") + '"}'


def pong_message(event_id: int) -> str:
    return json.dumps({"type": "pong", "event_id": event_id})


def tool_result_message(call_id: str, output: str) -> str:
    return json.dumps(
        {
            "type": "client_tool_result",
            "tool_call_id": call_id,
            "result": output,
            "is_error": is_error(output),
        }
    )


def text_message(text: str, *, respond: bool) -> str:
    """Text into the conversation: `user_message` is a user turn the agent answers, `contextual_update`
    only informs it (non-interrupting)."""
    return json.dumps({"type": "user_message" if respond else "contextual_update", "text": text})


def is_error(output: str) -> bool:
    """Whether a tool's JSON output reports a failure (the bridge's tools answer {"ok": false, ...})."""
    try:
        value = json.loads(output)
    except ValueError:
        return False
    return isinstance(value, dict) and (value.get("ok") is False or "error" in value)


# -- server messages ---------------------------------------------------------------------------------


def parse(text: str | bytes) -> dict[str, Any]:
    """The message as a dict with a string `type`; raises MalformedMessage otherwise."""
    try:
        message = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise MalformedMessage(f"not JSON: {type(exc).__name__}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise MalformedMessage("not an object with a string type")
    return message


def _body(message: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    body = message.get(key)
    if not isinstance(body, dict):
        raise MalformedMessage(f"{message['type']}: {key} is not an object")
    return body


def _int(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if isinstance(value, bool):
        raise MalformedMessage(f"{key} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)  # the SDK reads it with int(): accept a numeric string too
    raise MalformedMessage(f"{key} is not an integer")


def _str(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise MalformedMessage(f"{key} is not a string")
    return value


class ConvaiProtocol:
    """One conversation's protocol state; `receive` each server text message, send `take_outgoing()`."""

    def __init__(self, *, end_call_tool: str = "bridge_end_call") -> None:
        self._end_call_tool = end_call_tool
        self._outgoing: list[str] = []
        self.last_interrupt_id = 0
        self._responses = 0
        self._open: str | None = None  # the response whose audio is arriving
        self._last_audio_at = 0.0
        self._muted = False  # a local barge-in or no greeting wanted: drop audio until the next turn
        self._bot_lines = 0
        self._last_bot_item = ""
        self._bot_interrupted = False
        self._billed_until: float | None = None
        self.metadata: Metadata | None = None
        self.stale_audio_dropped = 0  # audio events at or below an interruption's id
        self.muted_audio_dropped = 0
        self.last_ping_ms: int | None = None

    # -- what the client sends --

    @property
    def has_outgoing(self) -> bool:
        return bool(self._outgoing)

    def take_outgoing(self) -> list[str]:
        out, self._outgoing = self._outgoing, []
        return out

    def started(self, now: float) -> None:
        """The conversation began (its metadata arrived): billing starts here."""
        self._billed_until = now

    def mute_until_next_turn(self) -> None:
        """Drop the agent's audio until the caller's next turn or an interruption (a locally detected
        barge-in: the protocol cannot cancel the agent's response, so its rest is not played)."""
        if self._open is not None:
            self._muted = True

    def mute_greeting(self) -> None:
        """The call wants no greeting (an answering machine): the agent's first message is not played."""
        self._muted = True

    @property
    def response_idle_at(self) -> float | None:
        """When the open response is over if no more audio comes (None: no response is open)."""
        return self._last_audio_at + RESPONSE_IDLE_SECONDS if self._open is not None else None

    def audio_idle(self, now: float) -> list[Incoming]:
        """No audio came for a while: the open response is over."""
        if self._open is None or now - self._last_audio_at < RESPONSE_IDLE_SECONDS:
            return []
        return self._close_response("completed")

    def usage(self, now: float) -> Usage | None:
        """The time since the last report, as `Usage(model_seconds=...)` (None when nothing is owed)."""
        if self._billed_until is None or now <= self._billed_until:
            return None
        seconds, self._billed_until = now - self._billed_until, now
        return Usage(model_seconds=seconds)

    # -- what the server sends --

    def receive(self, text: str | bytes, now: float) -> list[Incoming]:
        try:
            message = parse(text)
            out = self._dispatch(message, now)
        except MalformedMessage as exc:
            return [ProtocolNote("warning", "malformed_server_message", str(exc))]
        if self._billed_until is not None and now - self._billed_until >= USAGE_EVERY_SECONDS:
            usage = self.usage(now)
            if usage is not None:
                out.append(usage)
        return out

    def _dispatch(self, message: dict[str, Any], now: float) -> list[Incoming]:
        kind: str = message["type"]
        if kind == "audio":
            return self._audio(_body(message, "audio_event"), now)
        if kind == "ping":
            body = _body(message, "ping_event")
            event_id = _int(body, "event_id")
            ping_ms = body.get("ping_ms")
            if isinstance(ping_ms, int) and not isinstance(ping_ms, bool):
                self.last_ping_ms = ping_ms
            self._outgoing.append(pong_message(event_id))
            return []
        if kind == "interruption":
            return self._interruption(_int(_body(message, "interruption_event"), "event_id"))
        if kind == "user_transcript":
            text = _str(_body(message, "user_transcription_event"), "user_transcript").strip()
            return self._caller_turn(text, now)
        if kind == "agent_response":
            return self._bot_line(_str(_body(message, "agent_response_event"), "agent_response").strip())
        if kind == "agent_response_correction":
            return self._correction(message)
        if kind == "agent_response_complete":
            return self._close_response("completed")
        if kind == "client_tool_call":
            return [self._tool_call(_body(message, "client_tool_call"))]
        if kind == "conversation_initiation_metadata":
            return [self._metadata(_body(message, "conversation_initiation_metadata_event"))]
        if kind == "client_error":
            detail = json.dumps(message)[:500]
            return [ProviderError("provider_error", f"ElevenLabs client_error: {detail}", fatal=False)]
        if kind == "guardrail_triggered":
            return [ProtocolNote("warning", "guardrail_triggered", json.dumps(message)[:300])]
        if kind == "agent_tool_response":
            return self._agent_tool(message)
        if kind in IGNORED:
            return []
        return [ProtocolNote("debug", "unknown_server_event", kind[:64])]

    def _audio(self, body: Mapping[str, Any], now: float) -> list[Incoming]:
        event_id = _int(body, "event_id")
        if event_id <= self.last_interrupt_id:
            self.stale_audio_dropped += 1
            return []
        if self._muted:
            self.muted_audio_dropped += 1
            return []
        try:
            data = base64.b64decode(_str(body, "audio_base_64"), validate=True)
        except binascii.Error as exc:
            raise MalformedMessage("audio_base_64 is not base64") from exc
        if not data:
            return []
        if self._open is None:
            self._responses += 1
            self._open = f"r{self._responses}"
        self._last_audio_at = now
        return [AudioOut(data, self._open, now)]

    def _interruption(self, event_id: int) -> list[Incoming]:
        self.last_interrupt_id = max(self.last_interrupt_id, event_id)
        self._muted = False
        out: list[Incoming] = []
        if self._open is not None:
            out.append(ResponseDone(self._open, "cancelled"))
            self._open = None
            self._bot_interrupted = True
        out.append(CallerSpeechStarted())
        return out

    def _close_response(self, status: str) -> list[Incoming]:
        if self._open is None:
            return []
        rid, self._open = self._open, None
        return [ResponseAudioDone(rid), ResponseDone(rid, status)]

    def _caller_turn(self, text: str, now: float) -> list[Incoming]:
        out = self._close_response("completed")
        self._muted = False
        self._bot_interrupted = False
        out.append(CallerSpeechStopped())
        if text:
            out.append(TranscriptLine("caller", text))
        usage = self.usage(now)
        if usage is not None:
            out.append(usage)
        return out

    def _bot_line(self, text: str) -> list[Incoming]:
        if not text:
            return []
        self._bot_lines += 1
        self._last_bot_item = f"bot-{self._bot_lines}"
        self._bot_interrupted = False
        return [TranscriptLine("bot", text, item_id=self._last_bot_item)]

    def _correction(self, message: Mapping[str, Any]) -> list[Incoming]:
        # The SDK reads this shape; the AsyncAPI file names it correction_event{corrected_response}.
        if "agent_response_correction_event" in message:
            corrected = _str(_body(message, "agent_response_correction_event"), "corrected_agent_response")
        else:
            corrected = _str(_body(message, "correction_event"), "corrected_response")
        if not self._last_bot_item:
            return []
        return [TranscriptLine("bot", corrected.strip(), item_id=self._last_bot_item, truncated=True)]

    def _tool_call(self, body: Mapping[str, Any]) -> ToolCall:
        name = _str(body, "tool_name")
        parameters = body.get("parameters", {})
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise MalformedMessage("client_tool_call: parameters is not an object")
        # The agent's client tool for our end_call has its own name (ElevenLabs' system tool is end_call).
        if name == self._end_call_tool:
            name = "end_call"
        return ToolCall(_str(body, "tool_call_id"), name, json.dumps(parameters))

    def _agent_tool(self, message: Mapping[str, Any]) -> list[Incoming]:
        # The agent ran one of its own (server-side) tools; its payload is not in the SDK. After the
        # system end_call the server ends the conversation (normal close), which the client turns into a
        # hangup once the goodbye's audio has all arrived.
        body = message.get("agent_tool_response")
        if isinstance(body, dict) and body.get("tool_name") == "end_call":
            return [ProtocolNote("info", "agent_system_end_call")]
        return []

    def _metadata(self, body: Mapping[str, Any]) -> Metadata:
        input_name = _str(body, "user_input_audio_format")
        output_name = _str(body, "agent_output_audio_format")
        conversation_id = body.get("conversation_id")
        metadata = Metadata(
            conversation_id if isinstance(conversation_id, str) else "",
            input_name,
            output_name,
            agent_format(input_name),
            agent_format(output_name),
        )
        self.metadata = metadata
        return metadata
