"""Messages and write-loop CPU of one chan_websocket call's downlink: `python -m bench.leg_micro`.

The real `ChanWebsocketLeg` runs on a simulated clock against `bridge.simulate`'s ChannelModel (the
independent fake of chan_websocket: one frame played per 20 ms tick, marks acknowledged when reached),
fed by three kinds of model audio:
- `echo`: 20 ms pieces in real time (the echo provider: nothing to batch without adding latency);
- `200ms`: 200 ms deltas in real time;
- `model`: replies of 3 s in 40-200 ms deltas at 4x real time, one every 5 s (the OpenAI fake's pace).

Reported per second of audio played: binary and text messages to Asterisk, text events back, frames
per binary message, write-loop wake-ups (polls); and the CPU of the write loop, in µs per second of
audio: `leg` = `queue_audio`, `poll` and `receive_text` for Asterisk's replies, `send` = aiohttp's
WebSocket writer framing each message onto a real socket (a thread drains the other end). Times are
perf_counter spans less the timer's own cost, best of `--repeat` runs (one core idle enough for the
draining thread is assumed). The protocol is checked on the way: any error the
simulated Asterisk counts (a dropped partial frame, a full queue...) aborts the run.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import WSMsgType
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_websocket import WebSocketWriter

from bridge.asterisk.chan_websocket_leg import ChanWebsocketLeg
from bridge.asterisk.leg_events import BinaryMessage, CloseSocket, Outgoing, PlayedUpTo, TextMessage
from bridge.audio.formats import FORMATS, AudioFormat
from bridge.simulate.chan_model import ChannelModel
from bridge.simulate.wire import Dialect, EventFormatter

TICK_S = 0.020
PATTERNS = ("echo", "200ms", "model")
LegFactory = Callable[[], ChanWebsocketLeg]


@dataclass(frozen=True, slots=True)
class Delivery:
    at: float
    nbytes: int  # model audio queued at `at`; 0 ends the response


@dataclass(slots=True)
class Result:
    pattern: str
    audio_s: float = 0.0
    binary: int = 0
    text_out: int = 0
    text_in: int = 0
    frames: int = 0
    polls: int = 0
    max_queue: int = 0
    leg_us: float = 0.0  # total, this run
    send_us: float = 0.0

    def per_s(self, value: float) -> float:
        return value / self.audio_s if self.audio_s else 0.0


def deliveries(pattern: str, fmt: AudioFormat, seconds: float, seed: int = 1) -> list[Delivery]:
    rng = random.Random(seed)
    frame = fmt.frame_bytes
    out: list[Delivery] = []
    if pattern == "echo":
        out = [
            Delivery(0.2 + k * TICK_S + rng.uniform(0.0, 0.002), frame) for k in range(int(seconds / TICK_S))
        ]
    elif pattern == "200ms":
        out = [Delivery(0.2 + k * 0.2, 10 * frame) for k in range(int(seconds / 0.2))]
    else:
        start = 0.2
        while start + 3.0 < seconds:
            t, done = start, 0
            while done < 3000:
                ms = min(rng.randint(40, 200), 3000 - done)
                out.append(Delivery(t, fmt.bytes_for_ms(ms)))
                t += ms / 1000 / 4
                done += ms
            out.append(Delivery(t, 0))
            start += 5.0
    return out


class Sink:
    """The driver's send path: aiohttp's WebSocket writer on a real socket, drained by a thread."""

    def __init__(self) -> None:
        self._ours, self._theirs = socket.socketpair()
        for sock in (self._ours, self._theirs):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self.writer: WebSocketWriter | None = None

    def _drain(self) -> None:
        while self._theirs.recv(1 << 16):
            pass

    async def open(self) -> WebSocketWriter:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.connect_accepted_socket(lambda: BaseProtocol(loop), self._ours)
        self._drainer.start()
        self.writer = WebSocketWriter(protocol, transport)
        return self.writer

    def close(self) -> None:
        self._ours.close()
        self._drainer.join(5)
        self._theirs.close()


async def run(
    pattern: str, fmt: AudioFormat, seconds: float, make_leg: LegFactory = ChanWebsocketLeg, *, timed: bool
) -> Result:
    """One call's downlink on a simulated clock, polled as the driver polls: on new model audio, on
    Asterisk text that can change the output, and at the time `poll` asked for. With `timed`, the leg
    calls and the sends are timed (perf_counter, less the timer's own cost)."""
    dialect = Dialect.of("json")
    asterisk = ChannelModel(fmt, dialect, EventFormatter(dialect, "1.2"))
    leg = make_leg()
    result = Result(pattern)
    start = asterisk.events.media_start(
        connection_id="c",
        channel="WebSocket/c/0x1",
        format_name=fmt.name,
        optimal_frame_size=fmt.frame_bytes,
        ptime=20,
        channel_variables={},
    )
    leg.receive_text(start, 0.0)
    sink = Sink()
    writer = await sink.open()
    clock, overhead = (time.perf_counter_ns, timer_overhead_ns()) if timed else (lambda: 0, 0)
    todo = deliveries(pattern, fmt, seconds)
    now, next_tick, i, wake, played = 0.0, TICK_S, 0, None, 0
    end = todo[-1].at + 15.0

    def hear(replies: list[str]) -> bool:
        """Asterisk's text to the leg; True if the driver would wake the write loop for it."""
        t0 = clock()
        events = [event for text in replies for event in leg.receive_text(text, now)]
        result.leg_us += (clock() - t0 - overhead) / 1000
        result.text_in += len(replies)
        return any(not isinstance(event, PlayedUpTo) for event in events)

    try:
        while now < end:
            candidates = [next_tick] + ([todo[i].at] if i < len(todo) else []) + ([wake] if wake else [])
            now = max(now, min(candidates))
            need_poll = wake is not None and wake <= now
            while i < len(todo) and todo[i].at <= now:
                t0 = clock()
                if todo[i].nbytes:
                    leg.queue_audio(bytes(todo[i].nbytes), received_at=now)
                else:
                    leg.end_response()
                result.leg_us += (clock() - t0 - overhead) / 1000
                i, need_poll = i + 1, True
            if now >= next_tick - 1e-12:
                played += asterisk.tick() is not None
                next_tick += TICK_S
                need_poll = hear(asterisk.take_outbox()) or need_poll
            while need_poll:  # the write loop's wake-up: poll and send
                t0 = clock()
                messages, wake = leg.poll(now)
                t1 = clock()
                await send(writer, messages)
                t2 = clock()
                result.polls += 1
                result.leg_us += (t1 - t0 - overhead) / 1000
                result.send_us += (t2 - t1 - overhead) / 1000
                deliver(asterisk, messages, result, fmt)
                need_poll = hear(asterisk.take_outbox())
    finally:
        sink.close()
    if asterisk.stats.error_counts:
        raise RuntimeError(f"the simulated Asterisk counted errors: {asterisk.stats.errors[:3]}")
    result.audio_s = played * TICK_S
    result.max_queue = asterisk.stats.max_queue_depth
    return result


def timer_overhead_ns() -> int:
    """What one `clock() - clock()` pair costs by itself (subtracted from every timed span)."""
    samples = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        samples.append(time.perf_counter_ns() - t0)
    return sorted(samples)[len(samples) // 2]


async def send(writer: WebSocketWriter, messages: list[Outgoing]) -> None:
    for message in messages:  # as ChanWebsocketMediaLeg._write_loop does
        if isinstance(message, BinaryMessage):
            await writer.send_frame(message.data, WSMsgType.BINARY)
        elif isinstance(message, TextMessage):
            await writer.send_frame(message.text.encode(), WSMsgType.TEXT)
        elif isinstance(message, CloseSocket):
            raise RuntimeError("unexpected close")


def deliver(asterisk: ChannelModel, messages: list[Outgoing], result: Result, fmt: AudioFormat) -> None:
    for message in messages:
        if isinstance(message, BinaryMessage):
            result.binary += 1
            result.frames += -(-len(message.data) // fmt.frame_bytes)
            asterisk.receive_binary(message.data)
        elif isinstance(message, TextMessage):
            result.text_out += 1
            asterisk.receive_text(message.text.encode())


def measure(pattern: str, fmt: AudioFormat, seconds: float, repeat: int, make_leg: LegFactory) -> Result:
    counted = asyncio.run(run(pattern, fmt, seconds, make_leg, timed=False))
    best: Result | None = None
    for _ in range(repeat):
        timed = asyncio.run(run(pattern, fmt, seconds, make_leg, timed=True))
        if best is None or timed.leg_us + timed.send_us < best.leg_us + best.send_us:
            best = timed
    assert best is not None
    counted.leg_us, counted.send_us = best.leg_us, best.send_us
    return counted


def table(results: list[Result]) -> str:
    head = (
        f"{'pattern':<8}{'bin/s':>7}{'text/s':>8}{'in/s':>7}{'frames/msg':>11}{'polls/s':>9}"
        f"{'max q':>7}{'leg µs/s':>10}{'send µs/s':>11}{'total µs/s':>12}"
    )
    rows = [head]
    for r in results:
        rows.append(
            f"{r.pattern:<8}{r.per_s(r.binary):7.1f}{r.per_s(r.text_out):8.1f}{r.per_s(r.text_in):7.1f}"
            f"{r.frames / max(r.binary, 1):11.1f}{r.per_s(r.polls):9.1f}{r.max_queue:7d}"
            f"{r.per_s(r.leg_us):10.0f}{r.per_s(r.send_us):11.0f}{r.per_s(r.leg_us + r.send_us):12.0f}"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None, make_leg: LegFactory = ChanWebsocketLeg) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.leg_micro", description=__doc__.split("\n")[0])
    parser.add_argument("--format", default="ulaw", choices=sorted(FORMATS))
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated seconds per pattern")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per pattern (the best counts)")
    parser.add_argument("--pattern", action="append", choices=PATTERNS, help="default: all")
    args = parser.parse_args(argv)
    fmt = FORMATS[args.format]
    results = [measure(p, fmt, args.seconds, args.repeat, make_leg) for p in args.pattern or PATTERNS]
    print(f"chan_websocket downlink, {fmt.name}, per second of audio played ({args.seconds:g} s simulated)")
    print(table(results))


if __name__ == "__main__":
    main()
