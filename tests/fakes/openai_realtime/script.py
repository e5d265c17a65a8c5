"""What the fake says (Script, Turn, ...) and what it saw (ConnectionRecord, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# --- Scripting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """A turn that answers with a function call instead of audio."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptedError:
    """An `error` event sent instead of a response (the session stays open)."""

    code: str
    message: str = "scripted error"
    type: str = "server_error"


@dataclass(frozen=True)
class FatalError:
    """Sent at the first response attempt (client response.create or VAD), then the socket closes."""

    code: str = "insufficient_quota"
    message: str = "You exceeded your current quota, please check your plan and billing details."
    type: str = "insufficient_quota"
    close_code: int = 1000


@dataclass(frozen=True)
class Usage:
    """Token counts for response.done; the totals are derived."""

    input_text_tokens: int = 120
    input_audio_tokens: int = 40
    cached_tokens: int = 0
    output_text_tokens: int = 20
    output_audio_tokens: int = 60

    def to_wire(self, *, reduced: bool = False) -> dict[str, Any]:
        inp = self.input_text_tokens + self.input_audio_tokens
        out = self.output_text_tokens + self.output_audio_tokens
        if reduced:  # xAI reports only the three totals
            return {"total_tokens": inp + out, "input_tokens": inp, "output_tokens": out}
        return {
            "total_tokens": inp + out,
            "input_tokens": inp,
            "output_tokens": out,
            "input_token_details": {
                "text_tokens": self.input_text_tokens,
                "audio_tokens": self.input_audio_tokens,
                "image_tokens": 0,
                "cached_tokens": self.cached_tokens,
                "cached_tokens_details": {
                    "text_tokens": self.cached_tokens,
                    "audio_tokens": 0,
                    "image_tokens": 0,
                },
            },
            "output_token_details": {
                "text_tokens": self.output_text_tokens,
                "audio_tokens": self.output_audio_tokens,
            },
        }


@dataclass(frozen=True)
class Turn:
    """One model answer. Turns are used in order per connection; the last one repeats."""

    reply_ms: int = 1200
    transcript: str = "Sure, I can help you with that."
    tool_call: ToolCall | None = None
    error: ScriptedError | None = None
    caller_transcript: str = "Hello, I have a question."
    usage: Usage | None = None  # overrides Script.usage for this turn


@dataclass(frozen=True)
class Script:
    """Per-connection behaviour. Every knob has a default that gives a well-behaved server."""

    turns: tuple[Turn, ...] = (Turn(),)
    greeting_reply_ms: int = 1500
    greeting_transcript: str = "Hello, thanks for calling. How can I help?"
    speed: float = 4.0  # audio is produced this many times faster than real time; <=0 means no pauses
    delta_min_ms: int = 40
    delta_max_ms: int = 200
    seed: int = 1234
    # Abrupt TCP close (no close frame) this long after the upgrade, on these 1-based connection
    # numbers (None: every connection).
    drop_after_s: float | None = None
    drop_on_connections: tuple[int, ...] | None = (1,)
    max_session_s: float | None = None
    max_session_close_code: int = 1000
    fatal_error: FatalError | None = None
    usage: Usage | None = None  # None: plausible numbers derived from the conversation
    transcription_usage: dict[str, Any] | None = None  # None: a "tokens" usage object
    # Server VAD knobs (the session's silence_duration_ms is honoured on top of these).
    vad_threshold_rms: float = 500.0
    vad_onset_ms: int = 100
    ping_interval_s: float = 5.0  # xAI keepalive events

    def turn(self, index: int) -> Turn:
        return self.turns[min(index, len(self.turns) - 1)]


# --- Records ---------------------------------------------------------------------------------------


@dataclass
class ReceivedEvent:
    t: float  # time.monotonic() at receipt
    type: str
    data: dict[str, Any]  # the event, with audio payloads replaced by byte/ms counts


@dataclass
class ResponseRecord:
    id: str
    kind: Literal["greeting", "turn", "tool_call", "error"]
    turn_index: int | None
    item_ids: list[str] = field(default_factory=list)
    audio_ms_sent: float = 0.0
    status: str = "in_progress"
    reason: str | None = None
    transcript: str = ""
    created_t: float = 0.0
    done_t: float | None = None
    call_id: str | None = None
    first_delta_t: float | None = None  # monotonic: when its first audio delta went out


@dataclass
class TruncateRecord:
    item_id: str
    audio_end_ms: int
    audio_ms_sent: float | None  # None: the item was unknown
    t: float
    accepted: bool


@dataclass
class ConnectionRecord:
    index: int  # 1-based, in order of accepted upgrades
    variant: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # secrets removed
    model: str
    session: dict[str, Any] = field(default_factory=dict)  # the effective merged session
    events: list[ReceivedEvent] = field(default_factory=list)
    input_audio_bytes: int = 0
    input_audio_ms: float = 0.0
    responses: list[ResponseRecord] = field(default_factory=list)
    truncates: list[TruncateRecord] = field(default_factory=list)
    function_outputs: list[dict[str, Any]] = field(default_factory=list)
    items_created: list[dict[str, Any]] = field(default_factory=list)
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    speech_started_at: list[float] = field(default_factory=list)
    speech_stopped_at: list[float] = field(default_factory=list)
    opened_t: float = 0.0
    closed_t: float | None = None
    closed_by: str | None = None  # "client", "drop", "max_session", "fatal_error", "beta", "server"
    close_code: int | None = None

    def types(self) -> list[str]:
        return [e.type for e in self.events]
