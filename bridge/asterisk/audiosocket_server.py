"""The AudioSocket TCP server: a thin asyncio driver around the pure framing codec.

Asterisk does not re-time AudioSocket audio, so this side is the clock: every
frame of a call goes out on one absolute 20 ms grid (`GridPacer`), which never
drifts or re-anchors; a response that starts after silence, or audio that comes
late, waits for the grid's next slot. A barge-in is local: drop the playout
queue; what was written is exactly what the caller heard.
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
    Event,
    Hangup,
    PeerError,
    ProtocolError,
    Uuid,
    encode_audio,
    encode_hangup,
)
from bridge.audio.chunker import FrameChunker
from bridge.audio.formats import slin_at
from bridge.audio.pacer import GridPacer
from bridge.errors import BridgeError
from bridge.logging import get_logger
from bridge.session.admission import Admission, MediaClaim
from bridge.session.leg import DtmfIn, InboxLeg, LegInbox, LegStats
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
        first_events: list[Event],
        first_read_at: float | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._loop = asyncio.get_running_loop()
        self._inbox = LegInbox(INBOUND_QUEUE_LIMIT)
        self._timer: asyncio.TimerHandle | None = None  # the pacer's wake-up for the next frame's slot
        self._pacing = False  # while the leg runs: audio played before or after it is not written
        self._idle = asyncio.Event()
        self._idle.set()
        self._audio_kind = 0
        self._chunker: FrameChunker | None = None
        # Frames to write: bytes, the `received_at` of each `play` chunk whose first byte is in it, and
        # whether it is the first frame of a response.
        self._playout: deque[tuple[bytes, tuple[float, ...], bool]] = deque()
        self._response_ended = True  # the next audio opens a new response
        self._pending_stamps: tuple[float, ...] = ()  # chunks that begin in the chunker's partial frame
        self._arrived_at: float | None = None  # when the head frame came to an empty queue
        self._run_ends = False  # the response ended: its last queued frame ends the pacer's run
        self._pacer = GridPacer(PTIME_S)
        self._response_frames = 0  # frames of the current response written to Asterisk
        self._hung_up = False
        self.frames_in = self.frames_out = self.drops = self.protocol_errors = 0
        self._log = get_logger("audiosocket")
        for event in first_events:  # what came in the same read as the UUID
            self._on_event(event, first_read_at)

    # -- reading ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._pacing = True
        if self._playout:
            self._pace()  # audio played before the leg ran
        try:
            await self._read_loop()
        finally:
            self._pacing = False
            self._stop_pacing()
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
            now = self._loop.time()  # one clock read per read: the frames in it arrived together
            for event in self._parser.feed(data):
                self._on_event(event, now)

    def _on_event(self, event: object, now: float | None) -> None:
        if isinstance(event, Audio):
            self._on_audio(event, now)
        elif isinstance(event, Dtmf):
            self._inbox.deliver(DtmfIn(event.digit))
        elif isinstance(event, Hangup):
            self._inbox.closing_reason = EndRequest(EndedBy.CALLER)
        elif isinstance(event, ProtocolError | PeerError | Uuid):
            reason = (
                event.reason if isinstance(event, ProtocolError) else f"unexpected {type(event).__name__}"
            )
            self._fail(reason)

    def _on_audio(self, audio: Audio, received_at: float | None) -> None:
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
        self._inbox.deliver_audio(audio.payload, received_at)

    def _fail(self, reason: str) -> None:
        if self._inbox.closing_reason is not None:
            return
        self.protocol_errors += 1
        self._log.warning("media_protocol_error", reason=reason)
        self._inbox.closing_reason = EndRequest(EndedBy.ERROR, "protocol_error")
        self._write_hangup()

    # -- writing: the pacer ---------------------------------------------------------------------

    def _pace(self) -> None:
        """Write every frame whose slot has come, then wait on a timer for the next one's. A timer
        callback, not a task's sleep: the frame leaves in the loop iteration its slot comes in (a sleeping
        task would run one iteration later, milliseconds with 200 calls on the loop), at no task step."""
        self._timer = None
        pacer, playout, loop = self._pacer, self._playout, self._loop
        while playout:
            now = loop.time()
            due = pacer.due(now, self._arrived_at)
            if due > now:
                self._timer = loop.call_at(due, self._pace)
                return
            if self._hung_up or self._writer.is_closing():
                playout.clear()  # hung up, or Asterisk went: nothing more is written
                break
            frame, stamps, first_of_response = playout.popleft()
            self._arrived_at = None
            try:
                self._writer.write(encode_audio(frame, self._audio_kind))
            except (ConnectionError, RuntimeError):  # closed under us (uvloop raises RuntimeError)
                playout.clear()
                break
            pacer.sent()
            self.frames_out += 1
            self._response_frames = 1 if first_of_response else self._response_frames + 1
            if stamps and self.on_downlink_sent is not None:
                for received_at in stamps:
                    self.on_downlink_sent(received_at)
            if not playout and self._run_ends:
                self._run_ends = False
                pacer.restart()  # the response is over: the next one starts a new run on the same grid
        self._idle.set()

    def _stop_pacing(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- MediaLeg ----------------------------------------------------------------------------

    def play(self, data: bytes, received_at: float | None = None) -> None:
        if self._chunker is None or self._hung_up:
            return
        if len(self._playout) * PTIME_S >= PLAYOUT_LIMIT_S:
            self.drops += 1
            return
        if not data:
            return
        # A chunk is reported (`on_downlink_sent`) when the frame its first byte lands in is written.
        # Bytes short of a frame wait in the chunker, and so do their chunks' times. Only audio with
        # nothing queued ahead of it is timed: behind queued frames it plays no later for the wait.
        if self._playout:
            received_at = None
        stamps = self._pending_stamps if received_at is None else (*self._pending_stamps, received_at)
        frames = self._chunker.feed_frames(data)
        if frames:
            self._queue(frames[0], stamps)
            for frame in frames[1:]:
                self._queue(frame, ())
            stamps = ()
        self._pending_stamps = stamps
        self._run_ends = False

    def _queue(self, frame: bytes, stamps: tuple[float, ...]) -> None:
        came_to_empty = not self._playout
        if came_to_empty:
            self._arrived_at = self._loop.time()
            self._idle.clear()
        self._playout.append((frame, stamps, self._response_ended))
        self._response_ended = False
        if came_to_empty and self._timer is None and self._pacing:
            self._pace()  # due at once goes now, in the player's step; else the timer is set

    def end_response(self) -> None:
        if self._chunker is not None and self._chunker.pending:
            # AudioSocket takes short frames
            self._queue(self._chunker.take_remainder(pad=False), self._pending_stamps)
            self._pending_stamps = ()
        self._run_ends = self._response_ended = True
        if not self._playout:
            self._pacer.restart()

    @property
    def is_playing(self) -> bool:
        return bool(self._playout)

    @property
    def underruns(self) -> int:
        """Frames that came after their slot while a response was playing (the model fell behind)."""
        return self._pacer.underruns

    @property
    def channel_name(self) -> str:
        return ""  # AudioSocket never says which channel it serves

    @property
    def receives_audio(self) -> bool:
        return True  # AudioSocket has no media direction: the caller's audio always comes

    def interrupt(self) -> float:
        played_ms = self._response_frames * PTIME_S * 1000
        self._playout.clear()
        if self._chunker is not None:
            self._chunker.clear()
        self._pending_stamps, self._arrived_at = (), None
        self._response_frames = 0
        self._run_ends = False
        self._response_ended = True
        self._pacer.restart()  # the next response starts a new run, on the same grid
        self._stop_pacing()  # the next response's first frame is timed afresh when it comes
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
            first = await asyncio.wait_for(_read_uuid(reader, parser), UUID_TIMEOUT_S)
            call_uuid, early_events, read_at = first
            call = await self.admission.admit_media(MediaClaim(transport="audiosocket", call_id=call_uuid))
        except (TimeoutError, ValueError, BridgeError) as exc:
            reason = exc.code if isinstance(exc, BridgeError) else str(exc) or type(exc).__name__
            log.warning("audiosocket_refused", reason=reason)
            writer.write(encode_hangup())
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            writer.close()
            return
        leg = AudioSocketMediaLeg(reader, writer, parser, early_events, read_at)
        reader_task = asyncio.ensure_future(leg.run())
        try:
            await call.run(leg)
        finally:
            writer.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await reader_task
                await writer.wait_closed()


async def _read_uuid(
    reader: asyncio.StreamReader, parser: AudioSocketParser
) -> tuple[str, list[Event], float]:
    """The first message must be the call's UUID (type 0x01, 16 bytes). Returns it, whatever else the
    same read held (audio, a key: the leg takes them in order), and the loop time of that read."""
    while True:
        data = await reader.read(READ_SIZE)
        if not data:
            raise ValueError("connection closed before the UUID")
        read_at = asyncio.get_running_loop().time()
        events = parser.feed(data)
        if not events:
            continue
        first, rest = events[0], events[1:]
        if not isinstance(first, Uuid):
            raise ValueError(f"first message was {type(first).__name__}, not the UUID")
        return first.text, rest, read_at
