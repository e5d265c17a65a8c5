"""Model responses: the §6 event sequence, paced audio deltas, tool calls, cancellation."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from websockets.exceptions import ConnectionClosed

from . import session_config as sc
from . import wire
from .script import ResponseRecord, Turn, Usage

if TYPE_CHECKING:
    from .connection import FakeConnection


@dataclass
class ActiveResponse:
    record: ResponseRecord
    item_id: str
    task: asyncio.Task[None] | None = None
    finishing: bool = False
    transcript_sent: list[str] = field(default_factory=list)


class Responder:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.active: ActiveResponse | None = None
        self.turn_cursor = 0
        self.call_ids: set[str] = set()
        self.fatal_sent = False
        self.conversation_id = conn.new_id("conv")

    def peek_turn(self) -> Turn:
        return self.conn.script.turn(self.turn_cursor)

    # --- entry points ------------------------------------------------------------------------------

    async def start(self, *, kind: Literal["greeting", "turn"]) -> None:
        conn, script = self.conn, self.conn.script
        if script.fatal_error is not None and not self.fatal_sent:
            self.fatal_sent = True
            fatal = script.fatal_error
            conn.record.closed_by = "fatal_error"
            conn.closing = True
            await conn.send_error(
                {
                    "type": fatal.type,
                    "code": fatal.code,
                    "message": fatal.message,
                    "param": None,
                    "event_id": None,
                },
                failure=False,
            )
            await conn.ws.close(fatal.close_code, fatal.code)
            return
        if kind == "greeting":
            await self._audio_response(
                "greeting", None, script.greeting_reply_ms, script.greeting_transcript, None
            )
            return
        index = self.turn_cursor
        turn = script.turn(index)
        self.turn_cursor += 1
        if turn.error is not None:
            rec = ResponseRecord(
                conn.new_id("resp"), "error", index, status="error", created_t=time.monotonic()
            )
            conn.record.responses.append(rec)
            err = turn.error
            await conn.send_error(
                {"type": err.type, "code": err.code, "message": err.message, "param": None, "event_id": None},
                failure=False,
            )
        elif turn.tool_call is not None:
            await self._tool_response(index, turn)
        else:
            await self._audio_response("turn", index, turn.reply_ms, turn.transcript, turn.usage)

    async def cancel(self, reason: str) -> None:
        """Stop the active response and close it with status cancelled (barge-in or response.cancel)."""
        active = self.active
        if active is None or active.task is None:
            return
        if not active.finishing:
            active.task.cancel()
        await asyncio.wait([active.task])
        if not active.finishing:
            with contextlib.suppress(ConnectionClosed):
                await self._finish(active, "cancelled", reason)

    async def abandon(self) -> None:
        """Connection is going away: stop generating without sending anything."""
        active, self.active = self.active, None
        if active is not None and active.task is not None and not active.task.done():
            active.task.cancel()
            await asyncio.wait([active.task])

    # --- audio responses ---------------------------------------------------------------------------

    async def _audio_response(
        self,
        kind: Literal["greeting", "turn"],
        turn_index: int | None,
        reply_ms: int,
        transcript: str,
        usage: Usage | None,
    ) -> None:
        conn = self.conn
        rid, item_id = conn.new_id("resp"), conn.new_id("item")
        rec = ResponseRecord(
            rid, kind, turn_index, [item_id], transcript=transcript, created_t=time.monotonic()
        )
        conn.record.responses.append(rec)
        active = ActiveResponse(rec, item_id)
        self.active = active
        previous = conn.add_item(
            wire.Item(item_id, "assistant", wire.assistant_item(item_id, "in_progress", None))
        )
        # Everything up to the first delta is sent before yielding, so a cancel always finds it sent.
        await conn.send(
            {"type": "response.created", "response": self._response(rid, "in_progress", None, [], None)}
        )
        await conn.send(wire.rate_limits())
        item = wire.assistant_item(item_id, "in_progress", None)
        await conn.send(
            {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": item}
        )
        await conn.send({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        part = {"type": "audio", "transcript": ""}
        await conn.send({"type": "response.content_part.added", **wire.part_ids(rid, item_id), "part": part})
        audio = conn.opts.audio_factory(turn_index if turn_index is not None else -1, reply_ms, conn.out_fmt)
        active.task = asyncio.create_task(self._stream(active, audio, usage))

    def _chunk_ms(self, total_ms: int) -> list[int]:
        script, out, done = self.conn.script, [], 0
        while done < total_ms:
            step = min(self.conn.rng.randint(script.delta_min_ms, script.delta_max_ms), total_ms - done)
            out.append(step)
            done += step
        return out

    async def _stream(self, active: ActiveResponse, audio: bytes, usage: Usage | None) -> None:
        conn, rec = self.conn, active.record
        fmt, speed = conn.out_fmt, conn.script.speed
        total_ms = fmt.ms_of(len(audio))
        chunks = self._chunk_ms(round(total_ms))
        cum, fractions = 0, []
        for c in chunks:
            cum += c
            fractions.append(cum / max(1, sum(chunks)))
        texts = wire.split_words(rec.transcript, fractions)
        pos = 0
        ids = wire.part_ids(rec.id, active.item_id)
        item = conn.items[active.item_id]
        try:
            elapsed = 0
            for ms, text in zip(chunks, texts, strict=True):
                elapsed += ms
                end = min(len(audio), fmt.bytes_for_ms(elapsed))
                piece = audio[pos:end]
                pos = end
                conn.audio_output_started = True
                if rec.first_delta_t is None:
                    rec.first_delta_t = time.monotonic()
                await conn.send(
                    {"type": "response.output_audio.delta", **ids, "delta": base64.b64encode(piece).decode()}
                )
                sent_ms = fmt.ms_of(len(piece))
                rec.audio_ms_sent += sent_ms
                item.audio_ms += sent_ms
                if text:
                    active.transcript_sent.append(text)
                    await conn.send({"type": "response.output_audio_transcript.delta", **ids, "delta": text})
                await asyncio.sleep(ms / 1000 / speed if speed > 0 else 0)
            active.finishing = True
            await self._finish(active, "completed", None, usage)
        except ConnectionClosed:
            return

    async def _finish(
        self, active: ActiveResponse, status: str, reason: str | None, usage: Usage | None = None
    ) -> None:
        conn, rec = self.conn, active.record
        active.finishing = True
        ids = wire.part_ids(rec.id, active.item_id)
        transcript = "".join(active.transcript_sent)
        item_status = "completed" if status == "completed" else "incomplete"
        item = wire.assistant_item(active.item_id, item_status, transcript)
        conn.items[active.item_id].wire = item
        rec.status, rec.reason, rec.transcript = status, reason, transcript
        await conn.send({"type": "response.output_audio.done", **ids})
        await conn.send({"type": "response.output_audio_transcript.done", **ids, "transcript": transcript})
        part = {"type": "audio", "transcript": transcript}
        await conn.send({"type": "response.content_part.done", **ids, "part": part})
        await conn.send(
            {"type": "response.output_item.done", "response_id": rec.id, "output_index": 0, "item": item}
        )
        await conn.send({"type": "conversation.item.done", "item": item, "previous_item_id": None})
        # Cleared before response.done goes out: the client may answer it with response.create at once.
        self.active = None
        rec.done_t = time.monotonic()
        body = self._response(rec.id, status, reason, [item], self._usage(rec, usage))
        await conn.send({"type": "response.done", "response": body})

    # --- tool calls --------------------------------------------------------------------------------

    async def _tool_response(self, index: int, turn: Turn) -> None:
        assert turn.tool_call is not None
        conn = self.conn
        rid, item_id, call_id = conn.new_id("resp"), conn.new_id("item"), conn.new_id("call")
        name, args = turn.tool_call.name, json.dumps(turn.tool_call.arguments)
        rec = ResponseRecord(rid, "tool_call", index, [item_id], created_t=time.monotonic(), call_id=call_id)
        conn.record.responses.append(rec)
        self.call_ids.add(call_id)
        pending = wire.function_call_item(item_id, call_id, name, "", "in_progress")
        previous = conn.add_item(wire.Item(item_id, "function_call", pending))
        await conn.send(
            {"type": "response.created", "response": self._response(rid, "in_progress", None, [], None)}
        )
        await conn.send(wire.rate_limits())
        await conn.send(
            {"type": "response.output_item.added", "response_id": rid, "output_index": 0, "item": pending}
        )
        await conn.send({"type": "conversation.item.added", "item": pending, "previous_item_id": previous})
        common = {"response_id": rid, "item_id": item_id, "output_index": 0, "call_id": call_id}
        await conn.send({"type": "response.function_call_arguments.delta", **common, "delta": args})
        await conn.send(
            {"type": "response.function_call_arguments.done", **common, "name": name, "arguments": args}
        )
        done = wire.function_call_item(item_id, call_id, name, args, "completed")
        conn.items[item_id].wire = done
        await conn.send(
            {"type": "response.output_item.done", "response_id": rid, "output_index": 0, "item": done}
        )
        await conn.send({"type": "conversation.item.done", "item": done, "previous_item_id": previous})
        rec.status, rec.done_t = "completed", time.monotonic()
        body = self._response(rid, "completed", None, [done], self._usage(rec, turn.usage))
        await conn.send({"type": "response.done", "response": body})

    # --- helpers -----------------------------------------------------------------------------------

    def _response(
        self,
        rid: str,
        status: str,
        reason: str | None,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> dict[str, Any]:
        conn = self.conn
        return wire.response_object(
            rid,
            status=status,
            reason=reason,
            output=output,
            usage=usage,
            out_fmt=conn.out_fmt,
            voice=sc.voice(conn.session, conn.variant),
            conversation_id=self.conversation_id,
        )

    def _usage(self, rec: ResponseRecord, override: Usage | None) -> dict[str, Any]:
        conn = self.conn
        usage = override or conn.script.usage
        if usage is None:
            # Plausible: each response re-bills the conversation so far; later turns hit the cache.
            n = len(conn.record.responses) - 1
            input_audio = round(conn.record.input_audio_ms / 100)
            input_text = 150 + 25 * n
            usage = Usage(
                input_text_tokens=input_text,
                input_audio_tokens=input_audio,
                cached_tokens=min(input_text, 128 * n),
                output_text_tokens=max(1, len(rec.transcript.split())),
                output_audio_tokens=round(rec.audio_ms_sent / 50),
            )
        return usage.to_wire(reduced=conn.variant == "xai")
