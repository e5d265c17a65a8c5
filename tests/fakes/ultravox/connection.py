"""One joined call on the fake: its own VAD over the caller's PCM, the agent's scripted speech, barge-in.

The agent speaks 20 ms binary frames of a tone at the call's output rate (`speed` times faster than
real time) with its transcript in deltas; the caller "hears" that audio from the first frame on in
real time, so when the caller talks while it is still audible the fake barges in as Ultravox does:
`playback_clear_buffer`, the agent's line cut at the words heard, `state` listening.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Coroutine
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from .script import BargeIn, CallRecord, ConnectionRecord, Script, Turn
from .validation import Invalid, parse_client_message

FRAME_MS = 20
VOICED_RMS = 500.0
ONSET_FRAMES = 3  # voiced frames in a row that make speech


def tone(rate: int, ms: int = FRAME_MS) -> bytes:
    t = np.arange(int(rate * ms / 1000)) / rate
    return (np.sin(2 * np.pi * 440.0 * t) * 6000).astype("<i2").tobytes()


def agent_line(
    ordinal: int, *, final: bool, text: str | None = None, delta: str | None = None
) -> dict[str, Any]:
    """A transcript message of the agent's (text and delta are exclusive)."""
    message: dict[str, Any] = {"type": "transcript", "role": "agent", "medium": "voice", "final": final}
    message.update({"text": text} if text is not None else {"delta": delta or ""})
    message["ordinal"] = ordinal
    return message


