"""The AudioSocket peer: connects to the bridge like Asterisk's `Dial(AudioSocket/host:port/uuid/c(slinNN))`.

Sends `01 00 10` + the 16-byte UUID, then one typed audio message per 20 ms on an absolute clock, DTMF
as type 0x03, and hangs up by closing the socket (Asterisk never sends 0x00; `audiosocket_send_hangup`
sends it first anyway, for tests). AudioSocket has no queue and no re-timing on Asterisk's side, so
every message the bridge sends is "played" on arrival; arrival times are what the caller hears.
A 0x00 from the bridge ends the call at once; a non-audio type is a read failure that ends it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections import Counter
from typing import Final, Literal

from bridge.simulate.options import AUDIOSOCKET_TYPES, SimulatedCallOptions
from bridge.simulate.runtime import (
    PTIME_S,
    CallClock,
    CallerAudio,
    Journal,
    SimulationConnectError,
    caller_hangs_up,
    digits_due,
    dtmf_schedule,
)
from bridge.simulate.summary import ArrivalStats, CallSummary, HangupBy, Timeline

KIND_HANGUP: Final = 0x00
KIND_UUID: Final = 0x01
KIND_DTMF: Final = 0x03
KIND_ERROR: Final = 0xFF
AUDIO_KINDS: Final = frozenset(range(0x10, 0x19))
CONNECT_TIMEOUT_S: Final = 2.0  # Asterisk's AudioSocket connect timeout
MAX_ERROR_MESSAGES: Final = 200
MAX_LEAD_MS: Final = 200.0  # audio ahead of real time beyond this is a burst, not jitter


def message(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket message: type, u16 big-endian length, payload."""
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


