"""The AudioSocket TCP server: a thin asyncio driver around the pure framing codec.

Asterisk does not re-time AudioSocket audio, so this side is the clock: one
frame every 20 ms on an absolute monotonic schedule (`FramePacer`), re-anchored
after the queue runs dry instead of bursting to catch up. A barge-in is local:
drop the playout queue; what was written is exactly what the caller heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass

from bridge.asterisk.audiosocket import (
    Audio,
    AudioSocketParser,
    Dtmf,
    Hangup,
    PeerError,
    ProtocolError,
    Uuid,
    encode_audio,
    encode_hangup,
)
from bridge.audio.chunker import FrameChunker
from bridge.audio.formats import slin_at
from bridge.audio.pacer import FramePacer
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.session.admission import Admission, MediaClaim
from bridge.session.leg import AudioIn, DtmfIn, InboxLeg, LegInbox, LegStats
from bridge.session.session import EndRequest
from bridge.session.state import EndedBy

PTIME_S = 0.020
READ_SIZE = 65_536
UUID_TIMEOUT_S = 2.0  # Asterisk sends the UUID as soon as it connects
INBOUND_QUEUE_LIMIT = 250
PLAYOUT_LIMIT_S = 30.0  # model audio further ahead than this is a bug upstream: drop and count it
DRAIN_MARGIN_S = 1.0


class AudioSocketMediaLeg(InboxLeg):
    """One AudioSocket connection as a `MediaLeg` for the session."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: AudioSocketParser,
        first_audio: list[Audio],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._loop = asyncio.get_running_loop()
        self._inbox = LegInbox(INBOUND_QUEUE_LIMIT)
        self._kick = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._audio_kind = 0
        self._chunker: FrameChunker | None = None
        self._playout: deque[bytes] = deque()
        self._pacer = FramePacer(PTIME_S, max_lag_s=PTIME_S)
        self._response_frames = 0  # frames of the current response written to Asterisk
        self._hung_up = False
        self.frames_in = self.frames_out = self.drops = self.protocol_errors = 0
        self._log = get_logger("audiosocket")
        for audio in first_audio:
            self._on_audio(audio)

    # -- reading ---------------------------------------------------------------------------

    async def run(self) -> None:
        pacer = asyncio.ensure_future(self._pace())
        try:
            await self._read_loop()
        finally:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacer
            self._idle.set()
            self._inbox.close(EndRequest(EndedBy.CALLER))  # EOF: Asterisk hangs up without a 0x00

    async def _read_loop(self) -> None:
        while self._inbox.closing_reason is None:
            try:
                data = await self._reader.read(READ_SIZE)
            except (ConnectionError, OSError):
                data = b""
            if not data:
                return
            for event in self._parser.feed(data):
                self._on_event(event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, Audio):
            self._on_audio(event)
        elif isinstance(event, Dtmf):
            self._inbox.deliver(DtmfIn(event.digit))
        elif isinstance(event, Hangup):
            self._inbox.closing_reason = EndRequest(EndedBy.CALLER)
        elif isinstance(event, ProtocolError | PeerError | Uuid):
            reason = (
                event.reason if isinstance(event, ProtocolError) else f"unexpected {type(event).__name__}"
            )
            self._fail(reason)

    def _on_audio(self, audio: Audio) -> None:
        if self._chunker is None:
            fmt = slin_at(audio.sample_rate)
            self._audio_kind = audio.kind
            self._chunker = FrameChunker(fmt.frame_bytes)
            self._inbox.start(fmt)
        elif audio.kind != self._audio_kind:
            self._fail(
                f"audio type {audio.kind:#04x} after {self._audio_kind:#04x}: the format must not change"
            )
            return
        if len(audio.payload) % 2:
            self._fail(f"audio payload of {len(audio.payload)} bytes is not whole 16-bit samples")
            return
        self.frames_in += 1
        self._inbox.deliver(AudioIn(audio.payload))

    def _fail(self, reason: str) -> None:
        if self._inbox.closing_reason is not None:
            return
        self.protocol_errors += 1
        self._log.warning("media_protocol_error", reason=reason)
        self._inbox.closing_reason = EndRequest(EndedBy.ERROR, "protocol_error")
        self._write_hangup()

    # -- writing: the pacer ---------------------------------------------------------------------

    async def _pace(self) -> None:
        while True:
            if not self._playout:
                self._idle.set()
                self._kick.clear()
                await self._kick.wait()
                continue
            now = self._loop.time()
            if not self._pacer.started:
                self._pacer.start(now)
            delay = self._pacer.delay_until_due(now)  # re-anchors after a stall instead of bursting
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._playout or self._hung_up:
                continue
            self._writer.write(encode_audio(self._playout.popleft(), self._audio_kind))
            self._pacer.mark_sent()
            self.frames_out += 1
            self._response_frames += 1

    # -- MediaLeg ----------------------------------------------------------------------------

    def play(self, data: bytes, received_at: float | None = None) -> None:
        if self._chunker is None or self._hung_up:
            return
        if len(self._playout) * PTIME_S >= PLAYOUT_LIMIT_S:
            self.drops += 1
            return
        for frame in self._chunker.feed_frames(data):
            self._playout.append(frame)
        if self._playout:
            self._idle.clear()
            self._kick.set()

    def end_response(self) -> None:
        if self._chunker is not None and self._chunker.pending:
            self._playout.append(self._chunker.take_remainder(pad=False))  # AudioSocket takes short frames
            self._idle.clear()
            self._kick.set()

    @property
    def is_playing(self) -> bool:
        return bool(self._playout)

    @property
    def channel_name(self) -> str:
        return ""  # AudioSocket never says which channel it serves

    def interrupt(self) -> float:
        played_ms = self._response_frames * PTIME_S * 1000
        self._playout.clear()
        if self._chunker is not None:
            self._chunker.clear()
        self._response_frames = 0
        self._pacer.stop()
        self._idle.set()
        return played_ms

    async def hangup(self, *, drain: bool) -> None:
        if self._inbox.gone or self._hung_up:
            return
        if drain:
            self.end_response()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), len(self._playout) * PTIME_S + DRAIN_MARGIN_S)
        self._write_hangup()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._inbox.wait_gone(), 2.0)
        self._writer.close()

    def _write_hangup(self) -> None:
        if self._hung_up:
            return
        self._hung_up = True
        self._playout.clear()
        with contextlib.suppress(ConnectionError, RuntimeError):
            self._writer.write(encode_hangup())

    def stats(self) -> LegStats:
        return LegStats(
            frames_in=self.frames_in,
            frames_out=self.frames_out,
            drops=self.drops + self._inbox.drops,
            protocol_errors=self.protocol_errors,
            played_ms_estimated=False,  # what the pacer wrote is what the caller heard
        )


