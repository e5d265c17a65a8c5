"""Gemini Live over its WebSocket: the setup handshake, resumption on drops and on `goAway`.

Every connection starts with `setup` and waits for `setupComplete`. The server hands out session
resumption handles as the call goes; when the socket drops (or the ~10 minute connection limit nears:
`goAway`), a new connection resumes the session with the latest handle, so the model keeps the whole
conversation and the caller only hears a short silence. With no handle, or one refused, the new
session is told the conversation so far in its instructions. The server reports errors only as a
close code and reason (1007 invalid argument or key, 1008 policy / not found, 1011 internal).
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
from bridge.providers.gemini.events import GeminiProtocol
from bridge.providers.gemini.setup import OUTPUT, input_format
from bridge.providers.gemini.wire import GoAway, ProtocolNote, SetupComplete
from bridge.settings_agents import GeminiSettings

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0)  # then 1 s apart until the give-up time
HEARTBEAT_SECONDS = 15.0  # Gemini has no app-level ping: WebSocket pings find a dead socket
TEXT = aiohttp.WSMsgType.TEXT
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
FATAL_CODES = frozenset({"invalid_api_key", "permission_denied", "model_not_found", "invalid_argument"})


def close_code_error(code: int | None, reason: str) -> tuple[str, bool]:
    """The bridge's error code for a close the server sent, and whether retrying is pointless."""
    text = reason.lower()
    if code == 1007:
        if "api key" in text or "api_key" in text:
            return "invalid_api_key", True
        return "invalid_argument", True
    if code == 1008:
        if "not found" in text or "not supported" in text:
            return "model_not_found", True
        if "permission" in text or "denied" in text:
            return "permission_denied", True
        return "policy_violation", False  # e.g. a resumption handle refused: a fresh session may do
    if code == 1011 and ("quota" in text or "exhausted" in text):
        return "quota_exceeded", True
    return "provider_disconnected", False


