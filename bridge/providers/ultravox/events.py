"""Ultravox's server-WebSocket protocol as a sans-I/O state machine.

Feed it the socket's text frames (`receive`) and binary frames (`audio`), get typed provider events back;
ask it for the data messages to send (`take_outgoing`). It keeps what the protocol needs between
messages: the agent utterance being heard (Ultravox has no response ids: one is made up per utterance,
opened by its first audio and closed when the agent stops speaking or the buffer is cleared), the
transcripts being assembled, the texts the bridge asked the agent to say, and the time billed so far
(Ultravox bills call time, so `Usage.model_seconds` is emitted as the call goes on).

Pure: no asyncio, sockets, clocks or logging; times come in as arguments. `receive` never raises:
anything malformed comes back as a `ProtocolNote` for the client to log.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderEvent,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    TranscriptLine,
    Usage,
)

# Call time is reported at least this often (besides each turn's end and tool call), so the time
# since the last report, which is lost when the call ends, stays small.
USAGE_EVERY_SECONDS = 5.0
IGNORED_TYPES = frozenset({"pong", "debug", "call_event", "tool_used"})


@dataclass(frozen=True, slots=True)
class ProtocolNote:
    """Something to log: a malformed or unknown message (never a reason to end the call)."""

    level: Literal["debug", "info", "warning"]
    message: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CallStarted:
    """The server's `call_started`: the call's id (a resumed call names it as its prior call)."""

    call_id: str


Item = ProviderEvent | ProtocolNote | CallStarted


@dataclass(slots=True)
class _Line:
    role: Literal["caller", "bot"]
    text: str = ""
    truncated: bool = False


@dataclass(slots=True)
class _Utterance:
    response_id: str
    say_id: int | None = None
    cancelled: bool = False


@dataclass(slots=True)
class UltravoxProtocol:
    """One call's protocol state; survives a reconnect (the resumed call continues the same ids)."""

    _outgoing: list[str] = field(default_factory=list)
    _utterance: _Utterance | None = None
    _seq: int = 0
    _state: str = ""
    _lines: dict[tuple[str, int], _Line] = field(default_factory=dict)
    _says: deque[int] = field(default_factory=deque)  # forced messages not yet being spoken
    _say_seq: int = 0
    _billed_until: float | None = None  # loop time up to which call time was reported
    call_id: str = ""

    # ------------------------------------------------------------------ from the server

    def joined(self, now: float) -> None:
        """The socket is up: call time counts from now."""
        self._billed_until = now

    def audio(self, data: bytes, now: float) -> AudioOut:
        """A binary frame: agent audio at the output rate, part of the utterance being spoken."""
        utterance = self._utterance
        if utterance is None:
            utterance = self._open()
        return AudioOut(data, utterance.response_id, received_at=now)

    def receive(self, text: str | bytes, now: float) -> list[Item]:
        try:
            message = json.loads(text)
        except (ValueError, TypeError):
            return [ProtocolNote("warning", "undecodable_message", repr(text[:80]))]
        if not isinstance(message, dict):
            return [ProtocolNote("warning", "message_not_an_object", repr(text[:80]))]
        kind = message.get("type")
        items: list[Item] = []
        if kind == "transcript":
            self._transcript(message, items)
        elif kind == "state":
            self._state_changed(message.get("state"), now, items)
        elif kind == "playback_clear_buffer":
            items.append(CallerSpeechStarted())
            self._close(items, cancelled=True)
        elif kind == "client_tool_invocation":
            self._tool_invocation(message, now, items)
        elif kind == "call_started":
            call_id = message.get("callId")
            if isinstance(call_id, str) and call_id:
                self.call_id = call_id
                items.append(CallStarted(call_id))
        elif kind in IGNORED_TYPES:
            pass
        else:
            items.append(ProtocolNote("debug", "unhandled_message", str(kind)[:80]))
        usage = self.usage_due(now)
        if usage is not None:
            items.append(usage)
        return items

    def connection_lost(self, now: float) -> list[ProviderEvent]:
        """The socket dropped: the utterance in flight is over, and the time so far is reported."""
        items: list[Item] = []
        self._close(items, cancelled=True, status="incomplete")
        self._lines.clear()  # a resumed call starts its transcripts afresh
        self._state = ""
        usage = self.bill(now)
        self._billed_until = None
        events = [i for i in items if not isinstance(i, ProtocolNote | CallStarted)]
        return [*events, usage] if usage is not None else events

    def bill(self, now: float) -> Usage | None:
        """The call time since it was last reported (None: nothing to report)."""
        since = self._billed_until
        if since is None or now <= since:
            return None
        self._billed_until = now
        return Usage(model_seconds=now - since)

    def usage_due(self, now: float) -> Usage | None:
        """The call time to report now, if the last report is USAGE_EVERY_SECONDS old."""
        since = self._billed_until
        if since is None or now - since < USAGE_EVERY_SECONDS:
            return None
        return self.bill(now)

    # ------------------------------------------------------------------ to the server

    def interrupt(self) -> None:
        """The caller heard only part of the utterance: the rest of it is not theirs to hear.

        Ultravox has no truncate: its own VAD already stopped the agent on a server-side barge-in, and
        a locally detected one cannot be passed on. The utterance's later audio keeps its response id,
        which the runner drops; its transcript line is marked truncated."""
        utterance = self._utterance
        if utterance is not None:
            utterance.cancelled = True
        self._truncate_lines()

    def tool_result(self, call_id: str, output: str, *, respond: bool) -> None:
        message: dict[str, Any] = {"type": "client_tool_result", "invocationId": call_id, "result": output}
        if not respond:
            message["agentReaction"] = "listens"
        self._send(message)

    def user_text(self, text: str, *, respond: bool) -> None:
        """Text from the caller's side (their keys): `later` is heard at the next turn, not answered now."""
        self._send({"type": "user_text_message", "text": text, "urgency": "soon" if respond else "later"})

    def say(self, text: str, *, interrupt: bool) -> int:
        """The agent says `text` verbatim: now if `interrupt`, else when its current utterance is over."""
        self._say_seq += 1
        self._says.append(self._say_seq)
        urgency = "immediate" if interrupt else "soon"
        self._send({"type": "forced_agent_message", "content": text, "urgency": urgency})
        return self._say_seq

    def hang_up(self) -> None:
        self._send({"type": "hang_up"})

    @property
    def has_outgoing(self) -> bool:
        return bool(self._outgoing)

    def take_outgoing(self) -> list[str]:
        out, self._outgoing = self._outgoing, []
        return out

    @property
    def active_response(self) -> str | None:
        return self._utterance.response_id if self._utterance is not None else None

    # ------------------------------------------------------------------ internals

    def _send(self, message: dict[str, Any]) -> None:
        self._outgoing.append(json.dumps(message, separators=(",", ":")))

    def _open(self) -> _Utterance:
        self._seq += 1
        say_id = self._says.popleft() if self._says else None
        self._utterance = _Utterance(f"uv-{self._seq}", say_id)
        return self._utterance

    def _close(self, items: list[Item], *, cancelled: bool = False, status: str = "cancelled") -> None:
        utterance, self._utterance = self._utterance, None
        if utterance is None:
            return
        final = status if cancelled or utterance.cancelled else "completed"
        items.append(ResponseAudioDone(utterance.response_id))
        items.append(ResponseDone(utterance.response_id, final))
        if utterance.say_id is not None:
            items.append(SayFinished(utterance.say_id, final))
        if cancelled:
            self._truncate_lines()

    def _truncate_lines(self) -> None:
        """The agent's line being assembled was cut: it will be marked truncated when final."""
        for (role, _), line in self._lines.items():
            if role == "agent":
                line.truncated = True

    def _state_changed(self, state: object, now: float, items: list[Item]) -> None:
        if not isinstance(state, str):
            items.append(ProtocolNote("warning", "state_without_state", repr(state)[:80]))
            return
        previous, self._state = self._state, state
        if state != "speaking" and self._utterance is not None:
            self._close(items)
            usage = self.bill(now)  # a turn's end
            if usage is not None:
                items.append(usage)
        if state == "thinking" and previous == "listening":
            items.append(CallerSpeechStopped())

    def _transcript(self, message: dict[str, Any], items: list[Item]) -> None:
        role, ordinal = message.get("role"), message.get("ordinal", -1)
        text, delta, final = message.get("text"), message.get("delta"), message.get("final")
        if role not in ("user", "agent") or not isinstance(ordinal, int) or isinstance(ordinal, bool):
            items.append(ProtocolNote("warning", "bad_transcript", f"{role!r} {ordinal!r}"[:80]))
            return
        key = (role, ordinal)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = _Line("caller" if role == "user" else "bot")
        if isinstance(text, str):
            line.text = text
        elif isinstance(delta, str):
            line.text += delta
        if final is True:
            del self._lines[key]
            spoken = line.text.strip()
            if spoken:
                items.append(TranscriptLine(line.role, spoken, f"uv-{role}-{ordinal}", line.truncated))

    def _tool_invocation(self, message: dict[str, Any], now: float, items: list[Item]) -> None:
        name, call_id = message.get("toolName"), message.get("invocationId")
        parameters = message.get("parameters", {})
        if not (isinstance(name, str) and name and isinstance(call_id, str) and call_id):
            items.append(ProtocolNote("warning", "bad_tool_invocation", repr(message)[:120]))
            return
        if not isinstance(parameters, dict):
            parameters = {}
        usage = self.bill(now)  # before a call that may end the call
        if usage is not None:
            items.append(usage)
        response_id = self._utterance.response_id if self._utterance is not None else ""
        items.append(ToolCall(call_id, name, json.dumps(parameters), response_id=response_id))
