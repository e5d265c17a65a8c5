"""An Ultravox call: created over REST (`POST url`, `X-API-Key`), then joined over its `joinUrl` socket.

The call is created in `start`, not `connect`: its sample rates are the leg's, known only then (the
connect timeout covers both the REST call and the socket). Audio is binary s16le both ways; data
messages are JSON text (see `events.py`). A dropped socket cannot be rejoined, so the provider creates
a new call with `?priorCallId=<the lost call>`, which Ultravox documents as continuing the prior
call's conversation; if no call comes back within `reconnect_give_up_seconds` the provider reports a
fatal error for failover to act on. Like the OpenAI client, no task of its own: `events()` owns the
connection's life.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from bridge.audio.formats import SLIN, SLIN16, SLIN24, SLIN48, AudioFormat, Encoding
from bridge.logging import get_logger
from bridge.providers.base import (
    HangupRequested,
    ModelFormats,
    ModelReconnected,
    ModelReconnecting,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
    Usage,
)
from bridge.providers.brief import AgentBrief, resolve
from bridge.providers.ultravox.call_request import (
    FATAL_CODES,
    CallSpec,
    CreatedCall,
    call_body,
    created_call,
    voice_for,
)
from bridge.providers.ultravox.events import (
    USAGE_EVERY_SECONDS,
    CallStarted,
    ProtocolNote,
    UltravoxProtocol,
)
from bridge.settings_agents import UltravoxSettings

RECONNECT_DELAYS = (0.1, 0.25, 0.5, 1.0)  # then 1 s apart until the give-up time
# A quiet socket is pinged this often (no pong within half of it: dead); the pong is also when a quiet
# call's time is reported, so the heartbeat is the usage period.
HEARTBEAT_SECONDS = USAGE_EVERY_SECONDS
RATES = {f.sample_rate: f for f in (SLIN, SLIN16, SLIN24, SLIN48)}  # PCM rates sent as they are
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
SEND_ERRORS = (ConnectionError, aiohttp.ClientError, RuntimeError)


class UltravoxProvider(Provider):
    name = "ultravox"
    speaks_text = True  # forced_agent_message: the agent says the given text

    def __init__(
        self,
        *,
        settings: UltravoxSettings,
        brief: AgentBrief,
        http: aiohttp.ClientSession,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._settings = settings
        self._brief = brief
        self._resolved = resolve(brief)
        self._http = http
        self._heartbeat = heartbeat_seconds
        self._log = get_logger("ultravox")
        self._protocol = UltravoxProtocol()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._spec: CallSpec | None = None
        self._greet = True
        self._closing = False
        self._reconnecting = False
        self.reconnects = 0
        self.audio_dropped = 0
        self.calls_created = 0
        if self._resolved.unknown_placeholders:
            self._log.warning("unknown_placeholders", names=sorted(self._resolved.unknown_placeholders))

    # ------------------------------------------------------------------ Provider

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        """PCM at the leg's rate when Ultravox takes it (zero transcode); G.711 legs go as 8 kHz PCM."""
        if leg.encoding is Encoding.SLIN and leg.sample_rate in RATES:
            fmt = leg
        elif leg.encoding is Encoding.SLIN:
            fmt = SLIN48 if leg.sample_rate > 24000 else SLIN16
        else:
            fmt = SLIN
        return ModelFormats(input=fmt, output=fmt)

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        brief, settings = self._brief, self._settings
        self._greet = greet
        self._spec = CallSpec(
            model=settings.model,
            voice=voice_for(settings.voice, brief.voice),
            language=brief.language,
            silence_ms=brief.silence_duration_ms,
            input_rate=formats.input.sample_rate,
            output_rate=formats.output.sample_rate,
            client_buffer_ms=settings.client_buffer_ms,
            tools=tuple(brief.tools),
        )
        try:
            async with asyncio.timeout(settings.connect_timeout_seconds):
                self._ws = await self._join(await self._create(resumed=False))
        except TimeoutError as exc:
            raise ProviderUnavailable("ultravox did not answer in time", code="provider_timeout") from exc
        self._protocol.joined(asyncio.get_running_loop().time())

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        ws = self._ws
        if ws is None or ws.closed or self._reconnecting:
            self.audio_dropped += 1
            return
        try:
            await ws.send_bytes(data)
        except SEND_ERRORS:
            self.audio_dropped += 1  # the reader notices the drop and reconnects
            return
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        # No truncate in the protocol, and no way to stop the agent from here: see UltravoxProtocol.
        self._protocol.interrupt()

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
            self._protocol.hang_up()  # our end of the call: Ultravox ends it at once
            for text in self._protocol.take_outgoing():
                with contextlib.suppress(*SEND_ERRORS):
                    await ws.send_str(text)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    def final_usage(self) -> Usage | None:
        return self._protocol.bill(asyncio.get_running_loop().time())

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        text, binary = aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY
        while not self._closing:
            ws = self._ws
            if ws is None:
                return
            message = await ws.receive()
            kind = message.type
            if kind is binary:
                now = loop.time()
                yield protocol.audio(message.data, now)
                usage = protocol.usage_due(now)
                if usage is not None:
                    yield usage
            elif kind is text:
                for item in protocol.receive(message.data, loop.time()):
                    if isinstance(item, ProtocolNote):
                        self._note(item)
                    elif isinstance(item, CallStarted):
                        self._log.info("ultravox_call_started", ultravox_call_id=item.call_id)
                    else:
                        yield item
                if protocol.has_outgoing:
                    await self._flush()
            elif kind is aiohttp.WSMsgType.PING:
                with contextlib.suppress(*SEND_ERRORS):
                    await ws.pong(message.data)
            elif kind is aiohttp.WSMsgType.PONG:  # the heartbeat's answer: a quiet call's time is reported
                usage = protocol.usage_due(loop.time())
                if usage is not None:
                    yield usage
            else:  # CLOSE, CLOSING, CLOSED or ERROR
                if self._closing:
                    return
                for event in protocol.connection_lost(loop.time()):
                    yield event
                # Only a close frame says so (aiohttp also reports a bare EOF as 1000).
                if kind is aiohttp.WSMsgType.CLOSE and message.data == aiohttp.WSCloseCode.OK:
                    # Ultravox ended the call itself (its time limit, an inactivity hang-up).
                    self._log.info("ultravox_call_ended")
                    yield HangupRequested("ultravox ended the call")
                    return
                self._log.warning("model_disconnected", close_code=ws.close_code)
                outcome: ProviderEvent | None = None
                async for event in self._reconnect():
                    outcome = event
                    yield event
                if not isinstance(outcome, ModelReconnected):
                    return

    # ------------------------------------------------------------------ connection

    async def _create(self, *, resumed: bool) -> CreatedCall:
        """POST the create-call (a resumed call names the lost one as its prior call)."""
        assert self._spec is not None
        settings = self._settings
        url = URL(settings.url)
        if resumed and self._protocol.call_id:
            url = url.update_query(priorCallId=self._protocol.call_id)
        body = call_body(self._spec, self._resolved, greet=self._greet, resumed=resumed)
        headers = {"X-API-Key": settings.api_key.get_secret_value()}
        try:
            async with self._http.post(url, json=body, headers=headers) as response:
                created = created_call(response.status, await response.text())
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"cannot reach ultravox: {type(exc).__name__}") from exc
        self.calls_created += 1
        if created.call_id:
            self._protocol.call_id = created.call_id
        return created

    async def _join(self, call: CreatedCall) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._http.ws_connect(
                call.join_url,
                heartbeat=self._heartbeat,
                autoping=False,
                max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise ProviderUnavailable(f"ultravox refused the call's socket (HTTP {exc.status})") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"cannot join the ultravox call: {type(exc).__name__}") from exc

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
                    async with asyncio.timeout(max(give_up_at - loop.time(), 0.1)):
                        ws = await self._join(await self._create(resumed=True))
                except (ProviderUnavailable, TimeoutError) as exc:
                    code = exc.code if isinstance(exc, ProviderUnavailable) else "provider_timeout"
                    fatal = code in FATAL_CODES
                    if fatal or loop.time() + delay > give_up_at:
                        self._log.warning("model_reconnect_failed", attempts=attempt, code=code)
                        yield ProviderError(code if fatal else "provider_disconnected", str(exc), fatal=True)
                        return
                    continue
                old, self._ws = self._ws, ws
                if old is not None:
                    await old.close()
                self._protocol.joined(loop.time())
                self._reconnecting = False  # before the yield: the consumer may not resume us at once
                self.reconnects += 1
                self._log.info("model_reconnected", attempts=attempt)
                yield ModelReconnected(attempts=attempt)
                return
        finally:
            self._reconnecting = False

    async def _flush(self) -> None:
        ws = self._ws
        for text in self._protocol.take_outgoing():
            if ws is None or ws.closed:
                return  # a message for a lost call has no one to go to
            try:
                await ws.send_str(text)
            except SEND_ERRORS:
                return

    def _note(self, note: ProtocolNote) -> None:
        self._log.log(LOG_LEVELS[note.level], "model_protocol_note", note=note.message, detail=note.detail)