async def read_message(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(3)
    length = int.from_bytes(head[1:3], "big")
    return head[0], (await reader.readexactly(length) if length else b"")


class AudioSocketCall:
    def __init__(self, opts: SimulatedCallOptions, audio: CallerAudio) -> None:
        self.opts = opts
        self.audio = audio
        self.fmt = opts.audio_format
        self.kind = AUDIOSOCKET_TYPES[self.fmt.name]
        self.clock = CallClock(opts.speed)
        self.journal = Journal(opts, self.clock)
        self.timeline = Timeline(self.fmt)
        self.error_counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.sizes: Counter[int] = Counter()
        self.arrivals: list[float] = []
        self.durations: list[float] = []
        self.bytes_received = 0
        self.frames_sent = 0
        self.bytes_sent = 0
        self.dtmf_sent = ""
        self.bridge_hangup_msg = False

    def _error(self, code: str, text: str) -> None:
        self.error_counts[code] += 1
        if len(self.errors) < MAX_ERROR_MESSAGES:
            self.errors.append(f"{code}: {text}")
        self.journal.add("error", code, text)

    async def run(self) -> CallSummary:
        opts = self.opts
        target = f"{opts.audiosocket_host}:{opts.audiosocket_port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(opts.audiosocket_host, opts.audiosocket_port), CONNECT_TIMEOUT_S
            )
        except TimeoutError as exc:
            raise SimulationConnectError(f"AudioSocket connect to {target} timed out") from exc
        except OSError as exc:
            raise SimulationConnectError(
                f"cannot connect to AudioSocket {target}: {exc.strerror or exc}"
            ) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.clock.start()
        self.journal.add("call", "connected", target)
        writer.write(message(KIND_UUID, uuid.UUID(opts.call_id).bytes))
        receiver = asyncio.create_task(self._receiver(reader))
        sender = asyncio.create_task(self._sender(writer))
        hangup_by: HangupBy = "none"
        try:
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            hangup_by = sender.result() if sender in done else receiver.result()
        finally:
            for task in (receiver, sender):
                task.cancel()
            await asyncio.gather(receiver, sender, return_exceptions=True)
            if hangup_by == "caller" and opts.audiosocket_send_hangup:
                with contextlib.suppress(OSError):
                    writer.write(message(KIND_HANGUP))
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        self.journal.add("call", "closed", hangup_by)
        return self._summary(hangup_by)

    async def _sender(self, writer: asyncio.StreamWriter) -> Literal["caller", "timeout"]:
        opts, audio = self.opts, self.audio
        dtmf = dtmf_schedule(opts)
        max_tick = round(opts.max_seconds / PTIME_S)
        k = 0
        while True:
            await self.clock.until_tick(k)
            data = audio.frame(k)
            writer.write(message(self.kind, data))
            self.frames_sent += 1
            self.bytes_sent += len(data)
            for digit in digits_due(opts, dtmf, k):
                writer.write(message(KIND_DTMF, digit.encode("ascii")))
                self.dtmf_sent += digit
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            k += 1
            if caller_hangs_up(opts, audio, k):
                self.journal.add("call", "caller_hangup")
                return "caller"
            if k >= max_tick:
                if opts.wait_for_bridge_hangup:
                    self._error("bridge_no_hangup", f"bridge did not hang up within {opts.max_seconds:g} s")
                return "timeout"

    async def _receiver(self, reader: asyncio.StreamReader) -> HangupBy:
        try:
            while True:
                kind, payload, arrived_at = await self._read_message(reader)
                if kind == KIND_HANGUP:
                    self.bridge_hangup_msg = True
                    self.journal.add("command", "HANGUP", "0x00")
                    return "bridge"
                if kind not in AUDIO_KINDS:
                    self._error(
                        "bad_message_type",
                        f"type 0x{kind:02x} ({len(payload)} bytes) from the bridge: Asterisk fails the read "
                        "and ends the call (only 0x00 and audio may be sent)",
                    )
                    return "protocol_error"
                if not payload:
                    self._error(
                        "empty_audio", f"audio message 0x{kind:02x} with length 0: invalid, call ends"
                    )
                    return "protocol_error"
                self._audio(kind, payload, arrived_at)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.journal.add("call", "bridge_closed")
            return "bridge"

    async def _read_message(self, reader: asyncio.StreamReader) -> tuple[int, bytes, float | None]:
        """The bridge's next message, and when it arrived (`time.monotonic()`; None: now, as read)."""
        kind, payload = await read_message(reader)
        return kind, payload, None

    def _audio(self, kind: int, payload: bytes, arrived_at: float | None = None) -> None:
        now = self.clock.now() if arrived_at is None else self.clock.at(arrived_at)
        if kind != self.kind:
            self._error(
                "wrong_audio_type",
                f"audio type 0x{kind:02x} on a 0x{self.kind:02x} ({self.fmt.name}) call",
            )
        if len(payload) % 2:
            self._error("odd_length", f"{len(payload)}-byte audio message is not whole 16-bit samples")
        if not self.arrivals:
            self.journal.add("call", "first_audio_arrival", f"{len(payload)} bytes")
        self.arrivals.append(now)
        self.durations.append(self.fmt.ms_for_bytes(len(payload)) / 1000)
        self.sizes[len(payload)] += 1
        self.bytes_received += len(payload)
        self.timeline.arriving(now / PTIME_S, now, payload)

    def _summary(self, hangup_by: HangupBy) -> CallSummary:
        arrival = ArrivalStats.of(self.arrivals, self.durations)
        if arrival.max_lead_ms is not None and arrival.max_lead_ms > MAX_LEAD_MS:
            self._error(
                "burst",
                f"audio arrived up to {arrival.max_lead_ms:.0f} ms ahead of real time: AudioSocket does not "
                "re-time, so the caller hears it sped up or dropped; pace one frame per 20 ms",
            )
        if self.opts.expect_audio and not self.arrivals:
            self._error("no_audio", "the bridge sent no audio")
        first = round(self.arrivals[0] * 1000, 1) if self.arrivals else None
        return CallSummary(
            transport="audiosocket",
            format=self.fmt.name,
            control="audiosocket",
            call_id=self.opts.call_id,
            sample_rate=self.fmt.sample_rate,
            duration_s=round(self.clock.now(), 3),
            frames_sent=self.frames_sent,
            bytes_sent=self.bytes_sent,
            frames_received=len(self.arrivals),
            bytes_received=self.bytes_received,
            messages_received=len(self.arrivals),
            message_sizes=dict(self.sizes),
            first_audio_latency_ms=first,
            first_audio_arrival_ms=first,
            commands={"HANGUP": 1} if self.bridge_hangup_msg else {},
            errors=list(self.errors),
            error_counts=dict(self.error_counts),
            dtmf_sent=self.dtmf_sent,
            hangup_by=hangup_by,
            arrival=arrival,
            played=self.timeline.played,
            records=self.journal.records,
            received_audio=self.timeline.pcm(),
            received_stream=self.timeline.stream(),
        )