class CallConnection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        call: CallRecord,
        record: ConnectionRecord,
        script: Script,
        violations: list[str],
        *,
        drop_after: float | None,
    ) -> None:
        self.transport: asyncio.BaseTransport | None = None  # the server's, for a drop
        self.ws, self.call, self.record, self.script = ws, call, record, script
        self.violations = violations
        self._drop_after = drop_after
        self._frame_bytes = record.input_rate * FRAME_MS // 1000 * 2
        self._chunk = tone(record.output_rate)
        self._pending = b""
        self._voiced_run = 0
        self._silent_run = 0
        self._in_speech = False
        self._ordinals = itertools.count(0)
        self._invocations = itertools.count(1)
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._speaker: asyncio.Task[None] | None = None
        self._responder: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        # The utterance being generated or still audible: its ordinal, text, start of playout, length.
        self._agent: tuple[int, str, float, float] | None = None
        self._heard_until = 0.0
        self._generated_ms = 0.0
        self._dropped = False

    # ------------------------------------------------------------------ life

    async def run(self) -> None:
        await self._send({"type": "call_started", "callId": self.call.call_id})
        await self._send({"type": "state", "state": "listening"})
        if self._drop_after is not None:
            self._spawn(self._drop_later(self._drop_after))
        if self.script.end_after_s is not None:
            self._spawn(self._end_later(self.script.end_after_s))
        first = self.call.body.get("firstSpeakerSettings") or {"agent": {}}
        greeting = (first.get("agent") or {}).get("text") if "agent" in first else None
        if greeting:
            self._speaker = self._spawn(self._speak("greeting", greeting, self.script.greeting_ms))
        try:
            async for message in self.ws:
                if message.type is WSMsgType.BINARY:
                    await self._hear(message.data)
                elif message.type is WSMsgType.TEXT:
                    if not await self._data(message.data):
                        break
                else:
                    break
        finally:
            if not self.record.closed_by:
                self.record.closed_by = "client"
            await self.stop()

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    def drop(self) -> None:
        """Lose the socket without a close frame (as a network failure would)."""
        if self._dropped:
            return
        self._dropped = True
        self.record.closed_by = "drop"
        if isinstance(self.transport, asyncio.Transport):
            self.transport.abort()

    async def _drop_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self.drop()

    async def _end_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        if not self.record.closed_by:
            self.record.closed_by = "ended"
        await self.ws.close(code=1000, message=b"call ended")

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_json(message)

    # ------------------------------------------------------------------ the caller's audio

    async def _hear(self, data: bytes) -> None:
        if len(data) % 2:
            self.violations.append("odd-length PCM frame")
        self.record.input_audio_bytes += len(data)
        self._pending += data
        size = self._frame_bytes
        while len(self._pending) >= size:
            frame, self._pending = self._pending[:size], self._pending[size:]
            samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
            voiced = float(np.sqrt(np.mean(samples * samples))) > VOICED_RMS
            if voiced:
                self._voiced_run += 1
                self._silent_run = 0
                if not self._in_speech and self._voiced_run >= ONSET_FRAMES:
                    self._in_speech = True
                    await self._speech_started()
            else:
                self._silent_run += 1
                self._voiced_run = 0
                if self._in_speech and self._silent_run * FRAME_MS >= self.script.silence_ms:
                    self._in_speech = False
                    await self._turn_ended()

    async def _speech_started(self) -> None:
        now = time.monotonic()
        if self._agent is None or now >= self._heard_until:
            return
        ordinal, text, started, total_ms = self._agent
        heard_ms = min((now - started) * 1000, self._generated_ms)
        if self._speaker is not None:
            self._speaker.cancel()
            self._speaker = None
        self._agent = None
        self._heard_until = 0.0
        words = text.split()
        cut = " ".join(words[: int(len(words) * heard_ms / max(total_ms, 1))])
        self.record.barge_ins.append(BargeIn(heard_ms, cut))
        await self._send({"type": "playback_clear_buffer"})
        await self._send(
            {
                "type": "transcript",
                "role": "agent",
                "medium": "voice",
                "text": cut,
                "final": True,
                "ordinal": ordinal,
            }
        )
        await self._send({"type": "state", "state": "listening"})

    async def _turn_ended(self) -> None:
        self.record.caller_turns += 1
        n = self.record.caller_turns
        await self._send(
            {
                "type": "transcript",
                "role": "user",
                "medium": "voice",
                "text": f"caller turn {n}",
                "final": True,
                "ordinal": next(self._ordinals),
            }
        )
        await self._send({"type": "state", "state": "thinking"})
        turns = self.script.turns
        self._responder = self._spawn(self._respond(turns[min(n - 1, len(turns) - 1)]))

    # ------------------------------------------------------------------ the agent

    async def _respond(self, turn: Turn) -> None:
        if turn.tool_call is None:
            await self._start_speaking("turn", turn.transcript, turn.reply_ms)
            return
        if turn.speak_first:
            await self._start_speaking("turn", turn.transcript, turn.reply_ms)
            await asyncio.sleep(0.05)
            await self._invoke(turn)
            return
        result = await self._invoke(turn)
        if result is not None and result.get("agentReaction") != "listens":
            await self._start_speaking("turn", turn.transcript, turn.reply_ms)

    async def _invoke(self, turn: Turn) -> dict[str, Any] | None:
        assert turn.tool_call is not None
        invocation = f"inv-{next(self._invocations)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._results[invocation] = future
        self.record.invocations.append(invocation)
        await self._send(
            {
                "type": "client_tool_invocation",
                "toolName": turn.tool_call.name,
                "invocationId": invocation,
                "parameters": turn.tool_call.parameters,
            }
        )
        try:
            return await asyncio.wait_for(future, 10.0)
        except TimeoutError:
            self.violations.append(f"no client_tool_result for {invocation}")
            return None

    async def _start_speaking(self, kind: str, text: str, ms: float) -> None:
        if self._speaker is not None and not self._speaker.done():
            await asyncio.shield(self._speaker)
        self._speaker = self._spawn(self._speak(kind, text, ms))

    async def _speak(self, kind: str, text: str, ms: float) -> None:
        ordinal = next(self._ordinals)
        self.record.utterances.append(kind)
        await self._send({"type": "state", "state": "speaking"})
        frames = max(int(ms // FRAME_MS), 1)
        words = text.split()
        said = 0
        self._generated_ms = 0.0
        speed = self.script.speed
        for i in range(frames):
            if i == 0:
                started = time.monotonic()
                self._agent = (ordinal, text, started, ms)
                self._heard_until = started + ms / 1000
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_bytes(self._chunk)
            self._generated_ms += FRAME_MS
            due = len(words) * (i + 1) // frames
            if due > said:
                delta = " ".join(words[said:due]) + " "
                said = due
                await self._send(agent_line(ordinal, delta=delta, final=False))
            await asyncio.sleep(FRAME_MS / 1000 / speed if speed > 0 else 0)
        await self._send(
            {
                "type": "transcript",
                "role": "agent",
                "medium": "voice",
                "text": text,
                "final": True,
                "ordinal": ordinal,
            }
        )
        await self._send({"type": "state", "state": "listening"})

    # ------------------------------------------------------------------ data messages

    async def _data(self, text: str) -> bool:
        try:
            message = parse_client_message(text)
        except Invalid as exc:
            self.violations.append(f"invalid data message: {exc}")
            self.record.closed_by = "violation"
            await self.ws.close(code=1007, message=b"invalid data message")
            return False
        self.record.messages.append(message)
        kind = message["type"]
        if kind == "ping":
            await self._send({"type": "pong", "timestamp": message["timestamp"]})
        elif kind == "client_tool_result":
            future = self._results.pop(message["invocationId"], None)
            if future is None:
                self.violations.append(f"result for unknown invocation {message['invocationId']}")
            elif not future.done():
                future.set_result(message)
        elif kind == "user_text_message":
            if message.get("urgency", "soon") != "later" and time.monotonic() >= self._heard_until:
                self._spawn(self._start_speaking("text_reply", "Thanks, got it.", 300))
        elif kind == "forced_agent_message":
            content = message.get("content") or ""
            ms = max(len(content) * self.script.say_ms_per_char, 200)
            if message.get("urgency") == "immediate" and self._speaker is not None:
                self._speaker.cancel()
                self._speaker = None
                self._agent = None
                await self._send({"type": "playback_clear_buffer"})
            self._spawn(self._start_speaking("say", content, ms))
        elif kind == "hang_up":
            self.record.closed_by = "hang_up"
            await self.ws.close(code=1000, message=b"hang_up")
            return False
        return True
