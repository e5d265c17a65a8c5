"""One accepted WebSocket: client events in, scripted server events out."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from . import session_config as sc
from . import wire
from .audio import AudioFactory, EnergyVad, VadEvent
from .items import ConversationItems
from .responder import ActiveResponse, Responder
from .script import ConnectionRecord, ReceivedEvent, Script
from .validation import Problem, check_outgoing, decode_audio, parse_client_event
from .wire import Item

# Events outside the SDK union (xAI extras) or with a shape the SDK does not describe.
_UNVALIDATED_XAI = frozenset(
    {"ping", "conversation.item.input_audio_transcription.updated", "session.created", "session.updated"}
)


@dataclass
class ServerOptions:
    variant: str
    full_append_validation: bool
    validate_outgoing: bool
    audio_factory: AudioFactory
    failures: list[str] = field(default_factory=list)


class FakeConnection:
    def __init__(
        self,
        ws: ServerConnection,
        record: ConnectionRecord,
        script: Script,
        options: ServerOptions,
        *,
        beta: bool,
    ) -> None:
        self.ws = ws
        self.record = record
        self.script = script
        self.opts = options
        self.variant = options.variant
        self.beta = beta
        self.rng = random.Random(f"{script.seed}:{record.index}")
        self._ids = 0
        self.session = sc.default_session(self.variant, record.model, self.new_id("sess"))
        record.session = self.session
        self.in_fmt = sc.input_format(self.session)
        self.out_fmt = sc.output_format(self.session)
        self.vad = self._new_vad()
        self.buffer_ms = 0.0
        self.speech_item: str | None = None
        self.items: dict[str, Item] = {}
        self.last_item_id: str | None = None
        self.user_turns = 0
        self.audio_output_started = False
        self.closing = False
        self.responder = Responder(self)
        self._tasks: list[asyncio.Task[None]] = []
        items = ConversationItems(self)
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self.on_session_update,
            "input_audio_buffer.commit": self.on_input_audio_buffer_commit,
            "input_audio_buffer.clear": self.on_input_audio_buffer_clear,
            "output_audio_buffer.clear": self.on_output_audio_buffer_clear,
            "conversation.item.create": items.on_create,
            "conversation.item.truncate": items.on_truncate,
            "conversation.item.delete": items.on_delete,
            "conversation.item.retrieve": items.on_retrieve,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
        }

    # --- plumbing ----------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_{self.record.index:03d}{self._ids:06d}{self.rng.getrandbits(24):06x}"

    def fail(self, message: str) -> None:
        self.opts.failures.append(f"conn#{self.record.index}: {message}")

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": self.new_id("event"), **event}
        if self.opts.validate_outgoing:
            self._check_outgoing(event)
        await self.ws.send(json.dumps(event))

    def _check_outgoing(self, event: dict[str, Any]) -> None:
        if self.variant == "xai":
            if event["type"] in _UNVALIDATED_XAI:
                return
            if "response" in event:  # xAI's pcm rates are outside the SDK's Literal[24000]
                event = {**event, "response": {**event["response"], "audio": None}}
        bug = check_outgoing(event)
        if bug:
            self.fail(f"fake emitted an invalid event: {bug}")

    async def send_error(self, error: dict[str, Any], *, failure: bool) -> None:
        self.record.errors_sent.append(error)
        if failure:
            self.fail(f"error sent: {error.get('code')}: {error.get('message')}")
        await self.send({"type": "error", "error": error})

    async def reject(self, problem: Problem) -> None:
        await self.send_error(problem.to_error(), failure=True)

    def add_item(self, item: Item) -> str | None:
        previous = self.last_item_id
        self.items[item.id] = item
        self.last_item_id = item.id
        return previous

    def _silence_ms(self) -> int:
        td = sc.turn_detection(self.session, self.variant) or {}
        return int(td.get("silence_duration_ms") or 500)

    def _new_vad(self) -> EnergyVad:
        return EnergyVad(
            self.in_fmt.rate,
            threshold_rms=self.script.vad_threshold_rms,
            onset_ms=self.script.vad_onset_ms,
            silence_ms=self._silence_ms(),
        )

    # --- life cycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        self.record.opened_t = time.monotonic()
        try:
            if self.beta:
                # Production behaviour since the beta shutdown (spec §1).
                self.fail("client sent 'OpenAI-Beta: realtime=v1'")
                await self.send_error(
                    {
                        "type": "invalid_request_error",
                        "code": "beta_api_shape_disabled",
                        "message": "The Realtime beta API shape is disabled; use the GA interface.",
                        "param": None,
                        "event_id": None,
                    },
                    failure=False,
                )
                self.record.closed_by = "beta"
                await self.ws.close(4000, "beta_api_shape_disabled")
                return
            await self.send({"type": "session.created", "session": self.session})
            self._start_timers()
            async for message in self.ws:
                await self.on_message(message)
        except ConnectionClosed:
            pass
        finally:
            for task in self._tasks:
                task.cancel()
            await self.responder.abandon()
            self.record.closed_t = time.monotonic()
            self.record.close_code = self.ws.close_code
            if self.record.closed_by is None:
                self.record.closed_by = "client"

    def _start_timers(self) -> None:
        s = self.script
        if s.drop_after_s is not None and (
            s.drop_on_connections is None or self.record.index in s.drop_on_connections
        ):
            self._tasks.append(asyncio.create_task(self._drop_later(s.drop_after_s)))
        if s.max_session_s is not None:
            self._tasks.append(asyncio.create_task(self._expire_later(s.max_session_s)))
        if self.variant == "xai" and s.ping_interval_s > 0:
            self._tasks.append(asyncio.create_task(self._ping_loop(s.ping_interval_s)))

    async def _drop_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.record.closed_by = "drop"
        self.closing = True
        self.ws.transport.abort()  # RST, no close frame: what a network failure looks like

    async def _expire_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.record.closed_by = "max_session"
        self.closing = True
        with contextlib.suppress(ConnectionClosed):
            await self.send_error(
                {
                    "type": "invalid_request_error",
                    "code": "session_expired",
                    "message": f"Your session hit the maximum duration of {delay:g} seconds.",
                    "param": None,
                    "event_id": None,
                },
                failure=False,
            )
            await self.responder.abandon()
            await self.ws.close(self.script.max_session_close_code, "session expired")

    async def _ping_loop(self, interval: float) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(interval)
                await self.send({"type": "ping", "timestamp": int(time.time() * 1000)})

    # --- dispatch ----------------------------------------------------------------------------------

    async def on_message(self, message: str | bytes) -> None:
        if self.closing:
            return
        event, problem = parse_client_event(
            message, variant=self.variant, full_append=self.opts.full_append_validation
        )
        now = time.monotonic()
        if problem is not None or event is None:
            self.record.events.append(ReceivedEvent(now, "<invalid>", {"problem": problem and problem.code}))
            if problem is not None:
                await self.reject(problem)
            return
        etype = event["type"]
        if etype == "input_audio_buffer.append":
            await self.on_append(event, now)
            return
        self.record.events.append(ReceivedEvent(now, etype, event))
        handler = self._handlers.get(etype)
        if handler is None:
            await self.reject(Problem("invalid_value", f"'{etype}' is not supported over WebSocket.", "type"))
            return
        await handler(event)

    # --- session -----------------------------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any]) -> None:
        update = event["session"]
        wanted = sc.requested_voice(update, self.variant)
        if (
            wanted is not None
            and self.audio_output_started
            and wanted != sc.voice(self.session, self.variant)
        ):
            param = "session.voice" if self.variant == "xai" else "session.audio.output.voice"
            msg = "Cannot update a conversation's voice if assistant audio is present."
            await self.reject(Problem("cannot_update_voice", msg, param, event.get("event_id")))
            return
        self.session = sc.merge_session(self.session, update, self.variant)
        self.record.session = self.session
        self.in_fmt = sc.input_format(self.session)
        self.out_fmt = sc.output_format(self.session)
        self.vad.reconfigure(self.in_fmt.rate, self._silence_ms())
        await self.send({"type": "session.updated", "session": self.session})

    # --- input audio -------------------------------------------------------------------------------

    async def on_append(self, event: dict[str, Any], now: float) -> None:
        data = decode_audio(event["audio"], event.get("event_id"))
        if isinstance(data, Problem):
            self.record.events.append(ReceivedEvent(now, "<invalid>", {"problem": data.code}))
            await self.reject(data)
            return
        ms = self.in_fmt.ms_of(len(data))
        self.record.input_audio_bytes += len(data)
        self.record.input_audio_ms += ms
        self.buffer_ms += ms
        events = self.record.events
        # Consecutive appends fold into one record so memory stays flat over long calls.
        if events and events[-1].type == "input_audio_buffer.append":
            last = events[-1].data
            last["count"] += 1
            last["bytes"] += len(data)
            last["ms"] += ms
            last["last_t"] = now
        else:
            events.append(
                ReceivedEvent(now, "input_audio_buffer.append", {"count": 1, "bytes": len(data), "ms": ms})
            )
        if sc.turn_detection(self.session, self.variant) is None:
            return
        for vad_event in self.vad.feed(data, self.in_fmt):
            await self.on_vad(vad_event)

    async def on_vad(self, ev: VadEvent) -> None:
        td = sc.turn_detection(self.session, self.variant) or {}
        if ev.kind == "start":
            self.speech_item = self.new_id("item")
            await self.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": ev.ms,
                    "item_id": self.speech_item,
                }
            )
            self.record.speech_started_at.append(time.monotonic())
            if self.responder.active is not None and td.get("interrupt_response", True):
                await self.responder.cancel("turn_detected")
            return
        item_id = self.speech_item or self.new_id("item")
        self.speech_item = None
        await self.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": ev.ms, "item_id": item_id}
        )
        self.record.speech_stopped_at.append(time.monotonic())
        await self.commit(item_id)
        if td.get("create_response", True) and self.responder.active is None:
            await self.responder.start(kind="turn")

    async def commit(self, item_id: str) -> None:
        audio_ms = self.buffer_ms
        self.buffer_ms = 0.0
        self.vad.reset()
        self.user_turns += 1
        item = wire.user_audio_item(item_id)
        previous = self.add_item(Item(item_id, "user", item))
        await self.send(
            {"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous}
        )
        await self.send({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        await self.send({"type": "conversation.item.done", "item": item, "previous_item_id": previous})
        if not sc.transcription_enabled(self.session, self.variant):
            return
        text = self.responder.peek_turn().caller_transcript
        ids = {"item_id": item_id, "content_index": 0}
        if self.variant == "xai":
            await self.send(
                {"type": "conversation.item.input_audio_transcription.updated", **ids, "transcript": text}
            )
        else:
            await self.send(
                {"type": "conversation.item.input_audio_transcription.delta", **ids, "delta": text}
            )
        usage = self.script.transcription_usage or wire.transcription_usage_default(text, audio_ms)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                **ids,
                "transcript": text,
                "usage": usage,
            }
        )

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        if self.buffer_ms < 100:
            msg = (
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {self.buffer_ms:.2f}ms of audio."
            )
            await self.reject(Problem("input_audio_buffer_commit_empty", msg, None, event.get("event_id")))
            return
        await self.commit(self.speech_item or self.new_id("item"))
        self.speech_item = None

    async def on_input_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.buffer_ms = 0.0
        self.vad.reset()
        self.speech_item = None
        await self.send({"type": "input_audio_buffer.cleared"})

    async def on_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        msg = "output_audio_buffer.clear is only supported for WebRTC and SIP sessions."
        await self.reject(Problem("invalid_value", msg, "type", event.get("event_id")))

    # --- responses ---------------------------------------------------------------------------------

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self.responder.active is not None:
            msg = "Conversation already has an active response in progress."
            await self.reject(
                Problem("conversation_already_has_active_response", msg, None, event.get("event_id"))
            )
            return
        greeting = self.user_turns == 0 and not self.record.function_outputs
        await self.responder.start(kind="greeting" if greeting else "turn")

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        active: ActiveResponse | None = self.responder.active
        wanted = event.get("response_id")
        if active is None or (wanted is not None and wanted != active.record.id):
            # A race with response.done is normal, so this is not recorded as a client failure.
            await self.send_error(
                {
                    "type": "invalid_request_error",
                    "code": "response_cancel_not_active",
                    "message": "Cancellation failed: no active response found",
                    "param": None,
                    "event_id": event.get("event_id"),
                },
                failure=False,
            )
            return
        await self.responder.cancel("client_cancelled")
