"""What the fake Gemini says (Script, Turn, ToolCall) and what it saw (ConnectionRecord, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ToolCall:
    """The turn calls this function after its audio; it goes on once the matching toolResponse came."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    after_ms: int = 400  # audio spoken after the result


@dataclass(frozen=True)
class Turn:
    """One model answer to the caller. Turns are used in order per session; the last one repeats."""

    reply_ms: int = 1200
    transcript: str = "Sure, I can help you with that."
    tool_call: ToolCall | None = None
    caller_transcript: str = "Hello, I have a question."


@dataclass(frozen=True)
class Script:
    """Per-server behaviour; every knob defaults to a well-behaved service."""

    turns: tuple[Turn, ...] = (Turn(),)
    greeting_ms: int = 1500
    greeting_transcript: str = "Hello, thanks for calling. How can I help?"
    text_reply_ms: int = 600  # the answer to a text turn (DTMF) or a say
    speed: float = 4.0  # audio generated this many times faster than real time; <= 0: no pauses
    chunk_ms: int = 100
    # Abrupt TCP close this long after setupComplete, on these 1-based connection numbers.
    drop_after_s: float | None = None
    drop_on_connections: tuple[int, ...] = (1,)
    # goAway this long after setupComplete (on these connections), the close `go_away_close_s` later.
    go_away_after_s: float | None = None
    go_away_on_connections: tuple[int, ...] = (1,)
    go_away_close_s: float = 3.0
    # Connections with these numbers are closed 1011 right after the upgrade (the service is down).
    refuse_connections: tuple[int, ...] = ()
    vad_threshold_rms: float = 500.0
    vad_onset_ms: int = 100
    prompt_tokens: tuple[int, int] = (300, 40)  # (TEXT, AUDIO) per turn
    response_tokens: int = 50  # AUDIO per turn

    def turn(self, index: int) -> Turn:
        return self.turns[min(index, len(self.turns) - 1)]


@dataclass
class ReceivedMessage:
    t: float
    kind: str  # setup, client_content, realtime_input, tool_response
    body: dict[str, Any]  # as sent, with audio data replaced by its byte count


@dataclass
class ModelTurnRecord:
    kind: Literal["greeting", "turn", "text", "say"]
    index: int  # per session
    audio_ms_sent: float = 0.0
    status: str = "in_progress"  # completed, interrupted, failed
    tool_call_id: str | None = None
    text: str = ""  # the client content that asked for it


@dataclass
class ConnectionRecord:
    index: int  # 1-based, in order of upgrades
    path: str
    headers: dict[str, str]  # the key removed
    setup: dict[str, Any] = field(default_factory=dict)
    realtime_input_config: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None  # the handle this connection resumed
    messages: list[ReceivedMessage] = field(default_factory=list)
    input_audio_ms: float = 0.0
    input_rates: set[int] = field(default_factory=set)
    turns: list[ModelTurnRecord] = field(default_factory=list)
    client_texts: list[str] = field(default_factory=list)
    tool_responses: list[dict[str, Any]] = field(default_factory=list)
    interruptions: list[float] = field(default_factory=list)  # monotonic times `interrupted` was sent
    handles_sent: list[str] = field(default_factory=list)
    opened_t: float = 0.0
    closed_t: float | None = None
    closed_by: str | None = None  # client, drop, go_away, refused, violation, auth
    close_code: int | None = None
    close_reason: str = ""
