"""Gemini Live (BidiGenerateContent) as a sans-I/O state machine.

Feed it the server's messages (`receive`), get typed provider events back; ask it for the client
messages to send (`take_outgoing`). Gemini has no response ids: each model turn (from its first
content to `turnComplete`) gets one here (`turn-N`), so the runner can tell responses apart. It keeps
the session's latest resumption handle, the conversation so far (for a fresh session when a session
cannot be resumed), and the text inputs owed once the model's current turn is over (client content
sent mid-turn would cut the model off).
No asyncio, sockets, clocks or logging: the client logs the notes returned.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from bridge.audio.formats import AudioFormat
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    TranscriptLine,
)
from bridge.providers.brief import (
    AgentBrief,
    ResolvedBrief,
    history_instructions,
    opening_instructions,
    resolve,
    say_instructions,
)
from bridge.providers.gemini.setup import OUTPUT, mime_type, setup_message, voice_name
from bridge.providers.gemini.usage import TurnUsage, usage_from_metadata
from bridge.providers.gemini.wire import (
    GoAway,
    Incoming,
    Owed,
    ProtocolNote,
    SetupComplete,
    TurnState,
    b64decode,
    dumps,
    field_of,
)


@dataclass(slots=True)
class GeminiProtocol:
    brief: AgentBrief
    model: str
    default_voice: str = "Kore"
    debug_notes: bool = True
    resolved: ResolvedBrief = field(init=False)
    voice: str = field(init=False)
    input_format: AudioFormat | None = None
    handle: str | None = None  # the latest resumable session handle
    _audio_head: bytes = b""
    _outbox: list[str] = field(default_factory=list)
    _turn: TurnState | None = None
    _last_turn: TurnState | None = None  # finished, still maybe playing: a late barge-in cuts its line
    _turns: int = 0
    _caller: list[str] = field(default_factory=list)
    _callers: int = 0
    _says: int = 0
    _say_next: list[int] = field(default_factory=list)  # says sent, waiting for their turn to start
    _owed: list[Owed] = field(default_factory=list)
    _self_interrupt: bool = False  # our own client content cut the model: not the caller's barge-in
    _mute_rest: bool = False  # respond=False tool result: the model's continuation is not played
    _cancelled_tools: set[str] = field(default_factory=set)
    _tool_names: dict[str, str] = field(default_factory=dict)  # call id -> function name (for the result)
    _tool_calls: int = 0
    _history: list[tuple[str, str]] = field(default_factory=list)
    _history_index: dict[str, int] = field(default_factory=dict)
    _usage: TurnUsage = field(default_factory=TurnUsage)
    _pending: list[Incoming] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resolved = resolve(self.brief)
        self.voice = voice_name(self.brief.voice, self.default_voice)

    # ------------------------------------------------------------------ client messages

    def take_outgoing(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def has_outgoing(self) -> bool:
        return bool(self._outbox)

    @property
    def busy(self) -> bool:
        """The model is in a turn (speaking or calling a tool)."""
        return self._turn is not None

    def setup(self) -> str:
        """The first frame of a connection: resume the session when a handle is known, else a fresh
        session told the conversation so far (if any)."""
        instructions = self.resolved.instructions
        if self.handle is None and self._history:
            instructions = f"{instructions}\n\n{history_instructions(self._history)}".strip()
        message = setup_message(
            model=self.model,
            instructions=instructions,
            voice=self.voice,
            brief=self.brief,
            handle=self.handle,
        )
        return dumps(message)

    def configure(self, input_format: AudioFormat, *, greet: bool) -> None:
        """The leg's audio is known; the bot speaks first when it has an opening line."""
        self.input_format = input_format
        self._audio_head = (
            b'{"realtimeInput":{"audio":{"mimeType":"' + mime_type(input_format).encode() + b'","data":"'
        )
        if greet and self.resolved.opening_line:
            self._client_content(opening_instructions(self.resolved.opening_line), True, None, now=False)

    def append_audio(self, data: bytes) -> bytes:
        """One `realtimeInput.audio` message (UTF-8 text frame), built without a JSON encoder."""
        return self._audio_head + binascii.b2a_base64(data, newline=False) + b'"}}}'

    def _client_content(self, text: str, turn_complete: bool, say_id: int | None, *, now: bool) -> None:
        message = dumps(
            {
                "clientContent": {
                    "turns": [{"role": "user", "parts": [{"text": text}]}],
                    "turnComplete": turn_complete,
                }
            }
        )
        owed = Owed(message, turn_complete, say_id)
        if now or not self.busy:
            self._send_owed(owed)
        else:
            self._owed.append(owed)

    def _send_owed(self, owed: Owed) -> None:
        self._outbox.append(owed.message)
        if owed.say_id is not None:
            self._say_next.append(owed.say_id)

    def _send_owed_now(self) -> None:
        """After a turn: the text inputs that waited, up to the first that makes the model answer."""
        while self._owed and not self.busy:
            owed = self._owed.pop(0)
            self._send_owed(owed)
            if owed.starts_turn:
                return

    def user_text(self, text: str, *, respond: bool) -> None:
        """The caller's keys as a user turn (`turnComplete` = answer it), after the model's turn."""
        self._history.append(("caller", text))
        self._client_content(text, respond, None, now=False)

    def say(self, text: str, *, interrupt: bool) -> int:
        """A user turn asking the model to say `text` verbatim; `interrupt`: sent now, which cuts the
        model's current turn (client content interrupts generation), else after it."""
        self._says += 1
        if interrupt and self._turn is not None:
            self._turn.muted = True
            self._self_interrupt = True
        self._client_content(say_instructions(text), True, self._says, now=interrupt)
        return self._says

    def tool_result(self, call_id: str, output: str, *, respond: bool) -> None:
        """`toolResponse` (the id is mandatory on the Gemini API). The model always goes on after a
        result; when the bridge wants no answer (`respond` False: the call is ending) the rest of the
        turn is not played."""
        name = self._tool_names.pop(call_id, "")
        if call_id in self._cancelled_tools or not name:
            self._cancelled_tools.discard(call_id)
            return  # cancelled by the server (or unknown): no answer is expected
        try:
            value = json.loads(output)
        except ValueError:
            value = output
        response = value if isinstance(value, dict) else {"output": value}
        reply = {"id": call_id, "name": name, "response": response}
        self._outbox.append(dumps({"toolResponse": {"functionResponses": [reply]}}))
        if not respond:
            self._mute_rest = True

    def interrupt(self, played_ms: float, *, cancel: bool) -> float | None:
        """Barge-in: the caller heard `played_ms` of the latest turn. Gemini has no truncate (the server
        keeps what it generated) and no cancel: a local barge-in drops the rest of the turn's audio.
        Returns the heard ms the bot line is cut at, or None when there was nothing to cut."""
        turn = self._turn if self._turn is not None else self._last_turn
        self._last_turn = None
        if turn is None or turn.heard_ms is not None:
            return None
        received_ms = OUTPUT.ms_for_bytes(turn.audio_bytes)
        turn.heard_ms = max(0.0, min(played_ms, received_ms))
        if cancel or turn is not self._turn:
            turn.muted = True
        if turn.line_sent:  # the whole line was reported: report what was heard
            self._pending.append(self._bot_line(turn))
        return turn.heard_ms

    def connection_lost(self) -> list[Incoming]:
        """The socket is gone: the turn in progress is over (failed), says not yet started too."""
        out: list[Incoming] = []
        if self._turn is not None:
            out.extend(self._finish_turn("failed"))
        out.extend(self._caller_line())
        out.extend(SayFinished(say_id, "failed") for say_id in self._say_next)
        self._say_next.clear()
        self._self_interrupt = self._mute_rest = False
        self._usage.turn_over()
        return out

    def resumed(self) -> None:
        """A new connection is live (resumed or fresh): the text inputs owed go out."""
        self._send_owed_now()

    # ------------------------------------------------------------------ server messages

    def receive(self, text: str | bytes, received_at: float | None = None) -> list[Incoming]:
        out: list[Incoming] = []
        if self._pending:
            out, self._pending = self._pending, []
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):
            return [*out, ProtocolNote("warning", "server sent a message that is not JSON")]
        if not isinstance(message, dict):
            return [*out, ProtocolNote("warning", "server message is not an object")]
        try:
            out.extend(self._parse(message, received_at))
        except (KeyError, TypeError, ValueError, AttributeError, binascii.Error) as exc:
            out.append(ProtocolNote("warning", "malformed server message", repr(exc)))
        return out

    def _parse(self, message: dict[str, Any], received_at: float | None) -> list[Incoming]:
        out: list[Incoming] = []
        content = field_of(message, "serverContent", "server_content")
        if isinstance(content, dict):
            out.extend(self._server_content(content, received_at))
        tool_call = field_of(message, "toolCall", "tool_call")
        if isinstance(tool_call, dict):
            out.extend(self._tool_call(tool_call))
        cancellation = field_of(message, "toolCallCancellation", "tool_call_cancellation")
        if isinstance(cancellation, dict):
            ids = [str(i) for i in cancellation.get("ids") or []]
            self._cancelled_tools.update(ids)
            out.append(ProtocolNote("info", "tool calls cancelled", ",".join(ids)))
        meta = field_of(message, "usageMetadata", "usage_metadata")
        if isinstance(meta, dict):
            usage = self._usage.add(usage_from_metadata(meta))
            if usage is not None:
                out.append(usage)
        if isinstance(content, dict) and field_of(content, "turnComplete", "turn_complete") is True:
            out.extend(self._turn_complete())
        if field_of(message, "setupComplete", "setup_complete") is not None:
            out.append(SetupComplete())
        update = field_of(message, "sessionResumptionUpdate", "session_resumption_update")
        if isinstance(update, dict):
            handle = field_of(update, "newHandle", "new_handle")
            if update.get("resumable") is True and isinstance(handle, str) and handle:
                self.handle = handle
        go_away = field_of(message, "goAway", "go_away")
        if isinstance(go_away, dict):
            out.append(GoAway(str(field_of(go_away, "timeLeft", "time_left") or "")))
        activity = field_of(message, "voiceActivity", "voice_activity")
        if isinstance(activity, dict):
            kind = field_of(activity, "voiceActivityType", "voice_activity_type")
            if kind == "ACTIVITY_START":
                out.append(CallerSpeechStarted())
            elif kind == "ACTIVITY_END":
                out.append(CallerSpeechStopped())
        return out

    def _server_content(self, content: dict[str, Any], received_at: float | None) -> list[Incoming]:
        out: list[Incoming] = []
        heard = field_of(content, "inputTranscription", "input_transcription")
        if isinstance(heard, dict):
            self._caller.append(str(heard.get("text") or ""))
            if heard.get("finished") is True:
                out.extend(self._caller_line())
        model_turn = field_of(content, "modelTurn", "model_turn")
        if isinstance(model_turn, dict):
            for part in model_turn.get("parts") or []:
                blob = field_of(part, "inlineData", "inline_data") if isinstance(part, dict) else None
                if isinstance(blob, dict) and blob.get("data"):
                    out.extend(self._audio(str(blob["data"]), received_at))
        said = field_of(content, "outputTranscription", "output_transcription")
        if isinstance(said, dict) and said.get("text"):
            out.extend(self._turn_for_content())
            if self._turn is not None:
                self._turn.text.append(str(said["text"]))
        if content.get("interrupted") is True:
            out.extend(self._caller_line())
            if self._turn is not None:
                self._turn.interrupted = True
            if self._self_interrupt:
                self._self_interrupt = False
            else:
                out.append(CallerSpeechStarted())
        if field_of(content, "generationComplete", "generation_complete") is True and self._turn is not None:
            out.extend(self._audio_done(self._turn))
        return out

    def _turn_for_content(self) -> list[Incoming]:
        """Model content arrived: the current turn, or a new one (finishing one the server cut)."""
        out: list[Incoming] = []
        if self._turn is not None and self._turn.interrupted:
            out.extend(self._finish_turn("cancelled"))
        if self._turn is None:
            out.extend(self._caller_line())  # the caller's turn is over: their line comes first
            self._turns += 1
            self._turn = TurnState(f"turn-{self._turns}")
            if self._say_next:
                self._turn.say_id = self._say_next.pop(0)
        return out

    def _audio(self, data: str, received_at: float | None) -> list[Incoming]:
        out = self._turn_for_content()
        turn = self._turn
        assert turn is not None
        pcm = b64decode(data)
        if turn.muted or turn.interrupted or self._mute_rest:
            return out
        turn.audio_bytes += len(pcm)
        out.append(AudioOut(pcm, turn.id, received_at))
        return out

    def _audio_done(self, turn: TurnState) -> list[Incoming]:
        if turn.audio_done or not turn.audio_bytes:
            return []
        turn.audio_done = True
        return [ResponseAudioDone(turn.id)]

    def _tool_call(self, tool_call: dict[str, Any]) -> list[Incoming]:
        out = self._turn_for_content()
        turn_id = self._turn.id if self._turn is not None else ""
        for call in field_of(tool_call, "functionCalls", "function_calls") or []:
            name = str(call["name"])
            self._tool_calls += 1
            call_id = str(call.get("id") or f"call-{self._tool_calls}")
            self._tool_names[call_id] = name  # the result names the function too
            arguments = json.dumps(call.get("args") or {}, separators=(",", ":"))
            out.append(ToolCall(call_id, name, arguments, response_id=turn_id))
        return out

    def _turn_complete(self) -> list[Incoming]:
        out: list[Incoming] = []
        if self._turn is not None:
            out.extend(self._finish_turn("cancelled" if self._turn.interrupted else "completed"))
        out.extend(self._caller_line())
        self._usage.turn_over()
        self._mute_rest = self._self_interrupt = False  # an interruption we caused ends with the turn
        self._send_owed_now()
        return out

    def _finish_turn(self, status: str) -> list[Incoming]:
        turn = self._turn
        assert turn is not None
        self._turn = None
        out = self._audio_done(turn)
        if turn.text:
            out.append(self._bot_line(turn))
            turn.line_sent = True
        out.append(ResponseDone(turn.id, status))
        if turn.say_id is not None:
            out.append(SayFinished(turn.say_id, status))
        self._last_turn = turn if turn.heard_ms is None and turn.audio_bytes else None
        return out

    def _bot_line(self, turn: TurnState) -> TranscriptLine:
        text = "".join(turn.text).strip()
        truncated = turn.heard_ms is not None
        if truncated and text:
            # The transcript covers all the audio generated; keep the share the caller heard.
            total_ms = OUTPUT.ms_for_bytes(turn.audio_bytes)
            share = 1.0 if total_ms <= 0 else min(1.0, (turn.heard_ms or 0.0) / total_ms)
            words = text.split()
            text = " ".join(words[: round(len(words) * share)])
        self._set_history(turn.id, "bot", text)
        return TranscriptLine("bot", text, turn.id, truncated=truncated)

    def _caller_line(self) -> list[Incoming]:
        text = "".join(self._caller).strip()
        self._caller.clear()
        if not text:
            return []
        self._callers += 1
        item_id = f"caller-{self._callers}"
        self._set_history(item_id, "caller", text)
        return [TranscriptLine("caller", text, item_id)]

    def _set_history(self, item_id: str, role: str, text: str) -> None:
        """A line of the conversation; a bot line cut later replaces its earlier version."""
        index = self._history_index.get(item_id)
        if index is not None:
            self._history[index] = (role, text)
            return
        self._history_index[item_id] = len(self._history)
        self._history.append((role, text))
