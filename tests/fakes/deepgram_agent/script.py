"""What the fake agent says (Script, Turn, ToolCall) and what it saw (ConnectionRecord, Reply)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class ToolCall:
    """A client-side function the agent calls in a turn (mid-audio when the turn also speaks)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Turn:
    """One agent answer. Turns are used in order per connection; the last one repeats."""

    reply_ms: int = 1200
    transcript: str = "Sure, I can help you with that."
    caller_transcript: str = "Hello, I have a question."
    tool_call: ToolCall | None = None


@dataclass(frozen=True)
class Script:
    """Per-connection behaviour; every default gives a well-behaved agent."""

    turns: tuple[Turn, ...] = (Turn(),)
    greeting_ms: int = 1500  # audio for Settings' agent.greeting, when it has one
    speed: float = 4.0  # audio is sent this many times faster than real time; <=0: no pauses
    chunk_ms: int = 100  # agent audio per binary frame
    say_ms_per_char: int = 30  # audio length of an InjectAgentMessage
    seed: int = 1234
    # Energy VAD over the caller's audio (UserStartedSpeaking at onset; the turn ends after silence).
    vad_threshold_rms: float = 500.0
    vad_onset_ms: int = 100
    silence_ms: int = 400
    # Abrupt TCP close (no close frame) this long after Welcome, on these 1-based connection numbers.
    drop_after_s: float | None = None
    drop_on_connections: tuple[int, ...] = (1,)
    # Error CLIENT_MESSAGE_TIMEOUT and close after this long without any client frame (None: never).
    client_timeout_s: float | None = None

    def turn(self, index: int) -> Turn:
        return self.turns[min(index, len(self.turns) - 1)]


@dataclass
class Reply:
    kind: Literal["greeting", "turn", "say"]
    text: str
    audio_ms: int  # the length scripted
    audio_ms_sent: float = 0.0
    cut: bool = False  # stopped by the caller's speech or an interrupting injection
    started_t: float | None = None
    done_t: float | None = None


@dataclass
class ReceivedMessage:
    t: float  # time.monotonic() at receipt
    type: str
    data: dict[str, Any]


@dataclass
class ConnectionRecord:
    index: int  # 1-based, in order of accepted upgrades
    path: str
    headers: dict[str, str]  # secrets removed
    opened_t: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)
    messages: list[ReceivedMessage] = field(default_factory=list)
    input_audio_bytes: int = 0
    input_audio_ms: float = 0.0
    audio_before_settings: int = 0
    keepalives: int = 0
    replies: list[Reply] = field(default_factory=list)
    user_started_at: list[float] = field(default_factory=list)
    barge_ins: int = 0
    function_requests: list[dict[str, Any]] = field(default_factory=list)
    function_responses: list[dict[str, Any]] = field(default_factory=list)
    injected_user: list[str] = field(default_factory=list)
    injected_agent: list[dict[str, Any]] = field(default_factory=list)
    prompt_updates: list[str] = field(default_factory=list)
    errors_sent: list[dict[str, str]] = field(default_factory=list)
    closed_t: float | None = None
    closed_by: str | None = None  # "client", "drop", "error", "server"

    def types(self) -> list[str]:
        return [m.type for m in self.messages]
