"""The sans-I/O state of one chan_websocket media leg (server side); time is passed in.

The driver feeds Asterisk's messages to `receive_text`/`receive_binary` and model audio to `queue_audio`/
`end_response`; after each call, and when the time `poll` returned arrives, it writes what `poll(now)`
returns, in order. Per asterisk-chan-websocket.md §15: pre-MEDIA_START audio buffered (bounded); each
response bracketed by START/STOP_MEDIA_BUFFERING; whole frames only (a response's short tail inside the
bracket); rate and modelled queue depth capped (`PlayoutBudget`); XOFF holds; playout from marks or
estimated from the clock; barge-in flushes everywhere; hangup drains first.

Marks: JSON control implies 22.8+, so marks exist. Plain text is still Asterisk's default and only tells
22.6 (no `channel_id`: no marks) from 22.7+; 22.7 ignores MARK_MEDIA while 22.8+ answers it. So on plain
text with a `channel_id` one probe mark at a time goes out: its MEDIA_MARK_PROCESSED switches to exact
playout; a later marker reached first (marks are reached in order) means no marks, and we stop asking.

Media direction (22.9+: `d()` in the dial string, read from MEDIA_START, or `set_media_direction`): with `in`
Asterisk drops what we send and answers buffering, marks and pause with ERROR, so the leg sends no audio
and none of those, and a hangup has nothing to drain; with `out` no caller audio comes (`receives_audio`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from bridge.asterisk import chan_websocket as cw
from bridge.asterisk.call_metadata import media_direction
from bridge.asterisk.chan_websocket import Command, ControlFormat, MediaDirection, MediaStart
from bridge.asterisk.leg_events import (
    AsteriskErrorSeen,
    AudioReceived,
    BinaryMessage,
    CloseSocket,
    Drained,
    DtmfReceived,
    LegCounters,
    LegEvent,
    Outgoing,
    PlayedUpTo,
    ProtocolErrorSeen,
    Started,
    StatusReceived,
    TextMessage,
    Xoff,
    Xon,
)
from bridge.audio.formats import FORMATS, PTIME_MS
from bridge.audio.pacer import PlayoutBudget

HARD_MESSAGE_LIMIT: Final = 65_500  # Asterisk: header + payload must fit 65535
# Before MEDIA_START the format is unknown: bound byte buffers as if it were the widest (slin192).
MAX_BYTES_PER_MS: Final = max(f.frame_bytes for f in FORMATS.values()) / PTIME_MS
_ID_WRAP: Final = 16**6  # correlation ids stay <= 7 characters


@dataclass(slots=True)
class _Response:
    seq: int
    buf: bytearray
    ended: bool = False
    start_sent: bool = False
    start_total_ms: float | None = None  # playout position of its first byte
    sent_ms: float = 0.0
    queued_bytes: int = 0  # ever queued; `buf` holds the unsent end of it
    # (offset in the response, `received_at`) of queued chunks whose first byte is not sent yet
    stamps: deque[tuple[int, float]] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class _Mark:
    response: int
    response_ms: float
    total_ms: float
    drain: bool = False
    probe: bool = False  # a MARK_MEDIA sent to learn whether this Asterisk has marks


_Drain: TypeAlias = Literal["none", "pending", "sent", "done"]  # the hangup drain mark/request
_Marks: TypeAlias = Literal["yes", "probe", "no"]  # whether MARK_MEDIA works on this Asterisk


class ChanWebsocketLeg:
    """One media leg.

    Batching: chan_websocket cuts each binary message into frames, queues them and plays one per tick,
    so several frames per message cost Asterisk nothing and save a message each. A message holds up to
    `marks_every_ms` of whole frames, within `max_message_bytes` and the rate budget's burst (at least
    one frame); a mark follows the message that completes `marks_every_ms` of unmarked audio. Audio
    goes at once while Asterisk's queue is low (`low_water_ms` or less, modelled) and when a response's
    last frames are all here; otherwise, while Asterisk has enough queued, it waits for a whole message
    (of audio and of rate budget) or until the queue is down to the low-water mark, whichever comes
    first. Audio that comes in 20 ms pieces in real time (an echo) is held back only while Asterisk
    already has more than the low-water mark queued, which the caller hears first anyway.
    """

    def __init__(
        self,
        *,
        max_message_bytes: int = 8000,
        prestart_buffer_ms: int = 1000,
        marks_every_ms: int = 200,
        low_water_ms: int = 180,
        max_ahead_frames: int = 200,
        local_queue_limit_ms: int = 30_000,
        initial_burst_frames: int = 10,
        rate: float = 1.5,
        hangup_margin_s: float = 1.5,
    ) -> None:
        if min(max_message_bytes, local_queue_limit_ms, marks_every_ms) <= 0 or prestart_buffer_ms < 0:
            raise ValueError("sizes and limits must be positive")
        if not 0 <= low_water_ms < max_ahead_frames * PTIME_MS:
            raise ValueError("low_water_ms must be within [0, max_ahead_frames * 20 ms)")
        self.max_message_bytes = min(max_message_bytes, HARD_MESSAGE_LIMIT)
        self.prestart_buffer_ms, self.marks_every_ms = prestart_buffer_ms, marks_every_ms
        self.low_water_s = low_water_ms / 1000
        self.max_ahead_frames, self.local_queue_limit_ms = max_ahead_frames, local_queue_limit_ms
        self.burst, self.rate, self.hangup_margin_s = initial_burst_frames, rate, hangup_margin_s
        self.counters = LegCounters()
        self.media_start: MediaStart | None = None
        self.control_format: ControlFormat | None = None
        self.generation = 0  # bumped by interrupt(); audio tagged with an older one is dropped
        self.hangup_sent = False
        self.direction = MediaDirection.BOTH  # from MEDIA_START, then set_media_direction
        # Asterisk's queue model and our rate cap (constructing it validates these three now).
        self._budget = PlayoutBudget(PTIME_MS / 1000, initial_burst_frames, rate, max_ahead_frames)
        self._frame, self._tick = 0, PTIME_MS / 1000  # optimal_frame_size and ptime, from MEDIA_START
        self._per_message = 1  # frames per binary message
        self._prestart: list[tuple[bytes, float]] = []  # with the time each was read
        self._urgent: deque[Command] = deque()  # control that overtakes queued audio
        self._responses: deque[_Response] = deque()
        self._open: _Response | None = None  # the response whose bracket is open
        self._current: _Response | None = None  # the latest response
        self._seq = self._mark_seq = 0
        self._marks: dict[str, _Mark] = {}  # sent, not yet reached, in order
        self._unmarked_ms = self._sent_total_ms = self._confirmed_ms = 0.0
        self._paused_at: float | None = None
        self._paused_depth = 0
        self._xoff = self._close = False
        self._deadline: float | None = None  # hangup: HANGUP at the latest then
        self._drain: _Drain = "none"
        self._has_marks: _Marks = "no"
        self._probe: str | None = None  # the probe mark in flight

    # ---------------------------------------------------------------- state for the session
    @property
    def started(self) -> bool:
        return self.media_start is not None

    @property
    def receives_audio(self) -> bool:
        """False when Asterisk sends no caller audio (direction `out`): nothing to wait for."""
        return self.direction is not MediaDirection.OUT

    @property
    def sends_audio(self) -> bool:
        """False when Asterisk drops what we send (direction `in`)."""
        return self.direction is not MediaDirection.IN

    @property
    def played_ms_estimated(self) -> bool:
        """True when playout comes from the clock model rather than marks (plain text before 22.8)."""
        return self._has_marks != "yes"

    @property
    def _bytes_per_ms(self) -> float:
        ms = self.media_start
        return ms.optimal_frame_size / ms.ptime if ms else MAX_BYTES_PER_MS

    def local_queued_bytes(self) -> int:
        return sum(len(r.buf) for r in self._responses)

    def _model_time(self, now: float) -> float:
        return now if self._paused_at is None else self._paused_at  # the model stands still in a pause

    def modelled_depth(self, now: float) -> int:
        """Frames we believe sit in Asterisk's queue (sent minus ticks since playout began)."""
        return self._budget.queued_frames(self._model_time(now))

    def queued_ms(self, now: float) -> float:
        """Audio not yet played: held here plus the modelled Asterisk queue."""
        remote = self._budget.queued_seconds(self._model_time(now)) * 1000
        return self.local_queued_bytes() / self._bytes_per_ms + remote

    def played_total_ms(self, now: float) -> float:
        """Audio played since the call began: marks confirm it, the queue model fills in between."""
        remote = self._budget.queued_seconds(self._model_time(now)) * 1000
        cap = next((m.total_ms for m in self._marks.values() if not m.probe), self._sent_total_ms)
        return max(self._confirmed_ms, min(self._sent_total_ms - remote, cap))

    def played_ms(self, now: float) -> float:
        """How much of the latest response the caller has heard."""
        r = self._current
        if r is None or r.start_total_ms is None:
            return 0.0
        return min(max(self.played_total_ms(now) - r.start_total_ms, 0.0), r.sent_ms)

    # ---------------------------------------------------------------- from Asterisk
    def receive_binary(self, data: bytes, now: float) -> list[LegEvent]:
        return [AudioReceived(data, now)] if self.caller_audio(data, now) else []

    def caller_audio(self, data: bytes, now: float) -> bool:
        """A binary message: True when it is caller audio to hand on now (`receive_binary`'s one event,
        without making it: this runs 50 times a second per call); before MEDIA_START it is kept."""
        if not data:
            return False
        self.counters.frames_in += 1
        if self.media_start is not None:
            return True
        if sum(len(d) for d, _ in self._prestart) + len(data) > self.prestart_buffer_ms * MAX_BYTES_PER_MS:
            self.counters.drops_prestart += 1
        else:
            self._prestart.append((data, now))
        return False

    def receive_text(self, text: str, now: float) -> list[LegEvent]:
        if self.control_format is None:
            self.control_format = cw.detect_format(text)
        ev = cw.parse_event(text)
        match ev:
            case cw.ProtocolError(reason, raw):
                return self._protocol_error(f"{reason}: {raw!r}")
            case cw.MediaStart():
                return self._start(ev, now)
            case cw.MediaXoff():
                self._xoff = True
                self.counters.xoff_count += 1
                self._budget.hold(now)
                return [Xoff()]
            case cw.MediaXon():
                # Our model was wrong (we never aim near 900): assume at least our cap is queued until
                # the STATUS we ask for gives the true depth, then resume from there.
                self._xoff = False
                depth = max(self._budget.queued_frames(now), self.max_ahead_frames)
                self._budget.reset(now, queued_frames=depth)
                self._urgent.append(cw.GetStatus())
                return [Xon()]
            case cw.QueueDrained():
                if self._drain == "done":
                    return []  # the drain mark already said so
                if self._drain == "sent":
                    self._drain = "done"
                return [Drained()]
            case cw.Status():
                if not self._xoff and self._paused_at is None:
                    self._budget.reset(now, queued_frames=ev.queue_length)
                return [StatusReceived(ev)]
            case cw.MediaBufferingCompleted(cid) | cw.MediaMarkProcessed(cid):
                return self._mark_reached(cid)
            case cw.DtmfEnd(digit):
                return [DtmfReceived(digit)]
            case cw.AsteriskError(error_text):
                return [AsteriskErrorSeen(error_text)]

    def _protocol_error(self, reason: str) -> list[LegEvent]:
        self.counters.protocol_errors += 1
        return [ProtocolErrorSeen(reason)]

    def _start(self, ev: MediaStart, now: float) -> list[LegEvent]:
        if self.started:
            return self._protocol_error("duplicate MEDIA_START ignored")
        if ev.optimal_frame_size > HARD_MESSAGE_LIMIT:
            return self._protocol_error(f"optimal_frame_size {ev.optimal_frame_size} is unusable")
        self.media_start, self.control_format = ev, ev.control_format
        self.direction = media_direction(ev.channel_variables)
        if ev.control_format is ControlFormat.JSON:
            self._has_marks = "yes"
        elif ev.channel_id is not None:
            self._has_marks = "probe"
        self._frame, self._tick = ev.optimal_frame_size, ev.ptime / 1000
        self._budget = PlayoutBudget(self._tick, self.burst, self.rate, self.max_ahead_frames)
        # A message never holds more than the rate budget can ever allow at once (its burst).
        by_size = self.max_message_bytes // ev.optimal_frame_size
        self._per_message = max(1, min(by_size, self.marks_every_ms // ev.ptime, self.burst))
        events: list[LegEvent] = [Started(ev)]
        budget = self.prestart_buffer_ms * self._bytes_per_ms  # now that the real rate is known
        for data, read_at in self._prestart:
            budget -= len(data)
            if budget >= 0:
                events.append(AudioReceived(data, read_at))
            else:
                self.counters.drops_prestart += 1
        self._prestart.clear()
        return events

    def _mark_reached(self, cid: str) -> list[LegEvent]:
        if cid not in self._marks:
            return []  # flushed before it played, or not ours
        while True:  # marks are reached in order: everything before it is gone too
            key = next(iter(self._marks))
            mark = self._marks.pop(key)
            if key == self._probe:  # answered: marks work; passed over: this Asterisk has none
                self._has_marks, self._probe = ("yes" if key == cid else "no"), None
            if key == cid:
                break
        self._confirmed_ms = max(self._confirmed_ms, mark.total_ms)
        events: list[LegEvent] = [PlayedUpTo(mark.response, mark.response_ms, mark.total_ms)]
        if mark.drain:
            self._drain = "done"
            events.append(Drained())
        return events

    # ---------------------------------------------------------------- from the session
    def queue_audio(
        self, pcm: bytes, generation: int | None = None, received_at: float | None = None
    ) -> bool:
        """Queue model audio in the leg's format. False if dropped: a stale generation, hangup begun,
        or the local queue full (a chunk is taken whole or not at all, keeping sample alignment).
        `received_at` comes back in the `BinaryMessage` that carries the chunk's first byte."""
        if generation is not None and generation != self.generation:
            self.counters.drops_stale += len(pcm)
            return False
        if self._deadline is not None or self.hangup_sent or self._close or not self.sends_audio:
            return False
        if self.local_queued_bytes() + len(pcm) > self.local_queue_limit_ms * self._bytes_per_ms:
            self.counters.drops_local_overflow += len(pcm)
            return False
        if pcm:
            if self._open is None:
                self._seq += 1
                self._open = self._current = _Response(self._seq, bytearray())
                self._responses.append(self._open)
            r = self._open
            if received_at is not None:
                r.stamps.append((r.queued_bytes, received_at))
            r.buf += pcm
            r.queued_bytes += len(pcm)
        return True

    def end_response(self) -> None:
        """The model finished this response: its bracket closes after its audio."""
        if self._open is not None:
            self._open.ended, self._open = True, None

    def interrupt(self, now: float) -> float:
        """Barge-in: flush Asterisk's queue and ours, at once. Returns ms of the latest response heard."""
        played, total = self.played_ms(now), self.played_total_ms(now)
        if self._current is not None:
            self._current.sent_ms = played
        self.generation += 1
        self._responses.clear()
        self._open = None
        self._marks.clear()  # flushed marks never fire
        self._probe = None  # a flushed probe proves nothing: ask again
        self._unmarked_ms, self._sent_total_ms, self._confirmed_ms = 0.0, total, total
        if self._drain in ("pending", "sent"):
            self._drain = "done"  # nothing is left to drain
        self._budget.reset(now)
        self._xoff = False  # the flush empties Asterisk's queue: nothing left to hold back for
        if self.started:
            self._urgent.appendleft(cw.FlushMedia())
            if self._paused_at is not None:  # FLUSH_MEDIA does not clear the pause
                self._urgent.append(cw.ContinueMedia())
                self._paused_at = None
        return played

    def pause(self, now: float) -> None:
        """PAUSE_MEDIA: Asterisk stops playout and keeps its queue; we stop sending."""
        if self._paused_at is None and self.sends_audio:
            self._paused_at, self._paused_depth = now, self._budget.queued_frames(now)
            self._urgent.append(cw.PauseMedia())

    def resume(self, now: float) -> None:
        if self._paused_at is not None:
            self._paused_at = None
            self._budget.reset(now, queued_frames=self._paused_depth)
            if self._xoff:
                self._budget.hold(now)
            self._urgent.append(cw.ContinueMedia())

    def set_media_direction(self, direction: MediaDirection, now: float) -> None:
        """SET_MEDIA_DIRECTION (JSON control, 22.9+; older releases ignore it). Going to `in` drops
        every queued response first: Asterisk would drop it too."""
        if self.control_format is not ControlFormat.JSON:
            raise ValueError("SET_MEDIA_DIRECTION needs JSON control (dial option f(json))")
        if direction is MediaDirection.IN and self.sends_audio:
            self.interrupt(now)
        self.direction = direction
        self._urgent.append(cw.SetMediaDirection(direction))

    def answer(self) -> None:
        """ANSWER: needed only when the dial string has `n`."""
        self._urgent.append(cw.Answer())

    def request_status(self) -> None:
        """GET_STATUS; the STATUS reply also re-anchors the queue model."""
        self._urgent.append(cw.GetStatus())

    def begin_hangup(self, now: float) -> None:
        """After the final response: drain what is queued, then HANGUP (or at the deadline)."""
        if self._deadline is not None or self.hangup_sent:
            return
        self.end_response()
        if not self.started:
            self._close = True  # no control channel yet: closing the socket hangs up
            return
        if not self.sends_audio:  # nothing we sent is played: nothing to drain, nobody to report it
            self._deadline, self._drain = now, "done"
            return
        self._deadline = now + self.queued_ms(now) / 1000 + self.hangup_margin_s
        self._drain = "pending"

    # ---------------------------------------------------------------- to Asterisk
    def poll(self, now: float) -> tuple[list[Outgoing], float | None]:
        """Messages to send now, in order, and when to poll again (None: only after new input)."""
        if self._close and not self.hangup_sent:
            self.hangup_sent = True
            return [CloseSocket()], None
        fmt = self.control_format
        if self.hangup_sent or fmt is None or not self.started:
            return [], None
        out: list[Outgoing] = [TextMessage(cw.encode_command(c, fmt)) for c in self._urgent]
        self._urgent.clear()
        if self._deadline is not None and (self._drain == "done" or now >= self._deadline):
            out.append(TextMessage(cw.encode_command(cw.Hangup(), fmt)))
            self.hangup_sent = True
            self._responses.clear()
            return out, None
        wake = self._pump(now, out, fmt)
        if self._deadline is not None:
            wake = self._deadline if wake is None else min(wake, self._deadline)
        return out, wake

    def _pump(self, now: float, out: list[Outgoing], fmt: ControlFormat) -> float | None:
        frame = self._frame
        while self._responses:
            r = self._responses[0]
            if not r.start_sent:
                out.append(TextMessage(cw.encode_command(cw.StartMediaBuffering(), fmt)))
                r.start_sent = True
            whole, partial = divmod(len(r.buf), frame)
            if whole or (r.ended and partial):
                # The short tail goes only inside the bracket, at its end: it counts as one frame.
                available = whole + (1 if r.ended and partial else 0)
                n, wake = self._allowance(now, available, last=r.ended)
                if n == 0:
                    return wake
                size = min(n, self._per_message)  # one message at a time, marks between them
                self._send(r, min(size * frame, len(r.buf)), now, out, fmt)
                continue
            if not r.ended:
                return None  # a partial frame waits for more audio or for the end of the response
            self._add_mark(out, fmt, "r", r)
            self._responses.popleft()
        if self._drain == "pending":
            # A correlated mark where marks exist, and REPORT_QUEUE_DRAINED always (every version has
            # it): whichever answers first says the goodbye has played.
            if self._has_marks == "yes":
                self._add_mark(out, fmt, "h", self._current)
            out.append(TextMessage(cw.encode_command(cw.ReportQueueDrained(), fmt)))
            self._drain = "sent"
        return None

    def _allowance(self, now: float, available: int, *, last: bool) -> tuple[int, float | None]:
        """Frames to send now (0..available), and, if none, when to look again (None: only on new
        input). `last`: the response has ended, so no more audio will join these frames."""
        if self._xoff or self._paused_at is not None:
            return 0, None  # XON, resume or flush will call for a poll
        return self._budget.batch(
            now, available, per_message=self._per_message, low_water_s=self.low_water_s, last=last
        )

    def _send(self, r: _Response, nbytes: int, now: float, out: list[Outgoing], fmt: ControlFormat) -> None:
        """One binary message of the response's next `nbytes`, and a mark after it when due."""
        chunk = bytes(r.buf[:nbytes])
        del r.buf[:nbytes]
        end = r.queued_bytes - len(r.buf)  # response offset just past the chunk
        stamps: tuple[float, ...] = ()
        audible = True
        if r.stamps and r.stamps[0][0] < end:
            audible = self._budget.queued_frames(now) == 0  # looked at only when a chunk is stamped
            while r.stamps and r.stamps[0][0] < end:
                stamps += (r.stamps.popleft()[1],)
        ms, entries = len(chunk) / self._bytes_per_ms, -(-len(chunk) // self._frame)
        out.append(BinaryMessage(chunk, stamps, audible))
        if r.start_total_ms is None:
            r.start_total_ms = self._sent_total_ms
        r.sent_ms += ms
        self._sent_total_ms += ms
        self._unmarked_ms += ms
        self.counters.frames_out += entries
        self._budget.on_sent(entries, now)
        if self._unmarked_ms >= self.marks_every_ms - 1e-6 and self._may_mark():
            self._add_mark(out, fmt, "m", r)

    def _may_mark(self) -> bool:
        return self._has_marks == "yes" or (self._has_marks == "probe" and self._probe is None)

    def _add_mark(self, out: list[Outgoing], fmt: ControlFormat, kind: str, r: _Response | None) -> None:
        """After everything sent so far, attributed to response `r`: a mark ("m"), the hangup drain
        mark ("h"), or the id of a response's STOP_MEDIA_BUFFERING ("r"), which fires the same way."""
        self._mark_seq += 1
        cid = f"{kind}{self._mark_seq % _ID_WRAP:x}"
        drain, probe = kind == "h", kind == "m" and self._has_marks == "probe"
        if probe:
            self._probe = cid
        seq, sent_ms = (r.seq, r.sent_ms) if r else (0, 0.0)
        self._marks[cid] = _Mark(seq, sent_ms, self._sent_total_ms, drain, probe)
        self._unmarked_ms = 0.0
        cmd = cw.StopMediaBuffering(cid) if kind == "r" else cw.MarkMedia(cid)
        out.append(TextMessage(cw.encode_command(cmd, fmt)))
