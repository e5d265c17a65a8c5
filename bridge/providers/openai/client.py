"""The realtime model over a WebSocket: connection, reconnection and rotation around `RealtimeProtocol`.

The downlink lane iterates `events()`, which also owns the connection's life: when the
socket drops it reconnects with backoff (the caller hears silence meanwhile; their audio
is dropped, not queued, so the model never hears a stale burst), replays the session and
the conversation so far, and carries on; before the provider's session limit it rotates
to a fresh session the same way at a quiet moment. No task of its own: the call's task
group stays the only owner.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp

from bridge.audio.formats import AudioFormat
from bridge.logging import get_logger
from bridge.providers.base import (
    ModelFormats,
    ModelReconnected,
    ModelReconnecting,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
)
from bridge.providers.openai.dialect import Dialect
from bridge.providers.openai.events import ProtocolNote, RealtimeProtocol, SessionExpired
from bridge.providers.openai.session_config import AgentBrief
from bridge.settings_agents import RealtimeProviderSettings

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0)  # then 1 s apart until the give-up time
IDLE_CHECK_SECONDS = 1.0  # how often a silent socket is checked for rotation
HANDSHAKE_CODES = {
    401: "invalid_api_key",
    403: "permission_denied",
    404: "model_not_found",
    429: "rate_limited",
}


class RealtimeProvider(Provider):
    def __init__(
        self,
        *,
        dialect: Dialect,
        settings: RealtimeProviderSettings,
        brief: AgentBrief,
        http: aiohttp.ClientSession,
    ) -> None:
        self.name = dialect.name
        self._dialect = dialect
        self._settings = settings
        self._http = http
        self._protocol = RealtimeProtocol(dialect, brief)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._connected_at = 0.0
        self._closing = False
        self._reconnecting = False
        self.reconnects = 0
        self.rotations = 0
        self.audio_dropped = 0  # caller chunks not sent while the model was away
        self.last_truncate_ms: int | None = None
        self._log = get_logger(dialect.name)
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

    async def start(self, formats: ModelFormats) -> None:
        self._protocol.configure(formats.input, formats.output, greet=True)
        await self._flush()

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        ws = self._ws
        if ws is None or ws.closed or self._reconnecting:
            self.audio_dropped += 1
            return
        try:
            await ws.send_str(self._protocol.append_audio(data))
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.audio_dropped += 1  # the reader notices the drop and reconnects

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        self.last_truncate_ms = self._protocol.interrupt(played_ms, cancel=cancel_response)
        await self._flush()

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:
        self._protocol.tool_result(call_id, output, respond=respond)
        await self._flush()

    async def close(self) -> None:
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        while not self._closing:
            ws = self._ws
            if ws is None:
                return
            try:
                message = await ws.receive(timeout=IDLE_CHECK_SECONDS)
            except TimeoutError:
                message = None
            if message is None or message.type is aiohttp.WSMsgType.TEXT:
                expired = False
                for item in self._protocol.receive(message.data) if message is not None else ():
                    if isinstance(item, ProtocolNote):
                        self._note(item)
                    elif isinstance(item, SessionExpired):
                        expired = True
                    else:
                        yield item
                await self._flush()
                due = loop.time() - self._connected_at > self._settings.max_session_minutes * 60
                if expired or (due and self._protocol.active_response is None):
                    if await self._rotate():
                        yield ModelReconnected(attempts=1, rotated=True)
                    elif self._closing:
                        return
                    else:
                        expired = False  # rotation failed: keep the old session while it lasts
                continue
            if message.type is aiohttp.WSMsgType.BINARY:
                self._log.debug("ignored_binary_message", bytes=len(message.data))
                continue
            # CLOSE, CLOSING, CLOSED or ERROR: the model went away.
            if self._closing:
                return
            self._log.warning("model_disconnected", close_code=ws.close_code)
            outcome = None
            async for event in self._reconnect():
                outcome = event
                yield event
            if not isinstance(outcome, ModelReconnected):
                return

    # ------------------------------------------------------------------ connection

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        settings = self._settings
        url = self._dialect.url(settings.url, settings.model)
        headers = self._dialect.headers(settings.api_key.get_secret_value())
        try:
            ws = await self._http.ws_connect(
                url,
                headers=headers,
                heartbeat=15.0,
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
        self._connected_at = asyncio.get_running_loop().time()
        return ws

    async def _reconnect(self) -> AsyncIterator[ProviderEvent]:
        """Yields ModelReconnecting per attempt, then ModelReconnected or a fatal ProviderError."""
        self._reconnecting = True
        self._protocol.connection_lost()
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
        old, self._ws = self._ws, ws
        self._protocol.connection_lost()
        self._protocol.replay()
        await self._flush()
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

    def _note(self, note: ProtocolNote) -> None:
        log = {"debug": self._log.debug, "info": self._log.info, "warning": self._log.warning}[note.level]
        log("model_protocol_note", note=note.message, detail=note.detail)
