"""The chan_websocket media endpoint: a thin aiohttp driver around `ChanWebsocketLeg`.

Asterisk dials out to `/api/real-time-voice-stream`. The upgrade is checked and
answered at once (Asterisk gives it 500 ms); the model connects in parallel; then
the socket's messages are fed to the pure leg, and whatever the leg wants sent
goes out in the order it says (control before audio). aiohttp reads the socket,
answers pings and closes it; the leg's messages are written as frames straight
onto the transport (ws_frames.py), waiting on aiohttp's drain only when Asterisk
reads slower than that.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from bridge.asterisk.call_metadata import announced_call_id, call_variables
from bridge.asterisk.chan_websocket import MediaDirection
from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.leg_events import (
    AsteriskErrorSeen,
    AudioReceived,
    BinaryMessage,
    CloseSocket,
    DtmfReceived,
    LegEvent,
    PlayedUpTo,
    ProtocolErrorSeen,
    Started,
    TextMessage,
)
from bridge.asterisk.ws_frames import OP_BINARY, OP_TEXT, server_frame
from bridge.audio.formats import format_by_name
from bridge.errors import BadRequest
from bridge.logging import get_logger
from bridge.session.admission import Admission, MediaClaim
from bridge.session.leg import DtmfIn, InboxLeg, LegInbox, LegStats
from bridge.session.session import EndRequest
from bridge.session.state import EndedBy

INBOUND_QUEUE_LIMIT = 250  # 5 s of 20 ms frames; a stalled model must not grow memory
MAX_INBOUND_MESSAGE = 65_536
CLOSE_WAIT_SECONDS = 2.0  # after HANGUP, Asterisk closes the socket itself; wait this long for it


class Wakeup:
    """The write loop's sleep: until a time or until kicked, whichever comes first. Cheaper than
    `asyncio.wait_for(event.wait(), t)`, which makes a task per wait, and this wait runs 50+ times a
    second per call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._kicked = False

    def kick(self) -> None:
        self._kicked = True
        _wake(self._waiter)

    def clear(self) -> None:
        self._kicked = False

    def rearm(self, until: float | None) -> None:
        """Move the sleeper's wake-up to loop time `until` (None: only when kicked), not waking it now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if until is not None and self._waiter is not None:
            self._timer = self._loop.call_at(until, _wake, self._waiter)

    async def sleep(self, until: float | None) -> None:
        """Return at loop time `until` (None: only when kicked), or at once if kicked since `clear`."""
        if self._kicked:
            return
        waiter = self._waiter = self._loop.create_future()
        self.rearm(until)
        try:
            await waiter
        finally:
            self._waiter = None
            self.rearm(None)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class UpgradedConnection:
    """Where the leg writes its frames (the upgraded connection's transport) and what it waits on when
    Asterisk reads slower than that (aiohttp's payload writer, whose `drain` waits out a full buffer)."""

    transport: asyncio.Transport
    writer: AbstractStreamWriter

    @classmethod
    def of(cls, request: web.BaseRequest, writer: AbstractStreamWriter) -> UpgradedConnection:
        """The connection of a request whose `WebSocketResponse.prepare` returned `writer`."""
        transport = request.transport
        if transport is None:  # only after the peer left: prepare() would have failed first
            raise ConnectionResetError("the media socket closed during the upgrade")
        return cls(transport, writer)


_BINARY, _TEXT = WSMsgType.BINARY, WSMsgType.TEXT
_SOCKET_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)  # where `async for` stops


def _changes_output(events: list[LegEvent]) -> bool:
    """Whether Asterisk's text can change what the write loop sends: everything but the mark
    acknowledgements (five a second while audio plays), which only move the playout position. An
    unknown mark gives no event and changes nothing either."""
    return any(not isinstance(event, PlayedUpTo) for event in events)


class ChanWebsocketMediaLeg(InboxLeg):
    """One chan_websocket connection as a `MediaLeg` for the session.

    `query`: the media URI's query (the dialplan's `v()` parameters), which the call was admitted by; with
    MEDIA_START's `channel_variables` it becomes the leg's `call_variables` (`call_metadata`).
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        connection: UpgradedConnection,
        leg: ChanWebsocketLeg,
        query: Mapping[str, str] | None = None,
    ) -> None:
        self._ws = ws
        self._transport, self._flushing = connection.transport, connection.writer
        self._leg = leg
        self._query = dict(query or {})
        self._loop = asyncio.get_running_loop()
        self._inbox = LegInbox(INBOUND_QUEUE_LIMIT)
        self._wakeup = Wakeup(self._loop)
        self._parked = False  # the write loop sleeps between steps: `_write_soon` may write for it
        self._next_wake: float | None = None
        self._hangup_sent = asyncio.Event()
        self._closing: asyncio.Future[bool] | None = None
        self._log = get_logger("chan_websocket")

    # -- driving the socket -------------------------------------------------------------------

    async def run(self) -> None:
        """Read until the socket closes, writing whatever the leg wants in between."""
        writer = asyncio.ensure_future(self._write_loop())
        try:
            await self._read_loop()
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self._inbox.close(EndRequest(EndedBy.CALLER))  # Asterisk closing the socket is the hangup

    async def _read_loop(self) -> None:
        ws, leg, inbox, loop = self._ws, self._leg, self._inbox, self._loop
        while True:
            message = await ws.receive()
            kind = message.type
            if kind is _BINARY:  # caller audio, 50 a second: straight to the session
                data, fmt = message.data, inbox.format
                if fmt is not None and len(data) % fmt.bytes_per_sample:
                    self._fail(f"binary message of {len(data)} bytes is not whole samples")
                    break
                now = loop.time()
                if leg.caller_audio(data, now):
                    inbox.deliver_audio(data, now)
            elif kind is _TEXT:
                events = leg.receive_text(message.data, loop.time())
                for event in events:
                    self._on_event(event)
                if _changes_output(events):
                    self._write_soon()
            elif kind in _SOCKET_CLOSED:
                break
            else:  # ERROR (e.g. over-size): aiohttp already closed the socket with a reason
                self._log.warning("media_socket_error", error=str(ws.exception()))
                inbox.closing_reason = EndRequest(EndedBy.ERROR, "protocol_error")
                break
            if inbox.closing_reason is not None:
                break

    def _on_event(self, event: object) -> None:
        if isinstance(event, AudioReceived):
            self._inbox.deliver_audio(event.data, event.received_at)
        elif isinstance(event, Started):
            self._start(event)
        elif isinstance(event, DtmfReceived):
            self._inbox.deliver(DtmfIn(event.digit))
        elif isinstance(event, ProtocolErrorSeen):
            self._log.warning("control_message_rejected", reason=event.reason)
        elif isinstance(event, AsteriskErrorSeen):
            self._log.warning("asterisk_error", error_text=event.text.strip())

    def _start(self, event: Started) -> None:
        start = event.media_start
        fmt = format_by_name(start.format)
        if fmt is None:
            self._fail(f"format {start.format} is not supported")
            return
        if start.passthrough:
            # One message per frame, timed by us, and no buffering, marks or flush: not what this leg does.
            self._fail("passthrough mode (dial option p) is not supported: dial without `p`")
            return
        claimed, announced = self._query.get("callId", ""), announced_call_id(start.channel_variables)
        if claimed and announced and claimed != announced:
            # v() parameters are shared by every call of a websocket_client.conf section: a Dial without
            # v() (or two at once) can present another call's query. The channel's own variable is right.
            self._fail(f"the socket claimed call {claimed} but MEDIA_START is for call {announced}")
            return
        if not self._leg.receives_audio:
            self._log.info("media_direction_out", detail="Asterisk sends this leg no caller audio")
        self._inbox.start(fmt, call_variables(self._query, start.channel_variables))

    def _fail(self, reason: str) -> None:
        self._log.warning("media_protocol_error", reason=reason)
        self._inbox.closing_reason = EndRequest(EndedBy.ERROR, "protocol_error")
        self._closing = asyncio.ensure_future(
            self._ws.close(code=WSCloseCode.UNSUPPORTED_DATA, message=reason[:120].encode())
        )

    async def _write_loop(self) -> None:
        ws, wakeup, transport = self._ws, self._wakeup, self._transport
        try:
            while not ws.closed and not transport.is_closing():
                wakeup.clear()
                if transport.get_write_buffer_size():
                    await self._flushing.drain()  # Asterisk reads slower than we write: wait for it
                self._write_now()
                self._parked = True
                try:
                    await wakeup.sleep(self._next_wake)
                finally:
                    self._parked = False
        except ConnectionError:
            return  # the socket went while draining: the read loop sees the close and ends the call

    def _write_now(self) -> None:
        """Send what the leg wants sent now, each message as one frame onto the transport; keep when it
        wants to be asked again. Nothing once the socket is closing: the read loop ends the call."""
        transport, leg = self._transport, self._leg
        if self._ws.closed or transport.is_closing():
            self._next_wake = None
            return
        messages, self._next_wake = leg.poll(self._loop.time())
        for message in messages:
            if isinstance(message, BinaryMessage):
                transport.write(server_frame(OP_BINARY, message.data))
                if message.received_at and message.audible and self.on_downlink_sent is not None:
                    for received_at in message.received_at:
                        self.on_downlink_sent(received_at)
            elif isinstance(message, TextMessage):
                transport.write(server_frame(OP_TEXT, message.text.encode()))
            elif isinstance(message, CloseSocket):
                # Its own task: close() waits for Asterisk's reply under a timeout.
                self._closing = asyncio.ensure_future(self._ws.close(code=WSCloseCode.OK, message=b"hangup"))
        if leg.hangup_sent:
            self._hangup_sent.set()

    def _write_soon(self) -> None:
        """The leg has something new to send. While the write loop is parked and the socket takes what
        it is given, it is written here and now, in the caller's own step (no wake-up of the loop's task
        per model chunk, and the audio or the flush leaves at once); otherwise the loop is kicked."""
        if self._parked and not self._transport.get_write_buffer_size():
            self._write_now()
            self._wakeup.rearm(self._next_wake)
        else:
            self._wakeup.kick()

    # -- MediaLeg ----------------------------------------------------------------------------

    def play(self, data: bytes, received_at: float | None = None) -> None:
        self._leg.queue_audio(data, received_at=received_at)
        self._write_soon()

    def end_response(self) -> None:
        self._leg.end_response()
        self._write_soon()

    @property
    def is_playing(self) -> bool:
        return self._leg.queued_ms(self._loop.time()) > 0

    @property
    def channel_name(self) -> str:
        start = self._leg.media_start
        return start.channel if start is not None else ""

    @property
    def receives_audio(self) -> bool:
        """False on a leg dialed with `d(out)`: Asterisk sends no caller audio, so nothing may wait for it."""
        return self._leg.receives_audio

    @property
    def media_direction(self) -> MediaDirection:
        return self._leg.direction

    def set_media_direction(self, direction: MediaDirection) -> None:
        """SET_MEDIA_DIRECTION (JSON control, 22.9+); ValueError on plain-text control."""
        self._leg.set_media_direction(direction, self._loop.time())
        self._write_soon()

    def interrupt(self) -> float:
        played = self._leg.interrupt(self._loop.time())
        self._write_soon()
        return played

    async def hangup(self, *, drain: bool) -> None:
        if self._inbox.gone:
            return
        now = self._loop.time()
        if not drain:
            self._leg.interrupt(now)
        self._leg.begin_hangup(now)
        self._write_soon()
        # The leg bounds its own drain (queued audio plus a margin), then sends HANGUP.
        done = asyncio.ensure_future(self._hangup_sent.wait())
        gone = asyncio.ensure_future(self._inbox.wait_gone())
        await asyncio.wait([done, gone], return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gone, CLOSE_WAIT_SECONDS)
        if not self._ws.closed:
            await self._ws.close(code=WSCloseCode.OK, message=b"call ended")

    def stats(self) -> LegStats:
        counters = self._leg.counters
        return LegStats(
            frames_in=counters.frames_in,
            frames_out=counters.frames_out,
            drops=counters.drops_prestart + counters.drops_local_overflow + self._inbox.drops,
            protocol_errors=counters.protocol_errors,
            played_ms_estimated=self._leg.played_ms_estimated,
        )


# -- the HTTP side: admission (in `session/`), then the upgrade ------------------------------------


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    admission: Admission
    max_message_bytes: int = 8000

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            protocols=("media",), compress=False, max_msg_size=MAX_INBOUND_MESSAGE, autoping=True
        )
        # Checked before anything else: a request that is not a valid upgrade never touches a call.
        if not ws.can_prepare(request).ok:
            raise BadRequest(
                "this is Asterisk's media WebSocket: a WebSocket upgrade is required",
                code="websocket_required",
            )
        query = request.query
        claim = MediaClaim(
            transport="chan_websocket",
            call_id=query.get("callId", ""),
            caller=query.get("aNumberE164", ""),
            called=query.get("bNumberE164", ""),
            credentials=presented_credentials(request.headers),
        )
        call = await self.admission.admit_media(claim)  # a BridgeError here is a refusal before the upgrade
        try:
            connection = UpgradedConnection.of(request, await ws.prepare(request))
        except ConnectionError:
            # Asterisk gave up on the upgrade (its connect timeout): nothing to answer, nobody to tell.
            get_logger("media").info("media_setup_abandoned", call_id=call.session.call_id)
            call.abandon("setup_abandoned")
            return ws
        except Exception:
            call.abandon("upgrade_failed")
            raise
        leg_state = ChanWebsocketLeg(max_message_bytes=self.max_message_bytes)
        leg = ChanWebsocketMediaLeg(ws, connection, leg_state, query)
        reader = asyncio.ensure_future(leg.run())
        try:
            await call.run(leg)
        finally:
            if not ws.closed:
                await ws.close(code=WSCloseCode.OK, message=b"call ended")
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return ws


def presented_credentials(headers: Mapping[str, str]) -> tuple[str, ...]:
    """Every connector key a media socket presents: HTTP Basic's password (websocket_client.conf), a
    Bearer token, `x-connector-api-key`. "" for a header that is present but unreadable."""
    found = []
    authorization = headers.get("Authorization")
    if authorization is not None:
        found.append(_authorization_secret(authorization))
    header = headers.get("x-connector-api-key")
    if header is not None:
        found.append(header)
    return tuple(found)


def _authorization_secret(header: str) -> str:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() == "bearer":
        return encoded.strip()
    if scheme.lower() != "basic":
        return ""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError:  # binascii.Error, non-ASCII text, or bytes that are not UTF-8
        return ""  # present but unreadable: wrong credentials
    return decoded.partition(":")[2]
