"""The realtime model over a WebSocket: connection, reconnection and rotation around `RealtimeProtocol`.

The downlink lane iterates `events()`, which also owns the connection's life: when the
socket drops it reconnects with backoff (the caller hears silence meanwhile; their audio
is dropped, not queued, so the model never hears a stale burst), replays the session and
the conversation so far, and carries on; before the provider's session limit it rotates
to a fresh session the same way at a quiet moment. No task of its own: the call's task
group stays the only owner.

The receive loop is the hot path (tens of events per second per call), so it creates nothing per
event it can avoid: no timeout object per `receive()` (aiohttp's heartbeat pings a silent socket
every HEARTBEAT_SECONDS and declares it dead when no pong comes; with `autoping` off those pongs
come back to the loop, which is all the wake-up the rotation check needs on a quiet socket), no
debug note the logger would drop, no flush call when nothing is owed. Caller audio may go out a few
frames per `input_audio_buffer.append` (`uplink_batch_ms`): fewer messages, at the cost of holding
the first frame of a batch back by up to `uplink_batch_ms - 20` ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp

from bridge.audio.formats import AudioFormat
from bridge.logging import get_logger
from bridge.providers.base import (
    AudioOut,
    ModelFormats,
    ModelReconnected,
    ModelReconnecting,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
)
from bridge.providers.brief import AgentBrief
from bridge.providers.openai.dialect import Dialect
from bridge.providers.openai.events import ProtocolNote, RealtimeProtocol, SessionExpired
from bridge.settings_agents import RealtimeProviderSettings

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0)  # then 1 s apart until the give-up time
# A socket silent this long is pinged; no pong within half of it and it is dead (aiohttp's heartbeat).
# Its pong is also when a silent socket is checked for rotation: well inside the provider's own limit.
HEARTBEAT_SECONDS = 15.0
FRAME_MS = 20  # caller audio arrives in 20 ms frames
TEXT = aiohttp.WSMsgType.TEXT
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
HANDSHAKE_CODES = {
    401: "invalid_api_key",
    403: "permission_denied",
    404: "model_not_found",
    429: "rate_limited",
}


class RealtimeProvider(Provider):
    speaks_text = True  # a response's instructions can make the model say a given text

    def __init__(
        self,
        *,
        dialect: Dialect,
        settings: RealtimeProviderSettings,
        brief: AgentBrief,
        http: aiohttp.ClientSession,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.name = dialect.name
        self._dialect = dialect
        self._settings = settings
        self._http = http
        self._heartbeat = heartbeat_seconds
        self._log = get_logger(dialect.name)
        # Asked once per call: debug notes are built only when they would be logged.
        self._protocol = RealtimeProtocol(dialect, brief, debug_notes=self._log.is_enabled_for(logging.DEBUG))
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._rotate_at = 0.0  # loop time the session is due for rotation
        self._closing = False
        self._reconnecting = False
        self._swapping = False  # a rotation is replaying on the new socket: audio waits for it
        # Caller audio not yet sent: whole frames, and the read time of the oldest (for on_uplink_sent).
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._batch_oldest: float | None = None
        self._batch_limit = 0  # bytes that make a batch; 0 = every frame goes out alone
        self.reconnects = 0
        self.rotations = 0
        self.audio_dropped = 0  # caller chunks not sent while the model was away
        self.last_truncate_ms: int | None = None
        if self._protocol.resolved.unknown_placeholders:
            self._log.warning(
                "unknown_placeholders", names=sorted(self._protocol.resolved.unknown_placeholders)
            )

    # ------------------------------------------------------------------ Provider

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        fmt = self._dialect.model_format(leg)
        return ModelFormats(input=fmt, output=fmt)

    async def connect(self) -> None:
        self._ws = await self._open()

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        batch_ms = self._settings.uplink_batch_ms
        if batch_ms > FRAME_MS:
            # Half a frame short of the batch, so frames a byte shorter than 20 ms still make one.
            self._batch_limit = formats.input.bytes_for_ms(batch_ms - FRAME_MS / 2)
        self._protocol.configure(formats.input, formats.output, greet=greet)
        await self._flush()

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        ws = self._ws
        if ws is None or ws.closed or self._reconnecting:
            self.audio_dropped += 1 + self._drop_batch()
            return
        if self._batch_limit or self._swapping:
            if not self._batch or self._batch_oldest is None:
                self._batch_oldest = received_at
            self._batch.append(data)
            self._batch_bytes += len(data)
            if self._batch_bytes < self._batch_limit or self._swapping:
                return
            await self._send_batch(ws)
            return
        try:
            await ws.send_frame(self._protocol.append_audio(data), TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.audio_dropped += 1  # the reader notices the drop and reconnects
            return
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        self.last_truncate_ms = self._protocol.interrupt(played_ms, cancel=cancel_response)
        await self._flush()

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:
        self._protocol.tool_result(call_id, output, respond=respond)
        await self._flush()

    async def send_dtmf(self, text: str, *, respond: bool) -> None:
        """The caller's keys as a user text item (`DTMF: 4`), then a response if `respond`."""
        self._protocol.user_text(text, respond=respond)
        await self._flush()

    async def say(self, text: str, *, interrupt: bool) -> int:
        """A response whose instructions are to say `text` word for word (queued behind the active one
        unless `interrupt`, which cancels it)."""
        say_id = self._protocol.say(text, interrupt=interrupt)
        await self._flush()
        return say_id

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            if self._batch and not self._reconnecting:
                await self._send_batch(ws)  # the caller's last words, before the socket goes
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
        self._drop_batch()

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        pong_type = aiohttp.WSMsgType.PONG
        while not self._closing:
            ws = self._ws
            if ws is None:
                return
            message = await ws.receive()
            kind = message.type
            if kind is TEXT:
                now = loop.time()
                expired = False
                for item in protocol.receive(message.data, now):
                    if type(item) is AudioOut:
                        yield item
                    elif isinstance(item, ProtocolNote):
                        self._note(item)
                    elif isinstance(item, SessionExpired):
                        expired = True
                    else:
                        yield item
                if protocol.has_outgoing:
                    await self._flush()
                if not expired and (now < self._rotate_at or protocol.active_response is not None):
                    continue
            elif kind is pong_type:  # the heartbeat's answer: a silent socket's chance to rotate
                if loop.time() < self._rotate_at or protocol.active_response is not None:
                    continue
            elif kind is aiohttp.WSMsgType.PING:  # autoping is off (so pongs reach us): answer it
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await ws.pong(message.data)
                continue
            elif kind is aiohttp.WSMsgType.BINARY:
                self._log.debug("ignored_binary_message", bytes=len(message.data))
                continue
            else:  # CLOSE, CLOSING, CLOSED or ERROR: the model went away.
                if self._closing:
                    return
                self._log.warning("model_disconnected", close_code=ws.close_code)
                outcome = None
                async for event in self._reconnect():
                    outcome = event
                    yield event
                if not isinstance(outcome, ModelReconnected):
                    return
                continue
            # Due for rotation (or told the session expired), at a moment no response is playing.
            if await self._rotate():
                yield ModelReconnected(attempts=1, rotated=True)
            elif self._closing:
                return
            else:  # rotation failed: keep the old session while it lasts, and try again a bit later
                self._rotate_at = loop.time() + self._heartbeat

    # ------------------------------------------------------------------ connection

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        settings = self._settings
        url = self._dialect.url(settings.url, settings.model)
        headers = self._dialect.headers(settings.api_key.get_secret_value())
        try:
            ws = await self._http.ws_connect(
                url,
                headers=headers,
                heartbeat=self._heartbeat,
                autoping=False,
                max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            code = HANDSHAKE_CODES.get(exc.status, "provider_unavailable")
            raise ProviderUnavailable(
                f"the model refused the connection (HTTP {exc.status})", code=code
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"cannot reach the model: {type(exc).__name__}") from exc
        self._rotate_at = asyncio.get_running_loop().time() + settings.max_session_minutes * 60
        return ws

    async def _reconnect(self) -> AsyncIterator[ProviderEvent]:
        """Yields ModelReconnecting per attempt, then ModelReconnected or a fatal ProviderError."""
        self._reconnecting = True
        self._protocol.connection_lost()
        # Audio held for the lost socket is stale by the time a new one is up: never replayed.
        self.audio_dropped += self._drop_batch()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._settings.reconnect_give_up_seconds
        attempt = 0
        try:
            while not self._closing:
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                attempt += 1
                yield ModelReconnecting(attempt)
                await asyncio.sleep(delay)
                try:
                    ws = await self._open()
                except ProviderUnavailable as exc:
                    fatal = exc.code in ("invalid_api_key", "permission_denied", "model_not_found")
                    if fatal or loop.time() + delay > give_up_at:
                        self._log.warning("model_reconnect_failed", attempts=attempt, code=exc.code)
                        yield ProviderError(
                            exc.code if fatal else "provider_disconnected", str(exc), fatal=True
                        )
                        return
                    continue
                old, self._ws = self._ws, ws
                if old is not None:
                    await old.close()
                self._protocol.replay()
                await self._flush()
                self._reconnecting = False  # before the yield: the consumer may not resume us at once
                self.reconnects += 1
                self._log.info("model_reconnected", attempts=attempt)
                yield ModelReconnected(attempts=attempt)
                return
        finally:
            self._reconnecting = False

    async def _rotate(self) -> bool:
        """Move to a fresh model session before the provider's limit, replaying the conversation."""
        try:
            ws = await self._open()
        except ProviderUnavailable as exc:
            self._log.warning("model_rotation_failed", code=exc.code)
            return False
        # Until the new session is configured, caller audio waits (it would be heard in the wrong
        # format); then it goes out at once, whatever the batch size.
        self._swapping = True
        try:
            old, self._ws = self._ws, ws
            self._protocol.connection_lost()
            self._protocol.replay()
            await self._flush()
        finally:
            self._swapping = False
        if self._batch:
            await self._send_batch(ws)
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self.rotations += 1
        self._log.info("model_session_rotated", rotations=self.rotations)
        return True

    async def _flush(self) -> None:
        ws = self._ws
        for text in self._protocol.take_outgoing():
            if ws is None or ws.closed:
                return  # replayed on reconnect: nothing else is worth sending to a dead socket
            try:
                await ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                return

    # ------------------------------------------------------------------ uplink batches

    async def _send_batch(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """One append with every frame held, then the latency hook with the oldest frame's read time."""
        frames, oldest = self._batch, self._batch_oldest
        self._batch, self._batch_bytes, self._batch_oldest = [], 0, None
        try:
            await ws.send_frame(self._protocol.append_audio(b"".join(frames)), TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.audio_dropped += len(frames)  # the reader notices the drop and reconnects
            return
        if oldest is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(oldest)

    def _drop_batch(self) -> int:
        """Forget the audio held (the socket it was for is gone); returns how many frames that was."""
        dropped = len(self._batch)
        self._batch, self._batch_bytes, self._batch_oldest = [], 0, None
        return dropped

    def _note(self, note: ProtocolNote) -> None:
        self._log.log(LOG_LEVELS[note.level], "model_protocol_note", note=note.message, detail=note.detail)