@dataclass(frozen=True, slots=True)
class AudioSocketEndpoint:
    admission: Admission

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log = get_logger("audiosocket")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        parser = AudioSocketParser()
        try:
            call_uuid, early_audio = await asyncio.wait_for(_read_uuid(reader, parser), UUID_TIMEOUT_S)
            call = await self.admission.admit_media(MediaClaim(transport="audiosocket", call_id=call_uuid))
        except (TimeoutError, ValueError, BridgeError) as exc:
            reason = exc.code if isinstance(exc, BridgeError) else str(exc) or type(exc).__name__
            log.warning("audiosocket_refused", reason=reason)
            writer.write(encode_hangup())
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        leg = AudioSocketMediaLeg(reader, writer, parser, early_audio)
        reader_task = asyncio.ensure_future(leg.run())
        try:
            await call.run(leg)
        finally:
            writer.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await reader_task
                await writer.wait_closed()


async def _read_uuid(reader: asyncio.StreamReader, parser: AudioSocketParser) -> tuple[str, list[Audio]]:
    """The first message must be the call's UUID (type 0x01, 16 bytes)."""
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            raise ValueError("connection closed before the UUID")
        events = parser.feed(data)
        if not events:
            continue
        first, rest = events[0], events[1:]
        if not isinstance(first, Uuid):
            raise ValueError(f"first message was {type(first).__name__}, not the UUID")
        audio = [e for e in rest if isinstance(e, Audio)]
        if len(audio) != len(rest):
            raise ValueError("unexpected message right after the UUID")
        return first.text, audio
