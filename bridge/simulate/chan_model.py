"""Sans-I/O model of Asterisk's chan_websocket, the side that talks to the bridge.

Feed it what the bridge sends (`receive_text`, `receive_binary`), advance its playout timer (`tick`),
and collect what Asterisk would send back (`take_outbox`) plus a journal of what happened
(`take_notes`). No sockets, clocks or logging here; the I/O driver lives in `ws_peer.py`.

Behaviour follows chan_websocket.c as released in 22.10 and the wire captures taken against a real
Asterisk 22.10.1: frames cut at optimal_frame_size, trailing partial chunks dropped outside buffering
mode, a whole message dropped when the queue already holds >= 1000 frames, MEDIA_XOFF once on reaching
900, MEDIA_XON on the first tick that finds the queue below 800 while full, marks and buffering
markers that use no timeslot and fire when they reach the head, FLUSH_MEDIA that discards pending marks
and does not clear the pause, one voice frame per tick. Things the bridge does that Asterisk punishes
(drops, ignores, or closes over) are recorded as errors with a short machine code.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Final, Literal

from bridge.audio.formats import AudioFormat
from bridge.simulate.audio_source import silence_frame
from bridge.simulate.wire import Dialect, EventFormatter

QUEUE_LENGTH_MAX: Final = 1000
QUEUE_LENGTH_XOFF_LEVEL: Final = 900
QUEUE_LENGTH_XON_LEVEL: Final = 800
MAX_TEXT_MESSAGE_LEN: Final = 128
MAX_RX_FRAME_SIZE: Final = 65535  # AST_WEBSOCKET_MAX_RX_PAYLOAD_SIZE: header plus payload
MAX_ERROR_MESSAGES: Final = 200

KNOWN_COMMANDS: Final = frozenset(
    {
        "ANSWER",
        "HANGUP",
        "START_MEDIA_BUFFERING",
        "STOP_MEDIA_BUFFERING",
        "MARK_MEDIA",
        "FLUSH_MEDIA",
        "PAUSE_MEDIA",
        "CONTINUE_MEDIA",
        "REPORT_QUEUE_DRAINED",
        "GET_STATUS",
        "SET_MEDIA_DIRECTION",
    }
)
_DIRECTION_IN_REJECTS: Final = frozenset(
    {"START_MEDIA_BUFFERING", "STOP_MEDIA_BUFFERING", "MARK_MEDIA", "PAUSE_MEDIA", "CONTINUE_MEDIA"}
)

NoteKind = Literal["command", "event", "error"]


@dataclass(frozen=True, slots=True)
class Note:
    """One journal entry: a command received, an event sent, or an error the bridge caused."""

    kind: NoteKind
    name: str
    detail: str
    queue_length: int


@dataclass(frozen=True, slots=True)
class _Marker:
    """A control entry in the playout queue; its text is sent when it reaches the head."""

    kind: Literal["mark", "buffering"]
    correlation_id: str
    text: str


@dataclass(slots=True)
class ChannelStats:
    frames_played: int = 0
    bytes_played: int = 0
    frames_queued: int = 0
    binary_messages: int = 0
    binary_bytes: int = 0
    message_sizes: Counter[int] = field(default_factory=Counter)
    max_queue_depth: int = 0
    xoff_count: int = 0
    xon_count: int = 0
    marks_processed: list[str] = field(default_factory=list)
    marks_flushed: list[str] = field(default_factory=list)
    buffering_completed: list[str] = field(default_factory=list)
    flushes: int = 0
    barge_ins: int = 0  # flushes that actually discarded queued audio
    frames_flushed: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    error_counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what Asterisk only logs, with no effect on the call


def frame_too_big(payload_len: int) -> bool:
    """Whether Asterisk refuses an (unmasked, server-to-client) frame with this payload: close 1009."""
    header = 2 if payload_len <= 125 else 4 if payload_len <= 0xFFFF else 10
    return header + payload_len > MAX_RX_FRAME_SIZE


class ChannelModel:
    """One chan_websocket channel's playout queue and control protocol."""

    def __init__(self, fmt: AudioFormat, dialect: Dialect, events: EventFormatter) -> None:
        self.fmt = fmt
        self.dialect = dialect
        self.events = events
        self.frame_size = fmt.frame_bytes
        self.stats = ChannelStats()
        self.answered = False
        self.hangup_requested = False
        self.direction: Literal["both", "in", "out"] = "both"
        self._queue: deque[bytes | _Marker] = deque()
        self._length = 0
        self._queue_full = False
        self._paused = False
        self._bulk = False
        self._leftover = b""
        self._report_drained = False
        self._outbox: list[str] = []
        self._notes: list[Note] = []

    # ----- outputs -------------------------------------------------------------------------------
    @property
    def queue_length(self) -> int:
        return self._length

    @property
    def sends_caller_audio(self) -> bool:
        return self.direction != "out"

    def take_outbox(self) -> list[str]:
        out, self._outbox = self._outbox, []
        return out

    def take_notes(self) -> list[Note]:
        out, self._notes = self._notes, []
        return out

    # ----- inputs from the bridge ------------------------------------------------------------------
    def receive_text(self, raw: bytes) -> None:
        """One TEXT message, as bytes (its length limit is in bytes)."""
        if not raw:
            self._error("empty_text", "empty TEXT message ignored")
            return
        if len(raw) > MAX_TEXT_MESSAGE_LEN:
            self._error(
                "text_too_long",
                f"TEXT message of {len(raw)} bytes ignored (max {MAX_TEXT_MESSAGE_LEN}): {raw[:40]!r}...",
            )
            return
        text = raw.decode("utf-8", errors="replace").strip()
        if self.dialect.json:
            self._handle_json(text)
        else:
            name, _, arg = text.partition(" ")
            self._handle_command(name, arg if arg else None, None)

    def receive_binary(self, data: bytes) -> None:
        st = self.stats
        st.binary_messages += 1
        st.binary_bytes += len(data)
        st.message_sizes[len(data)] += 1
        if _looks_like_command(data):
            self._error(
                "command_as_binary", f"control command sent as BINARY is played as audio: {data[:30]!r}"
            )
        if self.direction == "in":
            self._error("media_direction_in", f"{len(data)}-byte message dropped: media direction is 'in'")
            return
        if self._length >= QUEUE_LENGTH_MAX:
            self._error(
                "queue_full_drop",
                f"{len(data)}-byte message dropped whole: queue holds {self._length} frames "
                f"(max {QUEUE_LENGTH_MAX})",
            )
            return
        if self._bulk and self._leftover:
            need = self.frame_size - len(self._leftover)
            self._leftover += data[:need]
            data = data[need:]
            if len(self._leftover) < self.frame_size:
                return
            self._enqueue_frame(self._leftover)
            self._leftover = b""
        elif self._leftover:
            self._leftover = b""
        full = len(data) - len(data) % self.frame_size
        for start in range(0, full, self.frame_size):
            self._enqueue_frame(data[start : start + self.frame_size])
        rest = data[full:]
        if rest and self._bulk:
            self._leftover = rest
        elif rest:
            self._error(
                "partial_frame_dropped",
                f"trailing {len(rest)} of {len(data)} bytes dropped: not a multiple of "
                f"{self.frame_size} outside START/STOP_MEDIA_BUFFERING",
            )

    def fragmented(self, fragments: int, total: int) -> None:
        self._error(
            "fragmented_message",
            f"message of {total} bytes sent in {fragments} frames (CONTINUATION): 22.8-22.9 hang up",
        )

    def oversize(self, payload_len: int) -> None:
        self._error("oversize_frame", f"{payload_len}-byte frame exceeds {MAX_RX_FRAME_SIZE}: close 1009")

    def error(self, code: str, message: str) -> None:
        """An error detected by the driver (e.g. an abnormal close)."""
        self._error(code, message)

    # ----- inputs from the Asterisk side -------------------------------------------------------------
    def tick(self) -> bytes | None:
        """One playout timer tick: the voice frame handed to the core, or None."""
        if self.direction == "in" or self._paused:
            return None
        if self._queue_full and self._length < QUEUE_LENGTH_XON_LEVEL:
            self._queue_full = False
            self.stats.xon_count += 1
            self._send("MEDIA_XON", self.events.nodata("MEDIA_XON"))
        if not self._queue:
            if self._report_drained:
                self._report_drained = False
                self._send("QUEUE_DRAINED", self.events.nodata("QUEUE_DRAINED"))
            return None
        head = self._queue.popleft()
        while isinstance(head, _Marker):
            self._fire(head)
            if not self._queue:
                return None
            head = self._queue.popleft()
        self._length -= 1
        self.stats.frames_played += 1
        self.stats.bytes_played += len(head)
        if self.dialect.pads_short_frames and len(head) < self.frame_size:
            head += silence_frame(self.fmt)[len(head) :]
        return head

    def dtmf(self, digit: str) -> None:
        self._send("DTMF_END", self.events.dtmf_end(digit))

    def discard_on_hangup(self) -> int:
        """The channel is gone: queued frames are never played. Returns how many there were."""
        lost = self._length
        self._queue.clear()
        self._length = 0
        return lost

    # ----- internals -----------------------------------------------------------------------------------
    def _handle_json(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self._error("invalid_json", f"invalid JSON command: {text[:60]!r}")
            self._send_error("Unable to parse JSON command")
            return
        obj = msg if isinstance(msg, dict) else {}
        command = obj.get("command")
        corr = obj.get("correlation_id")
        direction = obj.get("direction")
        self._handle_command(
            command if isinstance(command, str) else "",
            corr if isinstance(corr, str) else None,
            direction if isinstance(direction, str) else None,
        )

    def _handle_command(self, name: str, arg: str | None, direction: str | None) -> None:
        d = self.dialect
        known = name in KNOWN_COMMANDS and (name != "MARK_MEDIA" or d.has_marks)
        known = known and (name != "SET_MEDIA_DIRECTION" or d.has_direction)
        if not known:
            self.stats.commands["<unknown>"] += 1
            self._note("command", name or "<none>", arg or "")
            if name == "MARK_MEDIA":
                # A bridge may probe for marks on plain text; before 22.8 Asterisk logs a WARNING, no more.
                version = ".".join(map(str, d.version))
                if len(self.stats.warnings) < MAX_ERROR_MESSAGES:
                    self.stats.warnings.append(f"unknown command 'MARK_MEDIA' ignored (Asterisk {version})")
            else:
                self._error("unknown_command", f"unknown command {name!r} ignored")
            return
        self.stats.commands[name] += 1
        self._note("command", name, arg or direction or "")
        if self.direction == "in" and name in _DIRECTION_IN_REJECTS:
            self._reject(name, f"{name} not supported when media direction is 'in'")
            return
        if name == "ANSWER":
            self.answered = True
        elif name == "HANGUP":
            self.hangup_requested = True
        elif name == "START_MEDIA_BUFFERING":
            self._bulk = True
        elif name == "STOP_MEDIA_BUFFERING":
            self._bulk = False
            if self._leftover:
                self._enqueue_frame(self._leftover)
            self._leftover = b""
            cid = arg or ""
            self._queue.append(
                _Marker("buffering", cid, self.events.with_id("MEDIA_BUFFERING_COMPLETED", cid))
            )
        elif name == "MARK_MEDIA":
            cid = arg or ""
            self._queue.append(_Marker("mark", cid, self.events.with_id("MEDIA_MARK_PROCESSED", cid)))
        elif name == "FLUSH_MEDIA":
            self._flush()
        elif name == "REPORT_QUEUE_DRAINED":
            self._report_drained = True
        elif name == "GET_STATUS":
            self._send(
                "STATUS",
                self.events.status(self._length, self._queue_full, self._bulk, self._paused),
            )
        elif name == "PAUSE_MEDIA":
            self._paused = True
        elif name == "CONTINUE_MEDIA":
            self._paused = False
        else:
            self._set_direction(direction)

    def _set_direction(self, direction: str | None) -> None:
        if not self.dialect.json:
            self._reject("SET_MEDIA_DIRECTION", "SET_MEDIA_DIRECTION is only supported with JSON control")
        elif direction in ("both", "in", "out"):
            self.direction = direction  # type: ignore[assignment]  # narrowed by the tuple check
        else:
            self._reject(
                "SET_MEDIA_DIRECTION", f"'{direction}' is not a valid direction for SET_MEDIA_DIRECTION.\n"
            )

    def _flush(self) -> None:
        st = self.stats
        st.flushes += 1
        dropped = self._length
        for entry in self._queue:
            if isinstance(entry, _Marker) and entry.kind == "mark":
                st.marks_flushed.append(entry.correlation_id)
        if dropped:
            st.barge_ins += 1
            st.frames_flushed += dropped
        self._queue.clear()
        self._length = 0
        self._bulk = False
        self._leftover = b""

    def _enqueue_frame(self, frame: bytes) -> None:
        self._queue.append(frame)
        self._length += 1
        self.stats.frames_queued += 1
        self.stats.max_queue_depth = max(self.stats.max_queue_depth, self._length)
        if not self._queue_full and self._length >= QUEUE_LENGTH_XOFF_LEVEL:
            self._queue_full = True
            self.stats.xoff_count += 1
            self._send("MEDIA_XOFF", self.events.nodata("MEDIA_XOFF"))

    def _fire(self, marker: _Marker) -> None:
        if marker.kind == "mark":
            self.stats.marks_processed.append(marker.correlation_id)
            self._send("MEDIA_MARK_PROCESSED", marker.text, marker.correlation_id)
        else:
            self.stats.buffering_completed.append(marker.correlation_id)
            self._send("MEDIA_BUFFERING_COMPLETED", marker.text, marker.correlation_id)

    def _reject(self, command: str, text: str) -> None:
        self._error("command_rejected", f"{command} rejected: {text.strip()}")
        self._send_error(text)

    def _send_error(self, text: str) -> None:
        if self.dialect.has_error_event:
            self._send("ERROR", self.events.error(text), text.strip())

    def _send(self, name: str, text: str, detail: str = "") -> None:
        self.stats.events[name] += 1
        self._outbox.append(text)
        self._note("event", name, detail)

    def _note(self, kind: NoteKind, name: str, detail: str) -> None:
        self._notes.append(Note(kind, name, detail, self._length))

    def _error(self, code: str, message: str) -> None:
        st = self.stats
        st.error_counts[code] += 1
        if len(st.errors) < MAX_ERROR_MESSAGES:
            st.errors.append(f"{code}: {message}")
        self._note("error", code, message)


def _looks_like_command(data: bytes) -> bool:
    head = data[:24].lstrip()
    if head.startswith(b'{"command"') or head.startswith(b'{ "command"'):
        return True
    word = head.split(b" ", 1)[0].decode("ascii", errors="replace")
    return word in KNOWN_COMMANDS
