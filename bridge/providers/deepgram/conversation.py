"""One call's conversation with a Deepgram agent: server messages in, the bridge's events out.

Pure: no I/O, no clocks (times come in as arguments). Deepgram has no response ids, so each agent
reply (from its ConversationText, AgentStartedSpeaking or first audio, up to AgentAudioDone) is
numbered here as a "response". It has no truncation either: a barge-in ends the response (its bot
lines re-sent marked truncated, their text whole, since the service never says how much was heard).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

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
    Usage,
)
from bridge.providers.deepgram.events import (
    AgentAudioDone,
    AgentStartedSpeaking,
    AgentThinking,
    ConversationText,
    FunctionCallRequest,
    InjectionRefused,
    ServerError,
    ServerMessage,
    ServerWarning,
    UserStartedSpeaking,
)

Role = Literal["user", "assistant"]


def _words(text: str) -> str:
    """Text compared for sameness whatever its case, spacing and punctuation."""
    return "".join(ch for ch in text.casefold() if ch.isalnum())


@dataclass
class _Response:
    id: str
    lines: list[tuple[str, str]] = field(default_factory=list)  # (item_id, text) of its bot lines
    say_id: int | None = None
    audio: bool = False  # its audio has begun
    cut: bool = False  # the caller was cut off from it (barge-in): its audio is no longer heard


@dataclass(frozen=True, slots=True)
class Note:
    """Something worth a log line (a warning, a refused injection), not an event for the call."""

    message: str
    detail: str


class AgentConversation:
    def __init__(self) -> None:
        self.history: list[tuple[Role, str]] = []  # every finished line, replayed on a new session
        self.prompt_additions: list[str] = []  # UpdatePrompt texts, replayed on a new session
        self._response: _Response | None = None
        self._last: _Response | None = None  # the last response that ended whole
        self._responses = 0
        self._lines = 0
        self._tools: dict[str, str] = {}  # outstanding client-side calls on this socket: id -> name
        self._says: deque[tuple[int, str]] = deque()  # injected texts not yet spoken: (say id, text)
        self._say_ids = 0
        self._caller_speaking = False
        self._billed_since: float | None = None

    # -- server messages ----------------------------------------------------------------------------

    def receive(self, message: ServerMessage) -> list[ProviderEvent | Note]:
        if isinstance(message, UserStartedSpeaking):
            self._caller_speaking = True
            return [CallerSpeechStarted(), *self._end_response(cut=True)]
        if isinstance(message, ConversationText):
            return self._text(message)
        if isinstance(message, AgentThinking):
            return self._caller_done()
        if isinstance(message, AgentStartedSpeaking):
            if self._response is not None and not self._response.audio:
                return []  # the response its text opened: this is its audio starting
            out: list[ProviderEvent | Note] = list(self._end_response(cut=False))
            self._open_response()
            return out
        if isinstance(message, AgentAudioDone):
            return list(self._end_response(cut=False))
        if isinstance(message, FunctionCallRequest):
            return self._function_calls(message)
        if isinstance(message, InjectionRefused):
            out = [Note("injection_refused", message.message)]
            if self._says:
                say_id, _ = self._says.popleft()
                out.append(SayFinished(say_id, status="failed"))
            return out
        if isinstance(message, ServerWarning):
            return [Note(f"warning {message.code}", message.description)]
        if isinstance(message, ServerError):
            code = f"deepgram_{message.code.lower()}" if message.code else "deepgram_error"
            return [ProviderError(code, message.description or message.code, fatal=True)]
        return []

    def audio(self, data: bytes, received_at: float | None) -> AudioOut:
        response = self._response or self._open_response()
        response.audio = True
        return AudioOut(data, response.id, received_at)

    def _open_response(self) -> _Response:
        self._responses += 1
        response = self._response = _Response(f"dg-response-{self._responses}")
        return response

    def _end_response(self, *, cut: bool) -> list[ProviderEvent]:
        response, self._response = self._response, None
        if response is None:
            return []
        cut = cut or response.cut
        # Its audio may still be queued for the caller: a barge-in then cuts it after all.
        self._last = None if cut else response
        out: list[ProviderEvent] = []
        if cut:
            # Re-sent under the same item id: the record's line is marked cut (the text stays whole).
            out += [
                TranscriptLine("bot", text, item_id=item, truncated=True) for item, text in response.lines
            ]
        else:
            out.append(ResponseAudioDone(response.id))
        out.append(ResponseDone(response.id, status="cancelled" if cut else "completed"))
        if response.say_id is not None:
            out.append(SayFinished(response.say_id, status="cancelled" if cut else "completed"))
        return out

    def _caller_done(self) -> list[ProviderEvent | Note]:
        if not self._caller_speaking:
            return []
        self._caller_speaking = False
        return [CallerSpeechStopped()]

    def _text(self, message: ConversationText) -> list[ProviderEvent | Note]:
        self._lines += 1
        item = f"dg-line-{self._lines}"
        self.history.append((message.role, message.content))
        if message.role == "user":
            return [*self._caller_done(), TranscriptLine("caller", message.content, item_id=item)]
        # The agent's text comes before its audio: it opens the response (so a function call made
        # with it, e.g. end_call after "Goodbye", waits for that audio to finish).
        response = self._response or self._open_response()
        response.lines.append((item, message.content))
        self._claim_say(response, message.content)
        return [TranscriptLine("bot", message.content, item_id=item)]

    def _claim_say(self, response: _Response, text: str) -> None:
        """An injected message comes back as the agent's ConversationText: its response is the say's."""
        if response.say_id is None and self._says and _words(self._says[0][1]) == _words(text):
            response.say_id = self._says.popleft()[0]

    def _function_calls(self, message: FunctionCallRequest) -> list[ProviderEvent | Note]:
        out: list[ProviderEvent | Note] = []
        response_id = self._response.id if self._response is not None else ""
        for function in message.functions:
            if not function.client_side:
                out.append(Note("server_side_function", function.name))  # Deepgram runs it itself
                continue
            self._tools[function.id] = function.name
            out.append(ToolCall(function.id, function.name, function.arguments, response_id=response_id))
        return out

    # -- what the bridge does -----------------------------------------------------------------------

    def interrupt(self) -> list[ProviderEvent]:
        """The caller was cut off: from the current response (its remaining audio is not heard), or
        from the last one's audio still queued for them (its lines are marked cut now)."""
        if self._response is not None:
            self._response.cut = True
            return []
        last, self._last = self._last, None
        if last is None:
            return []
        return [TranscriptLine("bot", text, item_id=item, truncated=True) for item, text in last.lines]

    def cancel_for_say(self) -> list[ProviderEvent]:
        """An interrupting say replaces the current speech: what follows is the say's response."""
        return self._end_response(cut=True)

    def new_say(self, text: str) -> int:
        self._say_ids += 1
        self._says.append((self._say_ids, text))
        return self._say_ids

    def tool_name(self, call_id: str) -> str | None:
        """The name of an outstanding call on this socket (forgotten once answered)."""
        return self._tools.pop(call_id, None)

    # -- connection and time ------------------------------------------------------------------------

    def connected(self, now: float) -> None:
        self._billed_since = now

    def usage(self, now: float) -> Usage | None:
        """Session time since the last Usage (Deepgram bills the time a session is open)."""
        since = self._billed_since
        if since is None or now <= since:
            return None
        self._billed_since = now
        return Usage(model_seconds=now - since)

    def connection_lost(self, now: float) -> list[ProviderEvent]:
        """The socket is gone: bill it up to now, end what it was doing (a new session starts afresh)."""
        out: list[ProviderEvent] = list(self._end_response(cut=True))
        usage = self.usage(now)
        if usage is not None:
            out.append(usage)
        self._billed_since = None
        self._tools.clear()  # a new session knows nothing of these calls
        out += [SayFinished(say_id, status="failed") for say_id, _ in self._says]
        self._says.clear()
        self._last = None
        self._caller_speaking = False
        return out
