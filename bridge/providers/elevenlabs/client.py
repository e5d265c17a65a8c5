"""ElevenLabs Agents over the Conversational AI WebSocket: one conversation per call.

`connect()` opens the conversation (through a signed URL when a key is set: a private agent) and sends
`conversation_initiation_client_data` at once: the prompt, first message and language overrides come
from the call's brief, so the agent can greet as soon as it is up. It then waits for
`conversation_initiation_metadata`, which carries the agent's audio formats; the runner awaits
`connect()` before it calls `negotiate()`, so the formats are known by then (set on the agent, not per
conversation: the session transcodes when they differ from the leg).

A conversation cannot be resumed on a new socket (the SDK has no resume, the protocol no session
token), so a dropped socket is a fatal `ProviderError`: the runner hands the call to a fallback provider
with the conversation so far. A normal close (1000) is the agent ending the conversation (its system
end_call, its maximum duration): the call ends as hung up by the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from urllib.parse import urlencode, urlsplit, urlunsplit

import aiohttp

from bridge.audio.formats import AudioFormat
from bridge.logging import get_logger
from bridge.providers.base import (
    HangupRequested,
    ModelFormats,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
    Usage,
)
from bridge.providers.brief import AgentBrief, resolve
from bridge.providers.elevenlabs.events import (
    ConvaiProtocol,
    Metadata,
    ProtocolNote,
    audio_message,
    initiation_message,
    text_message,
    tool_result_message,
)
from bridge.settings_agents import ElevenLabsSettings

TEXT = aiohttp.WSMsgType.TEXT
HEARTBEAT_SECONDS = 15.0
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
HTTP_CODES = {401: "invalid_api_key", 403: "permission_denied", 404: "model_not_found", 429: "rate_limited"}
NORMAL_CLOSE = 1000
POLICY_CLOSE = 1008  # what ElevenLabs closes with when it refuses a message or an override


def signed_url_endpoint(ws_url: str) -> str:
    """The REST endpoint that signs a conversation URL, beside the WebSocket path."""
    parts = urlsplit(ws_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/get-signed-url", "", ""))


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class ElevenLabsProvider(Provider):
    name = "elevenlabs"
    # The protocol has no way to make the agent speak a given text: `user_message` is the caller's
    # turn, `contextual_update` background for its LLM; the first message is fixed at initiation.
    speaks_text = False

    def __init__(
        self,
        *,
        settings: ElevenLabsSettings,
        brief: AgentBrief,
        http: aiohttp.ClientSession,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ) -> None:
        self._settings = settings
        self._brief = brief
        self._resolved = resolve(brief)
        self._http = http
        self._heartbeat = heartbeat_seconds
        self._log = get_logger("elevenlabs")
        self._protocol = ConvaiProtocol(end_call_tool=settings.end_call_tool)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._metadata: Metadata | None = None
        self._closing = False
        self.audio_dropped = 0
        self.last_interrupt_played_ms: float | None = None
        if self._resolved.unknown_placeholders:
            self._log.warning("unknown_placeholders", names=sorted(self._resolved.unknown_placeholders))

    # ------------------------------------------------------------------ Provider

    @property
    def conversation_id(self) -> str:
        return self._metadata.conversation_id if self._metadata else ""

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        metadata = self._metadata
        if metadata is None or metadata.input is None or metadata.output is None:
            raise ProviderUnavailable("the agent's audio formats are not known", code="provider_unavailable")
        # The agent's own formats: equal to the leg only when the agent is set up that way.
        return ModelFormats(input=metadata.input, output=metadata.output)

    async def connect(self) -> None:
        url = await self._conversation_url()
        try:
            ws = await self._http.ws_connect(
                url,
                heartbeat=self._heartbeat,
                max_msg_size=16 * 1024 * 1024,
                timeout=aiohttp.ClientWSTimeout(ws_close=1.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            code = HTTP_CODES.get(exc.status, "provider_unavailable")
            raise ProviderUnavailable(
                f"ElevenLabs refused the conversation (HTTP {exc.status})", code=code
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ProviderUnavailable(f"cannot reach ElevenLabs: {type(exc).__name__}") from exc
        self._ws = ws
        message = initiation_message(self._resolved, self._brief, self._settings.overrides)
        try:
            await ws.send_str(json.dumps(message))
            metadata = await asyncio.wait_for(
                self._await_metadata(ws), self._settings.connect_timeout_seconds
            )
        except TimeoutError as exc:
            await ws.close()
            raise ProviderUnavailable(
                "ElevenLabs sent no conversation metadata", code="provider_timeout"
            ) from exc
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            raise ProviderUnavailable(f"ElevenLabs connection failed: {type(exc).__name__}") from exc
        if metadata.input is None or metadata.output is None:
            await ws.close()
            raise ProviderUnavailable(
                "unsupported agent audio formats "
                f"{metadata.input_format_name!r}/{metadata.output_format_name!r}",
                code="unsupported_format",
            )
        self._metadata = metadata
        self._protocol.started(asyncio.get_running_loop().time())
        self._log.info(
            "elevenlabs_conversation_started",
            conversation_id=metadata.conversation_id,
            input_format=metadata.input_format_name,
            output_format=metadata.output_format_name,
            # Client tools cannot be declared per conversation: the agent must define these by name.
            client_tools=[self._tool_name(t.name) for t in self._brief.tools],
        )

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        # The greeting was set at initiation (its first_message): the agent may already be speaking it.
        if not greet:
            self._protocol.mute_greeting()

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            self.audio_dropped += 1
            return
        try:
            await ws.send_str(audio_message(data))
        except (ConnectionError, aiohttp.ClientError, RuntimeError):
            self.audio_dropped += 1  # the reader sees the socket go and reports it
            return
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        """The protocol has no truncate: ElevenLabs cuts its own record of the reply at its interruption
        (an `agent_response_correction` follows). Nor can a client cancel the agent's reply, so a local
        barge-in drops the rest of it here, until the caller's turn or the agent's own interruption."""
        self.last_interrupt_played_ms = played_ms
        if cancel_response:
            self._protocol.mute_until_next_turn()

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:
        # `respond` has no wire form: the agent decides whether to speak after a client tool's result.
        await self._send(tool_result_message(call_id, output))

    async def send_dtmf(self, text: str, *, respond: bool) -> None:
        """The caller's keys as text: a `user_message` the agent answers, or a `contextual_update`."""
        await self._send(text_message(text, respond=respond))

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)

    def final_usage(self) -> Usage | None:
        return self._protocol.usage(asyncio.get_running_loop().time())

    async def events(self) -> AsyncIterator[ProviderEvent]:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        while not self._closing:
            ws = self._ws
            if ws is None:
                return
            idle_at = protocol.response_idle_at
            try:
                if idle_at is None:
                    message = await ws.receive()
                else:  # a reply is open: wake when its audio stops, to end it (a timeout only then)
                    message = await ws.receive(timeout=max(idle_at - loop.time(), 0.001))
            except TimeoutError:
                for event in protocol.audio_idle(loop.time()):
                    if not isinstance(event, Metadata | ProtocolNote):
                        yield event
                continue
            if message.type is TEXT:
                for item in protocol.receive(message.data, loop.time()):
                    if isinstance(item, ProtocolNote):
                        self._note(item)
                    elif not isinstance(item, Metadata):
                        yield item
                if protocol.has_outgoing:
                    await self._flush()
                continue
            if message.type is aiohttp.WSMsgType.BINARY:
                self._log.debug("ignored_binary_message", bytes=len(message.data))
                continue
            if self._closing:
                return
            # CLOSE, CLOSING, CLOSED or ERROR: the conversation is over, one way or another.
            usage = protocol.usage(loop.time())
            if usage is not None:
                yield usage
            for event in protocol.audio_idle(float("inf")):
                if not isinstance(event, Metadata | ProtocolNote):
                    yield event
            yield self._ended(message)
            return

    def _ended(self, message: aiohttp.WSMessage) -> ProviderEvent:
        """What the socket closing means: the agent ended the conversation (a 1000 close frame), or it was
        lost (anything else; no resume on a new socket, so fatal: the runner's failover takes over)."""
        code = message.data if message.type is aiohttp.WSMsgType.CLOSE else None
        reason = message.extra if isinstance(message.extra, str) else ""
        if code == NORMAL_CLOSE:
            self._log.info("elevenlabs_conversation_ended", conversation_id=self.conversation_id)
            return HangupRequested("agent_ended_conversation")
        self._log.warning("model_disconnected", close_code=code, reason=reason[:200])
        error = "provider_rejected" if code == POLICY_CLOSE else "provider_disconnected"
        detail = f"ElevenLabs closed the conversation ({code or 'connection lost'}) {reason[:200]}"
        return ProviderError(error, detail.strip(), fatal=True)

    def _note(self, note: ProtocolNote) -> None:
        self._log.log(LOG_LEVELS[note.level], "model_protocol_note", note=note.message, detail=note.detail)

    # ------------------------------------------------------------------ connection

    async def _conversation_url(self) -> str:
        settings = self._settings
        agent_id = settings.model
        key = settings.api_key.get_secret_value()
        if not key:
            return with_query(settings.url, agent_id=agent_id)  # a public agent: no auth at all
        endpoint = signed_url_endpoint(settings.url)
        timeout = aiohttp.ClientTimeout(total=settings.connect_timeout_seconds)
        try:
            async with self._http.get(
                endpoint, params={"agent_id": agent_id}, headers={"xi-api-key": key}, timeout=timeout
            ) as response:
                if response.status != 200:
                    code = HTTP_CODES.get(response.status, "provider_unavailable")
                    raise ProviderUnavailable(
                        f"ElevenLabs refused a signed URL (HTTP {response.status})", code=code
                    )
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            raise ProviderUnavailable(f"cannot get an ElevenLabs signed URL: {type(exc).__name__}") from exc
        signed = body.get("signed_url") if isinstance(body, dict) else None
        if not isinstance(signed, str) or not signed.startswith(("ws://", "wss://")):
            raise ProviderUnavailable("ElevenLabs answered without a signed URL")
        return signed

    async def _await_metadata(self, ws: aiohttp.ClientWebSocketResponse) -> Metadata:
        """Read until `conversation_initiation_metadata` (answering pings meanwhile)."""
        loop = asyncio.get_running_loop()
        while True:
            message = await ws.receive()
            if message.type is not TEXT:
                reason = message.extra if isinstance(message.extra, str) else ""
                code = "provider_rejected" if ws.close_code == POLICY_CLOSE else "provider_unavailable"
                raise ProviderUnavailable(
                    f"ElevenLabs ended the conversation at its start ({ws.close_code}) {reason[:200]}",
                    code=code,
                )
            for item in self._protocol.receive(message.data, loop.time()):
                if isinstance(item, Metadata):
                    await self._flush()
                    return item
                if isinstance(item, ProtocolNote):
                    self._note(item)
            await self._flush()

    def _tool_name(self, name: str) -> str:
        return self._settings.end_call_tool if name == "end_call" else name

    async def _send(self, text: str) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
            await ws.send_str(text)

    async def _flush(self) -> None:
        for text in self._protocol.take_outgoing():
            await self._send(text)
