"""The chan_websocket peer: connects to the bridge like Asterisk 22.10 dialing `WebSocket/<conn>/...`.

I/O only; the protocol lives in `chan_model.ChannelModel`. One connection, three tasks: the receiver
(feeds the model), the call clock (one playout tick and one caller frame per 20 ms on an absolute
schedule, DTMF, caller hangup) and a single writer (keeps every outgoing message in order).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import time
from typing import Literal
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.typing import Subprotocol

from bridge.simulate.chan_model import ChannelModel, frame_too_big
from bridge.simulate.options import SimulatedCallOptions
from bridge.simulate.runtime import (
    PTIME_S,
    CallClock,
    CallerAudio,
    Journal,
    SimulationConnectError,
    caller_hangs_up,
    digits_due,
    digits_only,
    dtmf_schedule,
)
from bridge.simulate.summary import ArrivalStats, CallSummary, HangupBy, Timeline
from bridge.simulate.wire import Dialect, EventFormatter

_WRITER_DRAIN_S = 1.0
_CLOSE_S = 2.0


def media_url(opts: SimulatedCallOptions) -> str:
    query = urlencode(
        {
            "callId": opts.call_id,
            "aNumberE164": digits_only(opts.caller),
            "bNumberE164": digits_only(opts.called),
            **opts.query,
        }
    )
    return f"{opts.websocket_url}?{query}"


async def open_media_socket(opts: SimulatedCallOptions) -> ClientConnection:
    """The upgrade exactly as Asterisk sends it: subprotocol `media`, no extensions, no User-Agent."""
    headers: dict[str, str] = {}
    credentials = opts.media_credentials
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    url = media_url(opts)
    try:
        return await connect(
            url,
            subprotocols=[Subprotocol("media")],
            compression=None,
            additional_headers=headers,
            user_agent_header=None,
            proxy=None,
            open_timeout=opts.connect_timeout,
            ping_interval=None,
            max_size=None,  # size limits are checked per frame, as Asterisk does
            close_timeout=_CLOSE_S,
        )
    except InvalidStatus as exc:
        raise SimulationConnectError(
            f"media socket refused: HTTP {exc.response.status_code} for {url}"
        ) from exc
    except TimeoutError as exc:
        raise SimulationConnectError(
            f"media socket upgrade not completed within {opts.connect_timeout:g} s "
            f"(Asterisk's connection_timeout): {url}"
        ) from exc
    except (InvalidHandshake, InvalidURI) as exc:
        raise SimulationConnectError(f"media socket handshake rejected ({exc}): {url}") from exc
    except OSError as exc:
        raise SimulationConnectError(f"cannot connect to {url}: {exc.strerror or exc}") from exc


def new_channel_id() -> str:
    """An Asterisk-style uniqueid: epoch seconds, a dot, a sequence number."""
    return f"{int(time.time())}.{random.randint(1, 999)}"  # noqa: S311 - not a secret


class WebSocketCall:
    """One connected call; `run()` plays it to the end and returns the summary."""

    def __init__(self, opts: SimulatedCallOptions, ws: ClientConnection, audio: CallerAudio) -> None:
        self.opts = opts
        self.ws = ws
        self.audio = audio
        self.fmt = opts.audio_format
        self.dialect = Dialect.of(opts.control, opts.plain_variant)
        self.channel_id = opts.channel_id or new_channel_id()
        self.model = ChannelModel(self.fmt, self.dialect, EventFormatter(self.dialect, self.channel_id))
        self.model.direction = opts.direction  # the dial option d(); SET_MEDIA_DIRECTION changes it later
        self.clock = CallClock(opts.speed)
        self.journal = Journal(opts, self.clock)
        self.timeline = Timeline(self.fmt)
        self.outgoing: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.closing = False
        self.frames_sent = 0
        self.bytes_sent = 0
        self.arrivals: list[float] = []
        self.first_played: float | None = None
        self.dtmf_sent = ""
        self.close_to_send = 1000

    def media_start(self) -> str:
        conn = self.opts.connection_id
        direction = f"d({self.opts.direction})" if self.opts.direction != "both" else ""
        params = {
            "callId": self.opts.call_id,
            "aNumberE164": digits_only(self.opts.caller),
            "bNumberE164": digits_only(self.opts.called),
            **self.opts.query,
        }
        dial = (
            f"{conn}/c({self.fmt.name})f({'json' if self.dialect.json else 'plain-text'}){direction}"
            f"v({','.join(f'{k}={v}' for k, v in params.items())})"
        )
        variables = {
            "DIALEDPEERNUMBER": dial,
            "MEDIA_WEBSOCKET_CONNECTION_ID": conn,
            "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": str(self.fmt.frame_bytes),
            # The samples mark the caller with `_BRIDGE_CALL_ID`, which the WebSocket channel inherits as
            # BRIDGE_CALL_ID (captures ws_dtmf_json.jsonl: inherited variables come last).
            "BRIDGE_CALL_ID": self.opts.call_id,
            **self.opts.channel_variables,
        }
        return self.model.events.media_start(
            connection_id=conn,
            channel=f"WebSocket/{conn}/0x{random.getrandbits(44) | (0x7F << 40):012x}",
            format_name=self.fmt.name,
            optimal_frame_size=self.fmt.frame_bytes,
            ptime=20,
            channel_variables=variables,
            modes={"passthrough": False, "unbuffered": False} if self.opts.announce_modes else None,
        )

    async def run(self) -> CallSummary:
        self.journal.add("call", "connected", f"subprotocol={self.ws.subprotocol}")
        start = self.media_start()
        self.clock.start()
        self.outgoing.put_nowait(start)  # first in the writer's queue: before any caller frame
        self.journal.add("event", "MEDIA_START", start)
        writer = asyncio.create_task(self._writer())
        receiver = asyncio.create_task(self._receiver())
        ticker = asyncio.create_task(self._clock_loop())
        try:
            done, _ = await asyncio.wait({receiver, ticker}, return_when=asyncio.FIRST_COMPLETED)
            hangup_by: HangupBy = ticker.result() if ticker in done else receiver.result()
            self.closing = True
            ticker.cancel()
            await self._finish_writer(writer, drain=hangup_by != "protocol_error")
            if not self.ws.protocol.close_sent and not self.ws.protocol.close_rcvd:
                await self.ws.close(self.close_to_send)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(receiver), _CLOSE_S)
        finally:
            for task in (writer, receiver, ticker):
                task.cancel()
            await asyncio.gather(writer, receiver, ticker, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.ws.close()
        return self._summary(hangup_by)

    async def _writer(self) -> None:
        while (item := await self.outgoing.get()) is not None:
            try:
                await self.ws.send(item)
            except ConnectionClosed:
                return

    async def _finish_writer(self, writer: asyncio.Task[None], *, drain: bool) -> None:
        if drain:
            self.outgoing.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(writer), _WRITER_DRAIN_S)
        writer.cancel()

    async def _receiver(self) -> HangupBy:
        model = self.model
        try:
            while True:
                parts: list[bytes] = []
                is_text = False
                async for fragment in self.ws.recv_streaming():
                    is_text = isinstance(fragment, str)
                    data = fragment.encode() if isinstance(fragment, str) else fragment
                    if frame_too_big(len(data)) and not self.closing:
                        model.oversize(len(data))
                        self._pump()
                        self.close_to_send = 1009
                        return "protocol_error"
                    parts.append(data)
                if self.closing:
                    continue
                message = b"".join(parts)
                if len(parts) > 1:
                    model.fragmented(len(parts), len(message))
                if is_text:
                    model.receive_text(message)
                else:
                    if not self.arrivals:
                        self.journal.add(
                            "call", "first_audio_arrival", f"{len(message)} bytes", model.queue_length
                        )
                    self.arrivals.append(self.clock.now())
                    model.receive_binary(message)
                self._pump()
                if model.hangup_requested:
                    return "bridge"
        except ConnectionClosed as exc:
            if self.closing:
                return "caller"
            if exc.rcvd is None:
                model.error("connection_lost", f"connection lost without a close frame ({exc})")
                self._pump()
            return "bridge"

    async def _clock_loop(self) -> Literal["caller", "timeout"]:
        opts, model, audio = self.opts, self.model, self.audio
        dtmf = dtmf_schedule(opts)
        max_tick = round(opts.max_seconds / PTIME_S)
        k = 0
        while True:
            await self.clock.until_tick(k)
            now = self.clock.now()
            frame = model.tick()
            if frame is not None:
                if self.first_played is None:
                    self.first_played = k * 20.0
                    self.journal.add("call", "first_audio_played", f"tick {k}", model.queue_length)
                self.timeline.at_tick(k, now, frame)
            if model.sends_caller_audio:
                data = audio.frame(k)
                self.outgoing.put_nowait(data)
                self.frames_sent += 1
                self.bytes_sent += len(data)
            for digit in digits_due(opts, dtmf, k):
                model.dtmf(digit)
                self.dtmf_sent += digit
            self._pump()
            k += 1
            if caller_hangs_up(opts, audio, k):
                self.journal.add("call", "caller_hangup", "", model.queue_length)
                return "caller"
            if k >= max_tick:
                if opts.wait_for_bridge_hangup:
                    model.error("bridge_no_hangup", f"bridge did not hang up within {opts.max_seconds:g} s")
                    self._pump()
                return "timeout"

    def _pump(self) -> None:
        """Move the model's outgoing texts to the writer and its notes to the journal."""
        for text in self.model.take_outbox():
            self.outgoing.put_nowait(text)
        for note in self.model.take_notes():
            self.journal.add(note.kind, note.name, note.detail, note.queue_length)

    def _summary(self, hangup_by: HangupBy) -> CallSummary:
        model, st, proto = self.model, self.model.stats, self.ws.protocol
        lost = model.discard_on_hangup()
        # The close frame that ended the call: the bridge's if it closed first, else ours.
        bridge_first = proto.close_rcvd_then_sent or proto.close_sent is None
        ender = proto.close_rcvd if bridge_first else proto.close_sent
        summary = CallSummary(
            transport="chan_websocket",
            format=self.fmt.name,
            control=self.dialect.label,
            call_id=self.opts.call_id,
            channel_id=self.channel_id,
            sample_rate=self.fmt.sample_rate,
            duration_s=round(self.clock.now(), 3),
            frames_sent=self.frames_sent,
            bytes_sent=self.bytes_sent,
            frames_received=st.frames_played,
            bytes_received=st.binary_bytes,
            messages_received=st.binary_messages,
            message_sizes=dict(st.message_sizes),
            first_audio_latency_ms=self.first_played,
            first_audio_arrival_ms=round(self.arrivals[0] * 1000, 1) if self.arrivals else None,
            barge_ins=st.barge_ins,
            flushes=st.flushes,
            frames_flushed=st.frames_flushed,
            commands=dict(st.commands),
            events=dict(st.events),
            max_queue_depth=st.max_queue_depth,
            xoff_count=st.xoff_count,
            xon_count=st.xon_count,
            marks_processed=list(st.marks_processed),
            marks_flushed=list(st.marks_flushed),
            buffering_completed=list(st.buffering_completed),
            frames_queued_at_hangup=lost,
            dtmf_sent=self.dtmf_sent,
            hangup_by=hangup_by,
            close_code=ender.code if ender else None,
            close_reason=ender.reason if ender else "",
            arrival=ArrivalStats.of(self.arrivals),
            played=self.timeline.played,
            records=self.journal.records,
            received_audio=self.timeline.pcm(),
            received_stream=self.timeline.stream(),
        )
        summary.warnings.extend(st.warnings)
        if hangup_by == "bridge" and lost:
            summary.warnings.append(
                f"bridge hung up with {lost} frames ({lost * 20} ms) still queued: "
                "the caller never heard them"
            )
        if self.opts.expect_audio and st.frames_played == 0:
            model.error("no_audio", "the bridge sent no audio that was played to the caller")
        summary.errors = list(st.errors)
        summary.error_counts = dict(st.error_counts)
        return summary
