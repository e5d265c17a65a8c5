"""One fake Gemini Live connection: setup, the model's turns, barge-in, tools, resumption, drops."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.openai_realtime.audio import AudioFormat, EnergyVad, default_audio_factory

from .script import ConnectionRecord, ModelTurnRecord, ReceivedMessage, Script
from .validation import POLICY_VIOLATION, ClientMessage, ClientMessageError, audio_rate, parse_client_message

OUT = AudioFormat("pcm", 24000)
OUT_MIME = "audio/pcm;rate=24000"
INTERNAL = 1011


@dataclass
class SessionState:
    """What survives a connection: the conversation, found again by a resumption handle."""

    id: int
    turns_answered: int = 0  # caller turns answered (picks the scripted Turn)
    greeted: bool = False
    handles: int = 0


@dataclass
class Shared:
    """The server's state every connection sees."""

    script: Script
    api_key: str
    failures: list[str] = field(default_factory=list)
    sessions: dict[str, SessionState] = field(default_factory=dict)  # handle -> session
    session_count: int = 0
    tool_calls: int = 0


class FakeConnection:
    def __init__(
        self, ws: web.WebSocketResponse, request: web.Request, record: ConnectionRecord, shared: Shared
    ) -> None:
        self.ws = ws
        self.request = request
        self.record = record
        self.shared = shared
        self.script = shared.script
        self.session: SessionState | None = None
        self._lock = asyncio.Lock()
        self._speaking: asyncio.Task[None] | None = None
        self._speaking_record: ModelTurnRecord | None = None
        self._pending_tool: tuple[str, asyncio.Future[dict[str, Any]]] | None = None
        self._vad: EnergyVad | None = None
        self._timers: list[asyncio.Task[None]] = []

    # --- life -------------------------------------------------------------------------------------

    async def run(self, authorized: bool) -> None:
        if self.record.index in self.script.refuse_connections:
            await self._close(INTERNAL, "Internal error encountered.", "refused")
            return
        if not authorized:
            self.shared.failures.append(f"connection {self.record.index}: bad API key")
            await self._close(1007, "API key not valid. Please pass a valid API key.", "auth")
            return
        try:
            if await self._setup():
                self._start_timers()
                async for msg in self.ws:
                    if msg.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                        await self._on_message(msg.data)
                    if self.ws.closed:
                        break
        finally:
            for task in [*self._timers, self._speaking]:
                if task is not None:
                    task.cancel()
            if self._pending_tool is not None:
                self._pending_tool[1].cancel()
            self.record.closed_t = time.monotonic()
            if self.record.closed_by is None:
                self.record.closed_by = "client"
                self.record.close_code = self.ws.close_code

    async def _close(self, code: int, reason: str, by: str) -> None:
        if self.record.closed_by is None:
            self.record.closed_by, self.record.close_code, self.record.close_reason = by, code, reason
        await self.ws.close(code=code, message=reason.encode())

    async def _violation(self, error: ClientMessageError) -> None:
        self.shared.failures.append(f"connection {self.record.index}: {error.code} {error.reason}")
        await self._close(error.code, error.reason, "violation")

    async def send(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if not self.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self.ws.send_json(message)

    # --- setup and resumption ------------------------------------------------------------------------

    async def _setup(self) -> bool:
        try:
            msg = await self.ws.receive(timeout=30)
        except TimeoutError:
            await self._close(1007, "No setup message received.", "violation")
            return False
        if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
            return False
        try:
            parsed = parse_client_message(msg.data)
            if parsed.kind != "setup":
                raise ClientMessageError("The first message must be 'setup'.")
        except ClientMessageError as exc:
            await self._violation(exc)
            return False
        self._record(parsed)
        setup = parsed.parsed.setup
        assert setup is not None
        self.record.setup = parsed.body
        if parsed.realtime_input_config is not None:
            self.record.realtime_input_config = parsed.realtime_input_config.model_dump(exclude_none=True)
        handle = setup.session_resumption.handle if setup.session_resumption else None
        if handle:
            session = self.shared.sessions.get(handle)
            if session is None:
                await self._violation(ClientMessageError("Session not found.", POLICY_VIOLATION))
                return False
            self.record.resumed_from = handle
        else:
            self.shared.session_count += 1
            session = SessionState(self.shared.session_count)
        self.session = session
        silence = 500
        ric = parsed.realtime_input_config
        if ric and ric.automatic_activity_detection and ric.automatic_activity_detection.silence_duration_ms:
            silence = ric.automatic_activity_detection.silence_duration_ms
        self._silence_ms = silence
        await self.send({"setupComplete": {"sessionId": f"session-{session.id}"}})
        if setup.session_resumption is not None:
            await self._new_handle()
        return True

    async def _new_handle(self) -> None:
        session = self.session
        assert session is not None
        session.handles += 1
        handle = f"handle-{session.id}-{session.handles}"
        self.shared.sessions[handle] = session
        self.record.handles_sent.append(handle)
        await self.send({"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    def _start_timers(self) -> None:
        s = self.script
        if s.drop_after_s is not None and self.record.index in s.drop_on_connections:
            self._timers.append(asyncio.create_task(self._drop_later(s.drop_after_s)))
        if s.go_away_after_s is not None and self.record.index in s.go_away_on_connections:
            self._timers.append(asyncio.create_task(self._go_away_later(s.go_away_after_s)))

    async def _drop_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.record.closed_by = "drop"
        transport = self.request.transport
        if transport is not None:
            transport.abort()  # no close frame: a lost connection

    async def _go_away_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self.send({"goAway": {"timeLeft": f"{self.script.go_away_close_s:g}s"}})
        await asyncio.sleep(self.script.go_away_close_s)
        if not self.ws.closed:
            await self._close(1000, "Connection time limit reached.", "go_away")

    # --- client messages -----------------------------------------------------------------------------

    def _record(self, parsed: ClientMessage) -> None:
        body = parsed.body
        if parsed.kind == "realtime_input" and isinstance(body.get("audio"), dict):
            body = {"audio": {"bytes": len(str(body["audio"].get("data", ""))) * 3 // 4}}
        self.record.messages.append(ReceivedMessage(time.monotonic(), parsed.kind, body))

    async def _on_message(self, data: str | bytes) -> None:
        try:
            parsed = parse_client_message(data)
            if parsed.kind == "setup":
                raise ClientMessageError("'setup' may only be sent once, as the first message.")
        except ClientMessageError as exc:
            await self._violation(exc)
            return
        self._record(parsed)
        handler: Callable[[ClientMessage], Any] = getattr(self, f"_on_{parsed.kind}")
        await handler(parsed)

    async def _on_realtime_input(self, msg: ClientMessage) -> None:
        ri = msg.parsed.realtime_input
        assert ri is not None
        if ri.text:
            await self._text_turn(ri.text, True)
        if ri.audio is None or not ri.audio.data:
            return
        rate = audio_rate(msg.body)
        fmt = AudioFormat("pcm", rate)
        self.record.input_rates.add(rate)
        self.record.input_audio_ms += fmt.ms_of(len(ri.audio.data))
        if self._vad is None:
            s = self.script
            self._vad = EnergyVad(
                rate, threshold_rms=s.vad_threshold_rms, onset_ms=s.vad_onset_ms, silence_ms=self._silence_ms
            )
        for event in self._vad.feed(ri.audio.data, fmt):
            if event.kind == "start":
                await self._interrupt()
            else:
                await self._caller_turn_over()

    async def _on_client_content(self, msg: ClientMessage) -> None:
        content = msg.parsed.client_content
        assert content is not None
        text = " ".join(p.text or "" for turn in content.turns or [] for p in turn.parts or [])
        self.record.client_texts.append(text)
        await self._text_turn(text, bool(content.turn_complete))

    async def _on_tool_response(self, msg: ClientMessage) -> None:
        response = msg.parsed.tool_response
        assert response is not None
        for fr in response.function_responses or []:
            self.record.tool_responses.append({"id": fr.id, "name": fr.name, "response": fr.response})
            pending = self._pending_tool
            if pending is not None and pending[0] == fr.id and not pending[1].done():
                pending[1].set_result(fr.response or {})
            else:
                self.shared.failures.append(
                    f"connection {self.record.index}: toolResponse for unknown id {fr.id}"
                )

    # --- the model -----------------------------------------------------------------------------------

    async def _text_turn(self, text: str, turn_complete: bool) -> None:
        if not turn_complete:
            return  # context only: the model waits for more
        session = self.session
        assert session is not None
        await self._interrupt(by_caller=False)  # client content cuts the model off
        if text.startswith("Greet") and not session.greeted:
            session.greeted = True
            self._speak("greeting", self.script.greeting_ms, self.script.greeting_transcript, text=text)
        elif text.startswith("Say exactly"):
            said = text.split(": ", 1)[-1]
            self._speak("say", max(200, 60 * len(said.split())), said, text=text)
        else:
            self._speak("text", self.script.text_reply_ms, "You pressed a key.", text=text)

    async def _caller_turn_over(self) -> None:
        session = self.session
        assert session is not None
        turn = self.script.turn(session.turns_answered)
        session.turns_answered += 1
        await self.send({"serverContent": {"inputTranscription": {"text": turn.caller_transcript}}})
        self._speak("turn", turn.reply_ms, turn.transcript, tool=turn.tool_call)

    def _speak(self, kind: Any, ms: int, transcript: str, *, text: str = "", tool: Any = None) -> None:
        record = ModelTurnRecord(kind, len(self.record.turns), text=text)
        self.record.turns.append(record)
        self._speaking_record = record
        self._speaking = asyncio.create_task(self._generate(record, ms, transcript, tool))

    async def _generate(self, record: ModelTurnRecord, ms: int, transcript: str, tool: Any) -> None:
        await self._stream(record, ms, transcript)
        if tool is not None:
            self.shared.tool_calls += 1
            call_id = f"fc-{self.shared.tool_calls}"
            record.tool_call_id = call_id
            future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._pending_tool = (call_id, future)
            call = {"id": call_id, "name": tool.name, "args": tool.args}
            await self.send({"toolCall": {"functionCalls": [call]}})
            await asyncio.wait_for(future, 30)
            self._pending_tool = None
            await self._stream(record, tool.after_ms, "Here is what I found.")
        await self.send({"serverContent": {"generationComplete": True}})
        record.status = "completed"
        self._speaking = self._speaking_record = None
        await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": self._usage()})
        await self._new_handle()

    async def _stream(self, record: ModelTurnRecord, ms: int, transcript: str) -> None:
        chunk_ms = self.script.chunk_ms
        chunks = max(1, -(-ms // chunk_ms))
        words = transcript.split()
        per_chunk = -(-len(words) // chunks) if words else 0
        audio = default_audio_factory(len(self.record.turns), chunks * chunk_ms, OUT)
        step = OUT.bytes_for_ms(chunk_ms)
        for i in range(chunks):
            data = base64.b64encode(audio[i * step : (i + 1) * step]).decode()
            await self.send(
                {
                    "serverContent": {
                        "modelTurn": {"parts": [{"inlineData": {"mimeType": OUT_MIME, "data": data}}]}
                    }
                }
            )
            piece = " ".join(words[i * per_chunk : (i + 1) * per_chunk])
            if piece:
                await self.send({"serverContent": {"outputTranscription": {"text": piece + " "}}})
            record.audio_ms_sent += chunk_ms
            if self.script.speed > 0:
                await asyncio.sleep(chunk_ms / 1000 / self.script.speed)

    async def _interrupt(self, *, by_caller: bool = True) -> None:
        """The caller (or new client content) cut the model: generation stops, pending tools are off."""
        task, record = self._speaking, self._speaking_record
        if task is None or task.done() or record is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._speaking = self._speaking_record = None
        record.status = "interrupted"
        if by_caller:
            self.record.interruptions.append(time.monotonic())
        await self.send({"serverContent": {"interrupted": True}})
        if self._pending_tool is not None:
            call_id, future = self._pending_tool
            future.cancel()
            self._pending_tool = None
            await self.send({"toolCallCancellation": {"ids": [call_id]}})
        await self.send({"serverContent": {"turnComplete": True}, "usageMetadata": self._usage()})

    def _usage(self) -> dict[str, Any]:
        text, audio = self.script.prompt_tokens
        out = self.script.response_tokens
        return {
            "promptTokenCount": text + audio,
            "responseTokenCount": out,
            "totalTokenCount": text + audio + out,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": text},
                {"modality": "AUDIO", "tokenCount": audio},
            ],
            "responseTokensDetails": [{"modality": "AUDIO", "tokenCount": out}],
        }
