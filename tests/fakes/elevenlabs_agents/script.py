"""What the fake agent does (Script, Turn, ToolCall) and what it saw (ConnectionRecord, ResponseRecord)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.fakes.openai_realtime.audio import PCMU, AudioFormat

AGENT_FORMATS = ("ulaw_8000", "pcm_8000", "pcm_16000", "pcm_22050", "pcm_24000", "pcm_44100", "pcm_48000")


def wire_format(name: str) -> AudioFormat:
    """The fake's codec description of an agent format name."""
    if name == "ulaw_8000":
        return PCMU
    if name in AGENT_FORMATS:
        return AudioFormat("pcm", int(name.removeprefix("pcm_")))
    raise ValueError(f"not an ElevenLabs agent format: {name!r}")


@dataclass(frozen=True)
class ToolCall:
    """A `client_tool_call` the agent makes after speaking its turn's reply."""

    tool_name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """The agent's answer to one caller turn (or to a tool result, after a turn with a tool call)."""

    reply_ms: int = 600
    text: str = "Sure, I can help with that."
    caller_text: str = "I would like some help."  # the user_transcript the fake reports for the turn
    tool_call: ToolCall | None = None


@dataclass(frozen=True)
class Script:
    input_format: str = "ulaw_8000"  # the agent's asr.user_input_audio_format
    output_format: str = "ulaw_8000"  # the agent's tts.agent_output_audio_format
    default_first_message: str = "Hello, this is the agent."  # when no override sets one
    greeting_ms: int = 800
    turns: tuple[Turn, ...] = (Turn(),)
    speed: float = 4.0  # times faster than real time; 0 = no pauses
    chunk_ms: int = 100  # agent audio per `audio` event
    ping_interval_s: float = 0.5
    pong_timeout_s: float = 5.0  # generous: a loaded 2-core machine
    stale_audio_after_interruption: bool = True  # send one audio with an id <= the interruption's
    drop_after_s: float | None = None  # abort the TCP connection this long after initiation
    end_after_s: float | None = None  # close normally (1000) this long after initiation
    vad_threshold_rms: float = 500.0
    vad_onset_ms: int = 100
    silence_ms: int = 400
    seed: int = 1234

    def turn(self, index: int) -> Turn | None:
        return self.turns[index] if index < len(self.turns) else None


@dataclass
class ResponseRecord:
    kind: str  # "greeting", "turn", "after_tool", "text" (answer to user_message)
    text: str
    audio_ms_planned: int
    audio_ms_sent: float = 0.0
    first_event_id: int | None = None
    last_event_id: int | None = None
    interrupted: bool = False
    first_audio_t: float | None = None  # monotonic
    heard_ms: float | None = None  # at the interruption: how much had played out in real time


@dataclass
class ConnectionRecord:
    index: int
    agent_id: str
    signed: bool
    query: dict[str, str]
    opened_t: float
    initiation: dict[str, Any] | None = None
    conversation_id: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)  # typed client messages, in order
    audio_chunks: int = 0
    input_audio_ms: float = 0.0
    pings_sent: list[int] = field(default_factory=list)
    pongs: list[int] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    interruptions: list[int] = field(default_factory=list)  # event ids sent in `interruption`
    stale_audio_ids: list[int] = field(default_factory=list)  # audio sent at or below an interruption
    speech_started_at: list[float] = field(default_factory=list)  # monotonic, the fake's VAD
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    user_messages: list[str] = field(default_factory=list)
    contextual_updates: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    closed_by: str = ""  # "client", "drop", "end", "violation", "server"
    closed_t: float | None = None

    def types(self) -> list[str]:
        return [str(m.get("type")) for m in self.messages]
