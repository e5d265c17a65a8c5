"""One accepted socket: Welcome, Settings first, binary audio both ways, scripted agent turns."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes.openai_realtime.audio import AudioFormat, EnergyVad, default_audio_factory

from .script import ConnectionRecord, ReceivedMessage, Reply, Script
from .validation import ClientMessageError, validate_client_message

ERROR_CLOSE_CODE = 1008  # UNVERIFIED: the real service's close code after an Error is not documented


def wire_format(obj: object, *, default_rate: int = 24000) -> AudioFormat:
    """A Settings audio.input/output object as the fake's AudioFormat (linear16 24 kHz by default)."""
    if not isinstance(obj, dict):
        return AudioFormat("pcm", default_rate)
    encoding = obj.get("encoding", "linear16")
    if encoding == "mulaw":
        return AudioFormat("pcmu", 8000)
    if encoding == "alaw":
        return AudioFormat("pcma", 8000)
    rate = obj.get("sample_rate")
    return AudioFormat("pcm", rate if isinstance(rate, int) else default_rate)


class FakeAgentConnection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        record: ConnectionRecord,
        script: Script,
        fail: Callable[[str], None],
    ) -> None:
        self.ws, self.request, self.record, self.script = ws, request, record, script
        self._fail = fail
        self.configured = False
        self.in_fmt = AudioFormat("pcm", 24000)
        self.out_fmt = AudioFormat("pcm", 24000)
        self.vad: EnergyVad | None = None
        self.user_turns = 0
        self.calls = itertools.count(1)
        self.outstanding: dict[str, str] = {}  # function call id -> name
        self.speech: asyncio.Queue[Reply] = asyncio.Queue()
        self.current: asyncio.Task[None] | None = None
        self.last_frame_t = time.monotonic()
        self.pending_tool_turn: str | None = None  # a function call whose reply speaks next
        self._tool_after: dict[int, tuple[str, str, str]] = {}  # reply id -> the call sent mid-audio

    def fail(self, message: str) -> None:
        self._fail(f"conn#{self.record.index}: {message}")

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message))

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._speaker())]
        if self.script.drop_after_s is not None and self.record.index in self.script.drop_on_connections:
            tasks.append(asyncio.create_task(self._drop_later(self.script.drop_after_s)))
        if self.script.client_timeout_s is not None:
            tasks.append(asyncio.create_task(self._watch_timeout(self.script.client_timeout_s)))
        try:
            await self.send({"type": "Welcome", "request_id": f"req-{self.record.index:04d}"})
            async for message in self.ws:
                self.last_frame_t = time.monotonic()
                if message.type is WSMsgType.TEXT:
                    go_on = await self._on_text(message.data)
                elif message.type is WSMsgType.BINARY:
                    go_on = await self._on_audio(message.data)
                else:
                    go_on = True
                if not go_on:
                    break
        finally:
            for task in [*tasks, self.current]:
                if task is not None:
                    task.cancel()
            if self.record.closed_by is None:
                self.record.closed_by = "client"
            self.record.closed_t = time.monotonic()

    async def _error(self, code: str, description: str, *, failure: bool = True) -> None:
        self.record.errors_sent.append({"code": code, "description": description})
        if failure:
            self.fail(f"Error {code}: {description}")
        with contextlib.suppress(Exception):
            await self.send({"type": "Error", "code": code, "description": description})
        self.record.closed_by = "error"
        await self.ws.close(code=ERROR_CLOSE_CODE, message=code.encode())

    # --- client messages ----------------------------------------------------------------------------

    async def _on_text(self, text: str) -> bool:
        try:
            message = validate_client_message(text)
        except ClientMessageError as exc:
            await self._error(exc.code, exc.description)
            return False
        kind = message["type"]
        self.record.messages.append(ReceivedMessage(time.monotonic(), kind, message))
        if not self.configured and kind != "Settings":
            await self._error("UNPARSABLE_CLIENT_MESSAGE", f"{kind} before Settings")
            return False
        if kind == "Settings":
            if self.configured:
                await self._error("SETTINGS_ALREADY_APPLIED", "Settings may be sent once")
                return False
            await self._on_settings(message)
        elif kind == "KeepAlive":
            self.record.keepalives += 1
        elif kind == "UpdatePrompt":
            self.record.prompt_updates.append(message["prompt"])
            await self.send({"type": "PromptUpdated"})
        elif kind == "InjectUserMessage":
            self.record.injected_user.append(message["content"])
            await self.send({"type": "ConversationText", "role": "user", "content": message["content"]})
            await self._answer()
        elif kind == "InjectAgentMessage":
            await self._on_inject_agent(message)
        elif kind == "FunctionCallResponse":
            self.record.function_responses.append(message)
            if self.outstanding.pop(message["id"], None) != message["name"]:
                self.fail(f"FunctionCallResponse for an unknown call {message['id']!r}/{message['name']!r}")
            elif self.pending_tool_turn == message["id"]:
                self.pending_tool_turn = None
                await self._answer()  # the agent speaks about the result
        return True

    async def _on_settings(self, message: dict[str, Any]) -> None:
        self.configured = True
        self.record.settings = message
        audio = message["audio"]
        self.in_fmt = wire_format(audio.get("input"))
        self.out_fmt = wire_format(audio.get("output"))
        s = self.script
        self.vad = EnergyVad(
            self.in_fmt.rate,
            threshold_rms=s.vad_threshold_rms,
            onset_ms=s.vad_onset_ms,
            silence_ms=s.silence_ms,
        )
        await self.send({"type": "SettingsApplied"})
        agent = message["agent"]
        greeting = agent.get("greeting") if isinstance(agent, dict) else None
        if greeting:
            self.speech.put_nowait(Reply("greeting", greeting, s.greeting_ms))

    async def _on_inject_agent(self, message: dict[str, Any]) -> None:
        self.record.injected_agent.append(message)
        behavior = message.get("behavior", "default")
        busy = self.current is not None and not self.current.done()
        if behavior == "default" and (busy or not self.speech.empty()):
            await self.send({"type": "InjectionRefused", "message": "The agent is speaking."})
            return
        if behavior == "interrupt":
            self._cut()
        text = message["message"]
        self.speech.put_nowait(Reply("say", text, max(200, len(text) * self.script.say_ms_per_char)))

    async def _on_audio(self, data: bytes) -> bool:
        if not self.configured or self.vad is None:
            self.record.audio_before_settings += 1
            await self._error("UNPARSABLE_CLIENT_MESSAGE", "audio before Settings")
            return False
        self.record.input_audio_bytes += len(data)
        self.record.input_audio_ms += self.in_fmt.ms_of(len(data))
        for event in self.vad.feed(data, self.in_fmt):
            if event.kind == "start":
                self.record.user_started_at.append(time.monotonic())
                if self._cut():
                    self.record.barge_ins += 1
                await self.send({"type": "UserStartedSpeaking"})
            else:
                turn = self.script.turn(self.user_turns)
                await self.send(
                    {"type": "ConversationText", "role": "user", "content": turn.caller_transcript}
                )
                await self._answer()
        return True

    # --- the agent's side ---------------------------------------------------------------------------

    async def _answer(self) -> None:
        """The next scripted turn: a reply, a function call, or a reply with a function call in it."""
        turn = self.script.turn(self.user_turns)
        self.user_turns += 1
        await self.send({"type": "AgentThinking", "content": "thinking"})
        call = None
        if turn.tool_call is not None:
            call = (
                f"call_{self.record.index}_{next(self.calls)}",
                turn.tool_call.name,
                json.dumps(turn.tool_call.arguments),
            )
        if turn.reply_ms <= 0:
            if call is not None:
                self.pending_tool_turn = call[0]
                await self._request(*call)
            return
        reply = Reply("turn", turn.transcript, turn.reply_ms)
        if call is not None:
            self._tool_after[id(reply)] = call
        self.speech.put_nowait(reply)

    async def _request(self, call_id: str, name: str, arguments: str) -> None:
        self.outstanding[call_id] = name
        message = {"id": call_id, "name": name, "arguments": arguments, "client_side": True}
        self.record.function_requests.append(message)
        await self.send({"type": "FunctionCallRequest", "functions": [message]})

    def _cut(self) -> bool:
        """Stop the agent's speech and forget what was queued; True if it was speaking."""
        while not self.speech.empty():
            self.speech.get_nowait().cut = True
        current, self.current = self.current, None
        if current is None or current.done():
            return False
        current.cancel()
        return True

    async def _speaker(self) -> None:
        while True:
            reply = await self.speech.get()
            if reply.cut:
                continue
            self.record.replies.append(reply)
            task = self.current = asyncio.create_task(self._speak(reply))
            await asyncio.wait([task])  # returns when it ends or is cut; our own cancellation propagates
            if reply.done_t is None:
                reply.cut = True
            if not task.cancelled() and task.exception() is not None:
                return  # the socket went away mid-reply

    async def _speak(self, reply: Reply) -> None:
        s, fmt = self.script, self.out_fmt
        await self.send({"type": "ConversationText", "role": "assistant", "content": reply.text})
        await self.send(
            {"type": "AgentStartedSpeaking", "total_latency": 0.4, "tts_latency": 0.1, "ttt_latency": 0.3}
        )
        audio = default_audio_factory(len(self.record.replies), reply.audio_ms, fmt)
        step = fmt.bytes_for_ms(s.chunk_ms)
        call = self._tool_after.pop(id(reply), None)
        reply.started_t = time.monotonic()
        for offset in range(0, len(audio), step):
            chunk = audio[offset : offset + step]
            await self.ws.send_bytes(chunk)
            reply.audio_ms_sent += fmt.ms_of(len(chunk))
            if call is not None:  # the function call goes out while the agent's words play
                await self._request(*call)
                call = None
            if s.speed > 0:
                await asyncio.sleep(fmt.ms_of(len(chunk)) / 1000 / s.speed)
        reply.done_t = time.monotonic()
        await self.send({"type": "AgentAudioDone"})

    # --- scripted failures --------------------------------------------------------------------------

    async def _drop_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.record.closed_by = "drop"
        transport = self.request.transport
        if transport is not None:
            transport.abort()  # no close frame: the client sees the connection vanish

    async def _watch_timeout(self, limit: float) -> None:
        while not self.ws.closed:
            await asyncio.sleep(limit / 4)
            if time.monotonic() - self.last_frame_t > limit:
                await self._error("CLIENT_MESSAGE_TIMEOUT", f"no message for {limit} s")
                return
