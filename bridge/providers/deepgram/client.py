"""Deepgram Voice Agent over a WebSocket: Settings, binary audio both ways, reconnection with history.

The downlink lane iterates `events()`, which also owns the connection's life: a dropped socket is
reopened with backoff and a new session configured with the conversation so far in
`agent.context.messages` (Deepgram's way to continue a conversation), without the greeting. No task
of its own: KeepAlive and the time-based Usage are checked whenever the receive loop wakes, and
aiohttp's heartbeat wakes it on a silent socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
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
    ResponseDone,
    Usage,
)
from bridge.providers.brief import AgentBrief, resolve
from bridge.providers.deepgram import events as wire
from bridge.providers.deepgram.conversation import AgentConversation, Note
from bridge.providers.deepgram.session_config import build_settings, model_format
from bridge.settings_agents import DeepgramSettings

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0)  # then 1 s apart until the give-up time
USAGE_EVERY_SECONDS = 2.0  # session time is reported this often (and at each turn end): a hangup loses less
HANDSHAKE_CODES = {401: "invalid_api_key", 403: "permission_denied", 429: "rate_limited"}
FATAL_HANDSHAKE = frozenset({"invalid_api_key", "permission_denied"})
TEXT, BINARY = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
GONE = frozenset(
    {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR}
)


class DeepgramProvider(Provider):
    name = "deepgram"
    speaks_text = True  # InjectAgentMessage makes the agent say a given text

    def __init__(self, *, settings: DeepgramSettings, brief: AgentBrief, http: aiohttp.ClientSession) -> None:
        self._settings = settings
        self._brief = brief
        self._resolved = resolve(brief)
        self._http = http
        self._log = get_logger("deepgram")
        self._conversation = AgentConversation()
        self._pending: deque[ProviderEvent] = deque()  # events made outside the receive loop
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._formats: ModelFormats | None = None
        self._ready = False  # SettingsApplied on the current socket: audio may flow
        self._closing = False
        self._heartbeat = settings.keepalive_seconds / 2  # wakes a silent loop for the KeepAlive check
        self._sent = 0  # frames sent on any socket, for the KeepAlive check
        self._sent_checked = 0
        self._quiet_since = 0.0
        self._usage_at = 0.0
        self.reconnects = 0
        self.keepalives = 0
        self.audio_dropped = 0
        if self._resolved.unknown_placeholders:
            self._log.warning("unknown_placeholders", names=sorted(self._resolved.unknown_placeholders))

    # ------------------------------------------------------------------ Provider

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        fmt = model_format(leg)
        return ModelFormats(input=fmt, output=fmt)

    async def connect(self) -> None:
        self._ws = await self._open()

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        self._formats = formats
        try:
            ws = self._ws or await self._open()
            self._ws = ws
            await self._configure(ws, greeting=self._resolved.opening_line if greet else "")
        except TimeoutError as exc:
            raise ProviderUnavailable(
                "Deepgram did not apply the settings in time", code="provider_timeout"
            ) from exc

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        ws = self._ws
        if ws is None or not self._ready or ws.closed:
            self.audio_dropped += 1  # before SettingsApplied, or while reconnecting: never replayed
            return
        try:
            await ws.send_bytes(data)
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.audio_dropped += 1  # the reader notices the drop and reconnects
            return
        self._sent += 1
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        # Deepgram has no truncate or cancel message: its own VAD stops the agent (UserStartedSpeaking).
        # A locally detected barge-in only stops the caller hearing the rest of the response.
        self._pending.extend(self._conversation.interrupt())

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:
        # `respond` cannot be honoured: the agent always carries on after a FunctionCallResponse.
        name = self._conversation.tool_name(call_id)
        if name is None:
            self._log.info("tool_result_dropped", call_id=call_id)  # asked on a socket since lost
            return
        await self._send(wire.function_call_response(call_id, name, output))

    async def send_dtmf(self, text: str, *, respond: bool) -> None:
        """Keys the agent should answer go in as the caller's words (InjectUserMessage); the others are
        added to its prompt (UpdatePrompt appends), which makes no reply."""
        if respond:
            await self._send(wire.inject_user_message(text))
            return
        addition = f"The caller pressed keys on their phone: {text}"
        self._conversation.prompt_additions.append(addition)
        await self._send(wire.update_prompt(addition))

    async def say(self, text: str, *, interrupt: bool) -> int:
        say_id = self._conversation.new_say(text)
        if interrupt:
            self._pending.extend(self._conversation.cancel_for_say())
        await self._send(wire.inject_agent_message(text, "interrupt" if interrupt else "queue"))
        return say_id

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    def final_usage(self) -> Usage | None:
        return self._conversation.usage(asyncio.get_running_loop().time())

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        conversation, pending = self._conversation, self._pending
        self._quiet_since = self._usage_at = loop.time()
        while not self._closing:
            while pending:
                yield pending.popleft()
            ws = self._ws
            if ws is None:
                return
            message = await ws.receive()
            kind = message.type
            now = loop.time()
            if kind is BINARY:
                yield conversation.audio(message.data, now)
            elif kind is TEXT:
                turn_over = False
                for item in self._parse(message.data):
                    if isinstance(item, Note):
                        self._log.info("deepgram_note", note=item.message, detail=item.detail)
                        continue
                    yield item
                    if isinstance(item, ProviderError):
                        await self.close()
                        return
                    turn_over = turn_over or isinstance(item, ResponseDone)
                if turn_over:
                    self._usage_at = now - USAGE_EVERY_SECONDS  # bill the turn now
            elif kind is aiohttp.WSMsgType.PING:  # autoping is off (so pongs reach us): answer it
                with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                    await ws.pong(message.data)
            elif kind in GONE:
                if self._closing:
                    return
                self._log.warning("model_disconnected", close_code=ws.close_code)
                for event in conversation.connection_lost(now):
                    yield event
                outcome: ProviderEvent | None = None
                async for event in self._reconnect():
                    outcome = event
                    yield event
                if not isinstance(outcome, ModelReconnected):
                    return
                continue
            # PONG (the heartbeat's answer on a silent socket) falls through to the periodic checks.
            if now - self._usage_at >= USAGE_EVERY_SECONDS:
                self._usage_at = now
                usage = conversation.usage(now)
                if usage is not None:
                    yield usage
            if self._sent != self._sent_checked:  # something went out since the last look
                self._sent_checked, self._quiet_since = self._sent, now
            elif now - self._quiet_since >= self._settings.keepalive_seconds and self._ready:
                await self._keepalive(now)

    # ------------------------------------------------------------------ internals

    def _parse(self, data: str) -> list[ProviderEvent | Note]:
        try:
            parsed = wire.parse_server_message(data)
        except wire.DeepgramMessageError as exc:
            self._log.warning("unparsable_server_message", error=str(exc))
            return []
        return self._conversation.receive(parsed)

    async def _keepalive(self, now: float) -> None:
        """Nothing sent for keepalive_seconds (a one-way leg, a silent caller): tell Deepgram we are here."""
        self.keepalives += 1
        await self._send(wire.KEEP_ALIVE)
        self._sent_checked, self._quiet_since = self._sent, now

    async def _send(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed or not self._ready:
            self._log.info("control_message_dropped")  # the socket is away; a new session starts afresh
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            await ws.send_str(text)
            self._sent += 1

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """A new socket, once the service's Welcome has come."""
        settings = self._settings
        key = settings.api_key.get_secret_value()
        try:
            ws = await self._http.ws_connect(
                settings.url,
                headers={"Authorization": f"Token {key}"},
                heartbeat=self._heartbeat,
                autoping=False,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            code = HANDSHAKE_CODES.get(exc.status, "provider_unavailable")
            raise ProviderUnavailable(
                f"Deepgram refused the connection (HTTP {exc.status})", code=code
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"cannot reach Deepgram: {type(exc).__name__}") from exc
        self._ready = False
        try:
            first = await self._next_text(ws)
            if not isinstance(wire.parse_server_message(first), wire.Welcome):
                raise ProviderUnavailable("Deepgram did not say Welcome", code="provider_protocol_error")
        except wire.DeepgramMessageError as exc:
            await ws.close()
            raise ProviderUnavailable(
                f"Deepgram's first message: {exc}", code="provider_protocol_error"
            ) from exc
        except BaseException:  # no Welcome in time, refused, or the call gave up: leave no socket behind
            await ws.close()
            raise
        self._conversation.connected(asyncio.get_running_loop().time())
        return ws

    async def _configure(self, ws: aiohttp.ClientWebSocketResponse, *, greeting: str) -> None:
        """Send Settings and wait for SettingsApplied (audio before it would be refused)."""
        assert self._formats is not None
        prompt = "\n\n".join([self._resolved.instructions, *self._conversation.prompt_additions]).strip()
        settings = build_settings(
            self._settings,
            self._formats,
            prompt=prompt,
            voice=self._brief.voice,
            language=self._brief.language,
            tools=self._brief.tools,
            greeting=greeting,
            history=self._conversation.history,
        )
        await ws.send_str(settings)
        while True:
            text = await self._next_text(ws)
            try:
                parsed = wire.parse_server_message(text)
            except wire.DeepgramMessageError as exc:
                self._log.warning("unparsable_server_message", error=str(exc))
                continue
            if isinstance(parsed, wire.SettingsApplied):
                self._ready = True
                return
            if isinstance(parsed, wire.ServerError):
                await ws.close()
                code = f"deepgram_{parsed.code.lower()}" if parsed.code else "deepgram_error"
                raise ProviderUnavailable(f"Deepgram refused the settings: {parsed.description}", code=code)
            for item in self._conversation.receive(parsed):
                if not isinstance(item, Note):
                    self._pending.append(item)

    async def _next_text(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        """The next text frame, within the connect timeout (binary before it is unexpected: skipped)."""
        async with asyncio.timeout(self._settings.connect_timeout_seconds):
            while True:
                message = await ws.receive()
                if message.type is TEXT:
                    return str(message.data)
                if message.type in GONE:
                    raise ProviderUnavailable(
                        f"Deepgram closed the connection (code {ws.close_code})", code="provider_unavailable"
                    )

    async def _reconnect(self) -> AsyncIterator[ProviderEvent]:
        """Yields ModelReconnecting per attempt, then ModelReconnected or a fatal ProviderError."""
        self._ready = False
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._settings.reconnect_give_up_seconds
        attempt = 0
        while not self._closing:
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            attempt += 1
            yield ModelReconnecting(attempt)
            await asyncio.sleep(delay)
            try:
                ws = await self._open()
                old, self._ws = self._ws, ws
                if old is not None:
                    await old.close()
                await self._configure(ws, greeting="")  # the conversation goes on: no second greeting
            except (ProviderUnavailable, TimeoutError) as exc:
                code = exc.code if isinstance(exc, ProviderUnavailable) else "provider_timeout"
                fatal = code in FATAL_HANDSHAKE or code.startswith("deepgram_")
                if fatal or loop.time() + delay > give_up_at:
                    self._log.warning("model_reconnect_failed", attempts=attempt, code=code)
                    yield ProviderError(code if fatal else "provider_disconnected", str(exc), fatal=True)
                    return
                continue
            self.reconnects += 1
            self._log.info("model_reconnected", attempts=attempt)
            yield ModelReconnected(attempts=attempt)
            return