class GeminiProvider(Provider):
    name = "gemini"
    speaks_text = True  # a user turn asking for the text verbatim (see GeminiProtocol.say)

    def __init__(
        self,
        *,
        settings: GeminiSettings,
        brief: AgentBrief,
        http: aiohttp.ClientSession,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._settings = settings
        self._http = http
        self._heartbeat = heartbeat_seconds
        self._log = get_logger("gemini")
        self._protocol = GeminiProtocol(
            brief,
            settings.model,
            default_voice=settings.voice,
            debug_notes=self._log.is_enabled_for(logging.DEBUG),
        )
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._closing = False
        self._reconnecting = False
        self._rotate_due = False  # goAway came: move to a new connection at the next quiet moment
        self.reconnects = 0
        self.rotations = 0
        self.audio_dropped = 0
        if self._protocol.resolved.unknown_placeholders:
            self._log.warning(
                "unknown_placeholders", names=sorted(self._protocol.resolved.unknown_placeholders)
            )

    # ------------------------------------------------------------------ Provider

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        """PCM in at the leg's own rate when it is 8, 16 or 24 kHz (declared in the MIME type; G.711 is
        decoded), else 16 kHz; out always 24 kHz, the only rate Gemini speaks."""
        return ModelFormats(input=input_format(leg), output=OUTPUT)

    async def connect(self) -> None:
        self._ws = await self._open()

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        self._protocol.configure(formats.input, greet=greet)
        await self._flush()

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        ws = self._ws
        if ws is None or ws.closed or self._reconnecting or self._protocol.input_format is None:
            self.audio_dropped += 1  # never queued: a stale burst after a reconnect helps nobody
            return
        try:
            await ws.send_frame(self._protocol.append_audio(data), TEXT)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.audio_dropped += 1  # the reader notices the drop and reconnects
            return
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        self._protocol.interrupt(played_ms, cancel=cancel_response)

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:
        self._protocol.tool_result(call_id, output, respond=respond)
        await self._flush()

    async def send_dtmf(self, text: str, *, respond: bool) -> None:
        self._protocol.user_text(text, respond=respond)
        await self._flush()

    async def say(self, text: str, *, interrupt: bool) -> int:
        say_id = self._protocol.say(text, interrupt=interrupt)
        await self._flush()
        return say_id

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        while not self._closing:
            ws = self._ws
            if ws is None:
                return
            message = await ws.receive()
            kind = message.type
            if kind is TEXT or kind is aiohttp.WSMsgType.BINARY:  # the service sends JSON in either
                for item in protocol.receive(message.data, loop.time()):
                    if type(item) is AudioOut:
                        yield item
                    elif isinstance(item, ProtocolNote):
                        self._log.log(LOG_LEVELS[item.level], "model_protocol_note", note=item.message)
                    elif isinstance(item, GoAway):
                        self._log.info("model_go_away", time_left=item.time_left)
                        self._rotate_due = True
                    elif not isinstance(item, SetupComplete):
                        yield item
                if protocol.has_outgoing:
                    await self._flush()
                if self._rotate_due and not protocol.busy:
                    self._rotate_due = False
                    yield ModelReconnecting(1)
                    if await self._rotate():
                        yield ModelReconnected(attempts=1, rotated=True)
                continue
            if kind is aiohttp.WSMsgType.PING:
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await ws.pong(message.data)
                continue
            if kind is aiohttp.WSMsgType.PONG:
                continue
            if self._closing:  # CLOSE, CLOSING, CLOSED or ERROR
                return
            code, _ = close_code_error(ws.close_code, str(message.extra or ""))
            self._log.warning("model_disconnected", close_code=ws.close_code, code=code)
            for lost in protocol.connection_lost():
                if not isinstance(lost, ProtocolNote | SetupComplete | GoAway):
                    yield lost
            outcome: ProviderEvent | None = None
            async for event in self._reconnect():
                outcome = event
                yield event
            if not isinstance(outcome, ModelReconnected):
                return

    # ------------------------------------------------------------------ connection

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """A connection with the session set up (resumed when a handle is known)."""
        try:
            return await asyncio.wait_for(self._handshake(), self._settings.connect_timeout_seconds)
        except TimeoutError as exc:
            raise ProviderUnavailable(
                "the model did not answer the setup in time", code="provider_timeout"
            ) from exc

    async def _handshake(self) -> aiohttp.ClientWebSocketResponse:
        headers = {"x-goog-api-key": self._settings.api_key.get_secret_value()}
        try:
            ws = await self._http.ws_connect(
                self._settings.url,
                headers=headers,
                heartbeat=self._heartbeat,
                max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            code = {401: "invalid_api_key", 403: "permission_denied", 404: "model_not_found"}.get(
                exc.status, "provider_unavailable"
            )
            raise ProviderUnavailable(
                f"the model refused the connection (HTTP {exc.status})", code=code
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"cannot reach the model: {type(exc).__name__}") from exc
        try:
            await ws.send_str(self._protocol.setup())
            while True:
                message = await ws.receive()
                if message.type is TEXT or message.type is aiohttp.WSMsgType.BINARY:
                    items = self._protocol.receive(message.data)
                    if any(isinstance(item, SetupComplete) for item in items):
                        return ws
                    continue
                if message.type in (aiohttp.WSMsgType.PING, aiohttp.WSMsgType.PONG):
                    continue
                reason = str(message.extra or "")
                code, _ = close_code_error(ws.close_code, reason)
                raise ProviderUnavailable(
                    f"the model closed the session at setup ({ws.close_code}: {reason[:200]})", code=code
                )
        except BaseException:
            with contextlib.suppress(Exception):
                await ws.close()
            raise

    async def _open_resuming(self) -> aiohttp.ClientWebSocketResponse:
        """Resume with the handle; if the server refuses it, a fresh session told the conversation."""
        try:
            return await self._open()
        except ProviderUnavailable as exc:
            if self._protocol.handle is None or exc.code in FATAL_CODES - {"invalid_argument"}:
                raise
            self._log.warning("model_resume_refused", code=exc.code)
            self._protocol.handle = None
            return await self._open()

    async def _reconnect(self) -> AsyncIterator[ProviderEvent]:
        """Yields ModelReconnecting per attempt, then ModelReconnected or a fatal ProviderError."""
        self._reconnecting = True
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
                    ws = await self._open_resuming()
                except ProviderUnavailable as exc:
                    fatal = exc.code in FATAL_CODES
                    if fatal or loop.time() + delay > give_up_at:
                        self._log.warning("model_reconnect_failed", attempts=attempt, code=exc.code)
                        yield ProviderError(
                            exc.code if fatal else "provider_disconnected", str(exc), fatal=True
                        )
                        return
                    continue
                old, self._ws = self._ws, ws
                if old is not None:
                    with contextlib.suppress(Exception):
                        await old.close()
                self._protocol.resumed()
                await self._flush()
                self._reconnecting = False  # before the yield: the consumer may not resume us at once
                self.reconnects += 1
                self._log.info("model_reconnected", attempts=attempt)
                yield ModelReconnected(attempts=attempt)
                return
        finally:
            self._reconnecting = False

    async def _rotate(self) -> bool:
        """After `goAway`, at a quiet moment: a new connection resuming the session, then the old one
        closes. Caller audio goes to the old socket until the new one is live."""
        try:
            ws = await self._open_resuming()
        except ProviderUnavailable as exc:
            self._log.warning("model_rotation_failed", code=exc.code)
            return False  # the old connection's end then reconnects the usual way
        old, self._ws = self._ws, ws
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        self._protocol.resumed()
        await self._flush()
        self.rotations += 1
        self._log.info("model_session_rotated", rotations=self.rotations)
        return True

    async def _flush(self) -> None:
        ws = self._ws
        for text in self._protocol.take_outgoing():
            if ws is None or ws.closed:
                return  # lost with the socket (the reader reconnects; a resumed session kept its context)
            try:
                await ws.send_str(text)
            except (ConnectionError, aiohttp.ClientError, RuntimeError):
                return
