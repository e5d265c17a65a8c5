"""Pieces both peers share: the call clock, the journal, the caller's frames, errors, the webhook."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import aiohttp
import numpy as np

from bridge.audio.formats import AudioFormat
from bridge.simulate.audio_source import leg_frames, read_wav, silence_frame, speech_like_signal
from bridge.simulate.options import WEBHOOK_PATH, PeerRecord, RecordKind, SimulatedCallOptions

PTIME_S = 0.020
DEFAULT_SIGNAL_SECONDS = 6.0  # synthetic caller speech when no audio and no length are given
MAX_SIGNAL_SECONDS = 10.0  # with a longer call the synthetic caller talks this long, then listens


class SimulationConnectError(Exception):
    """The call could not be set up: webhook refused, socket refused, handshake rejected, timeout."""


class CallClock:
    """Call time on an absolute schedule: tick k is due at t0 + k * 20 ms (divided by `speed`).

    On `time.monotonic()`, not the loop's clock: uvloop's `loop.time()` is the time its current iteration
    started, in whole milliseconds, so arrivals read late in a busy iteration would look early."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.t0 = time.monotonic()

    def start(self) -> None:
        self.t0 = time.monotonic()

    def now(self) -> float:
        """Call-time seconds since tick 0."""
        return self.at(time.monotonic())

    def at(self, monotonic: float) -> float:
        """The call time of a `time.monotonic()` reading."""
        return (monotonic - self.t0) * self.speed

    def ticks(self) -> float:
        return self.now() / PTIME_S

    async def until_tick(self, k: int) -> None:
        delay = self.t0 + k * PTIME_S / self.speed - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    async def sleep(self, call_seconds: float) -> None:
        await asyncio.sleep(call_seconds / self.speed)


class Journal:
    """Collects PeerRecords and forwards them live to the options' queue and callback."""

    def __init__(self, opts: SimulatedCallOptions, clock: CallClock) -> None:
        self._opts = opts
        self._clock = clock
        self.records: list[PeerRecord] = []

    def add(self, kind: RecordKind, name: str, detail: str = "", queue_length: int = 0) -> PeerRecord:
        rec = PeerRecord(round(self._clock.now(), 4), kind, name, detail, queue_length)
        self.records.append(rec)
        if self._opts.records is not None:
            self._opts.records.put_nowait(rec)
        if self._opts.on_record is not None:
            self._opts.on_record(rec)
        return rec


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """The caller's frames in the leg format; past the end of the source, silence."""

    frames: tuple[bytes, ...]
    silence: bytes
    call_seconds: float

    @classmethod
    def load(cls, opts: SimulatedCallOptions) -> CallerAudio:
        fmt: AudioFormat = opts.audio_format
        src = opts.audio
        if src.wav_path is not None:
            samples, rate = read_wav(src.wav_path)
        elif src.pcm is not None:
            samples, rate = np.frombuffer(src.pcm, dtype="<i2").astype(np.int16), src.sample_rate
        else:
            rate = fmt.sample_rate
            talk = min(opts.seconds, MAX_SIGNAL_SECONDS) if opts.seconds else DEFAULT_SIGNAL_SECONDS
            samples = speech_like_signal(rate, talk)
        frames = tuple(leg_frames(samples, rate, fmt))
        seconds = opts.seconds if opts.seconds is not None else len(frames) * PTIME_S + opts.tail_seconds
        return cls(frames, silence_frame(fmt), seconds)

    def frame(self, n: int) -> bytes:
        return self.frames[n] if n < len(self.frames) else self.silence

    @property
    def last_tick(self) -> int:
        """Ticks the caller stays on the line (it hangs up when this tick is due)."""
        return round(self.call_seconds / PTIME_S)


def dtmf_schedule(opts: SimulatedCallOptions) -> dict[int, str]:
    """Tick -> digits due at that tick."""
    out: dict[int, str] = {}
    for at, digit in sorted(opts.dtmf):
        tick = round(at / PTIME_S)
        out[tick] = out.get(tick, "") + digit
    return out


def digits_due(opts: SimulatedCallOptions, schedule: dict[int, str], tick: int) -> str:
    """Scheduled digits for this tick plus any the test queued since the last one."""
    digits = schedule.get(tick, "")
    while opts.dtmf_queue is not None and not opts.dtmf_queue.empty():
        digits += opts.dtmf_queue.get_nowait()
    return digits


def caller_hangs_up(opts: SimulatedCallOptions, audio: CallerAudio, next_tick: int) -> bool:
    if opts.hangup_event is not None and opts.hangup_event.is_set():
        return True
    return not opts.wait_for_bridge_hangup and next_tick >= audio.last_tick


async def post_webhook(opts: SimulatedCallOptions, event: str) -> None:
    """POST the PBX's webhook; anything but 2xx is a setup failure."""
    body = {
        "callId": opts.call_id,
        "callerPhone": opts.caller,
        "b_number": opts.called,
        "event": event,
        "websocketUrl": opts.websocket_url,
    }
    headers = {"x-connector-api-key": opts.connector_key} if opts.connector_key else {}
    url = opts.http_base + WEBHOOK_PATH
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json=body, headers=headers) as resp,
        ):
            text = await resp.text()
            if resp.status // 100 != 2:
                raise SimulationConnectError(
                    f"{event} webhook refused: HTTP {resp.status} from {url}: {_short(text)}"
                )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise SimulationConnectError(f"{event} webhook to {url} failed: {exc or type(exc).__name__}") from exc


def _short(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(data, dict) and "error" in data:
        return str(data["error"])[:200]
    return text[:200]


def digits_only(number: str) -> str:
    """E.164 digits without '+', as PBXs put them in the media URL."""
    return "".join(ch for ch in number if ch.isdigit())
