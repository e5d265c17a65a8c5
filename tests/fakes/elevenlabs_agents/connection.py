"""One conversation on the fake: initiation, pings, caller VAD, scripted turns, interruptions, tools."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.openai_realtime.audio import EnergyVad, default_audio_factory

from .script import ConnectionRecord, ResponseRecord, Script, Turn, wire_format
from .validation import Violation, audio_bytes, check_client_message

FIRST_MESSAGE_TIMEOUT_S = 10.0


class FakeConversation:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: ConnectionRecord,
        script: Script,
        allowed_overrides: frozenset[str],
        failures: list[str],
    ) -> None:
        self.ws = ws
        self.request = request
        self.record = record
        self.script = script
        self.allowed_overrides = allowed_overrides
        self.failures = failures
        self.in_fmt = wire_format(script.input_format)
        self.out_fmt = wire_format(script.output_format)
        self.vad = EnergyVad(
            self.in_fmt.rate,
            threshold_rms=script.vad_threshold_rms,
            onset_ms=script.vad_onset_ms,
            silence_ms=script.silence_ms,
        )
        self.event_id = 0
        self.turn_index = 0
        self.speaking: asyncio.Task[None] | None = None
        self.current: ResponseRecord | None = None
        self.awaiting_tool: str | None = None
        self.outstanding_pings: dict[int, float] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._send_lock = asyncio.Lock()

    # -- life --------------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            first = await asyncio.wait_for(self.ws.receive(), FIRST_MESSAGE_TIMEOUT_S)
        except TimeoutError:
            await self._violation(Violation("No conversation_initiation_client_data received"))
            return
        if first.type is not WSMsgType.TEXT:
            self.record.closed_by = "client"
            return
        try:
            message = check_client_message(
                first.data, initiated=False, allowed_overrides=self.allowed_overrides
            )
        except Violation as exc:
            await self._violation(exc)
            return
        self.record.initiation = message
        self.record.messages.append(message)
        self.record.conversation_id = f"conv_{self.record.index:04d}"
        await self._send(
            {
                "type": "conversation_initiation_metadata",
                "conversation_initiation_metadata_event": {
                    "conversation_id": self.record.conversation_id,
                    "agent_output_audio_format": self.script.output_format,
                    "user_input_audio_format": self.script.input_format,
                },
            }
        )
        self._tasks.append(asyncio.create_task(self._pinger()))
        if self.script.drop_after_s is not None:
            self._tasks.append(asyncio.create_task(self._end_later(self.script.drop_after_s, drop=True)))
        if self.script.end_after_s is not None:
            self._tasks.append(asyncio.create_task(self._end_later(self.script.end_after_s, drop=False)))
        first_message = self._first_message(message)
        if first_message:
            self._speak("greeting", first_message, self.script.greeting_ms)
        try:
            await self._receive_loop()
        finally:
            for task in [*self._tasks, self.speaking]:
                if task is not None:
                    task.cancel()
            self._check_pongs(final=True)
            self.record.closed_t = time.monotonic()

    def _first_message(self, initiation: dict[str, Any]) -> str:
        agent = (initiation.get("conversation_config_override") or {}).get("agent") or {}
        if "first_message" in agent and agent["first_message"] is not None:
            return str(agent["first_message"])
        return self.script.default_first_message

    async def _receive_loop(self) -> None:
        while True:
            msg = await self.ws.receive()
            if msg.type is not WSMsgType.TEXT:
                if not self.record.closed_by:
                    self.record.closed_by = "client"
                return
            try:
                message = check_client_message(msg.data, initiated=True)
                if "type" not in message:
                    self._audio(audio_bytes(message, self.in_fmt.sample_width))
                    continue
                self.record.messages.append(message)
                await self._typed(message)
            except Violation as exc:
                await self._violation(exc)
                return

    async def _violation(self, exc: Violation) -> None:
        self.record.violations.append(exc.reason)
        self.failures.append(f"connection {self.record.index}: {exc.reason}")
        self.record.closed_by = "violation"
        await self.ws.close(code=exc.code, message=exc.reason[:120].encode())

    def drop(self) -> None:
        self.record.closed_by = "drop"
        transport = self.request.transport
        if transport is not None:
            transport.abort()  # no close frame: the client sees the connection die

    async def _end_later(self, seconds: float, *, drop: bool) -> None:
        await asyncio.sleep(seconds)
        if drop:
            self.drop()
        else:
            self.record.closed_by = "end"
            await self.ws.close(code=1000, message=b"conversation ended")

    # -- client messages -----------------------------------------------------------------------------

    async def _typed(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            event_id = message["event_id"]
            if self.outstanding_pings.pop(event_id, None) is None:
                raise Violation(f"Invalid message received: pong for unknown ping {event_id}")
            self.record.pongs.append(event_id)
        elif kind == "client_tool_result":
            call_id = message["tool_call_id"]
            if call_id != self.awaiting_tool:
                raise Violation(f"Invalid message received: no pending client tool call {call_id!r}")
            self.awaiting_tool = None
            self.record.tool_results.append(message)
            follow_up = self._next_turn()
            if follow_up is not None:
                self._reply("after_tool", follow_up)
        elif kind == "user_message":
            self.record.user_messages.append(message["text"])
            self._interrupt_if_speaking()
            turn = self._next_turn()
            if turn is not None:
                self._reply("text", turn)
        elif kind == "contextual_update":
            self.record.contextual_updates.append(message["text"])

    def _audio(self, data: bytes) -> None:
        self.record.audio_chunks += 1
        self.record.input_audio_ms += len(data) / self.in_fmt.bytes_per_ms
        for event in self.vad.feed(data, self.in_fmt):
            if event.kind == "start":
                self.record.speech_started_at.append(time.monotonic())
                self._interrupt_if_speaking()
            else:
                self._caller_turn_ended()

    def _caller_turn_ended(self) -> None:
        turn = self._next_turn()
        caller_text = turn.caller_text if turn is not None else "Hello?"
        self._fire(
            self._send(
                {"type": "user_transcript", "user_transcription_event": {"user_transcript": caller_text}}
            )
        )
        if turn is not None and self.awaiting_tool is None:
            self._reply("turn", turn)

    def _next_turn(self) -> Turn | None:
        turn = self.script.turn(self.turn_index)
        if turn is not None:
            self.turn_index += 1
        return turn

    # -- the agent speaking --------------------------------------------------------------------------

    def _reply(self, kind: str, turn: Turn) -> None:
        self._speak(kind, turn.text, turn.reply_ms, tool=turn)

    def _speak(self, kind: str, text: str, ms: int, tool: Turn | None = None) -> None:
        if self.speaking is not None and not self.speaking.done():
            self.speaking.cancel()
        record = ResponseRecord(kind, text, ms)
        self.record.responses.append(record)
        self.current = record
        self.speaking = asyncio.create_task(self._speak_task(record, tool))

    async def _speak_task(self, record: ResponseRecord, tool: Turn | None) -> None:
        script = self.script
        if record.audio_ms_planned > 0:
            await self._send(
                {"type": "agent_response", "agent_response_event": {"agent_response": record.text}}
            )
        audio = default_audio_factory(len(self.record.responses), record.audio_ms_planned, self.out_fmt)
        step = self.out_fmt.bytes_for_ms(script.chunk_ms)
        for offset in range(0, len(audio), step):
            piece = audio[offset : offset + step]
            self.event_id += 1
            if record.first_event_id is None:
                record.first_event_id = self.event_id
                record.first_audio_t = time.monotonic()
            record.last_event_id = self.event_id
            await self._send(self._audio_event(piece, self.event_id))
            record.audio_ms_sent += len(piece) / self.out_fmt.bytes_per_ms
            if script.speed > 0:
                await asyncio.sleep(script.chunk_ms / 1000 / script.speed)
        if tool is not None and tool.tool_call is not None:
            call_id = f"call_{len(self.record.tool_calls) + 1}"
            self.awaiting_tool = call_id
            body = {
                "tool_name": tool.tool_call.tool_name,
                "tool_call_id": call_id,
                "parameters": tool.tool_call.parameters,
            }
            self.record.tool_calls.append(body)
            await self._send({"type": "client_tool_call", "client_tool_call": body})

    def _audio_event(self, data: bytes, event_id: int) -> dict[str, Any]:
        return {
            "type": "audio",
            "audio_event": {"audio_base_64": base64.b64encode(data).decode(), "event_id": event_id},
        }

    def _interrupt_if_speaking(self) -> None:
        """Like the real agent, it counts as speaking until its audio has played out in real time (it
        sends faster than that), not only while it is still sending."""
        record = self.current
        if record is None or record.first_audio_t is None:
            return
        played_s = time.monotonic() - record.first_audio_t
        if played_s * 1000 >= record.audio_ms_sent and (self.speaking is None or self.speaking.done()):
            return
        if self.speaking is not None:
            self.speaking.cancel()
        self.current = None
        record.interrupted = True
        record.heard_ms = min(played_s * 1000, record.audio_ms_sent)
        interrupted_id = record.last_event_id or self.event_id
        self.record.interruptions.append(interrupted_id)
        self._fire(self._after_interruption(record, interrupted_id))

    async def _after_interruption(self, record: ResponseRecord, interrupted_id: int) -> None:
        await self._send({"type": "interruption", "interruption_event": {"event_id": interrupted_id}})
        if self.script.stale_audio_after_interruption and interrupted_id > 0:
            # Audio of the cut response still in flight: a client must drop it (id <= the interruption's).
            self.record.stale_audio_ids.append(interrupted_id)
            stale = default_audio_factory(99, self.script.chunk_ms, self.out_fmt)
            await self._send(self._audio_event(stale, interrupted_id))
        words = record.text.split()
        heard = max(1, round(len(words) * (record.heard_ms or 0) / max(record.audio_ms_planned, 1)))
        await self._send(
            {
                "type": "agent_response_correction",
                "agent_response_correction_event": {
                    "original_agent_response": record.text,
                    "corrected_agent_response": " ".join(words[:heard]),
                },
            }
        )

    # -- pings ---------------------------------------------------------------------------------------

    async def _pinger(self) -> None:
        ping_id = 0
        while True:
            await asyncio.sleep(self.script.ping_interval_s)
            self._check_pongs(final=False)
            ping_id += 1
            self.outstanding_pings[ping_id] = time.monotonic()
            self.record.pings_sent.append(ping_id)
            await self._send(
                {"type": "ping", "ping_event": {"event_id": ping_id, "ping_ms": 12 if ping_id > 1 else None}}
            )

    def _check_pongs(self, *, final: bool) -> None:
        now = time.monotonic()
        for ping_id, sent in list(self.outstanding_pings.items()):
            # At the end a ping sent just before the client closed may fairly be unanswered.
            limit = self.script.pong_timeout_s if not final else max(self.script.pong_timeout_s, 1.0)
            if now - sent > limit:
                del self.outstanding_pings[ping_id]
                reason = f"no pong for ping {ping_id} within {self.script.pong_timeout_s} s"
                self.record.violations.append(reason)
                self.failures.append(f"connection {self.record.index}: {reason}")

    # -- sending -------------------------------------------------------------------------------------

    def _fire(self, coro: Any) -> None:
        self._tasks.append(asyncio.create_task(coro))

    async def _send(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        async with self._send_lock:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(message))
