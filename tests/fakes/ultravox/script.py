"""What the fake Ultravox does on a call, and what it recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A client tool the agent invokes (by its model name) with these parameters."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Turn:
    """The agent's answer to one caller turn: speech, then (or instead) a tool invocation.

    With a tool call and `speak_first`, the agent says `transcript` and invokes the tool while its audio
    is still playing (a goodbye before end_call); otherwise it invokes the tool, waits for the result,
    then speaks (unless the result's agentReaction is `listens`)."""

    reply_ms: int = 800
    transcript: str = "Sure, I can help with that."
    tool_call: ToolCall | None = None
    speak_first: bool = False


@dataclass(frozen=True, slots=True)
class Script:
    greeting_ms: int = 1000  # how long the greeting (firstSpeakerSettings.agent.text) lasts
    turns: tuple[Turn, ...] = (Turn(),)  # one per caller turn; the last repeats
    speed: float = 4.0  # agent audio is sent this many times faster than real time; 0: at once
    seed: int = 1234
    drop_after_s: float | None = None  # the first joined socket is dropped (no close frame) this late
    end_after_s: float | None = None  # Ultravox ends the call itself (a close frame, 1000) this late
    refuse_calls: int = 0  # this many create-call requests after the first are answered 503
    say_ms_per_char: float = 40.0  # how long a forced_agent_message lasts
    silence_ms: int = 300  # caller silence that ends their turn (the fake's own VAD)


@dataclass(slots=True)
class CallRecord:
    """One create-call request the fake accepted."""

    call_id: str
    body: dict[str, Any]
    prior_call_id: str | None
    joined: bool = False


@dataclass(slots=True)
class BargeIn:
    heard_ms: float  # agent audio the caller had heard (sent time + real-time playout) when cut
    utterance: str


@dataclass(slots=True)
class ConnectionRecord:
    call_id: str
    input_rate: int
    output_rate: int
    opened_t: float
    closed_t: float | None = None
    closed_by: str = ""  # client, drop, hang_up, violation, ended (Ultravox ended the call)
    messages: list[dict[str, Any]] = field(default_factory=list)  # client data messages, in order
    input_audio_bytes: int = 0
    utterances: list[str] = field(default_factory=list)  # kinds spoken: greeting, turn, say
    barge_ins: list[BargeIn] = field(default_factory=list)
    invocations: list[str] = field(default_factory=list)  # invocation ids sent
    caller_turns: int = 0

    @property
    def input_audio_ms(self) -> float:
        return self.input_audio_bytes / 2 / self.input_rate * 1000

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]
