"""The `echo` provider: plays the caller back ~200 ms later, like a model that repeats everything.

It is the telephony engineer's wiring test and the test suite's model. It also
behaves like a model on barge-in: when the caller starts speaking (VAD onset)
while the echo is still playing earlier speech, it announces the interruption,
drops what it had not played yet and starts a new response.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator

from bridge.audio.convert import Transcoder
from bridge.audio.formats import AudioFormat, slin_at
from bridge.audio.vad import SpeechDetector, SpeechStarted
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    ModelFormats,
    Provider,
    ProviderEvent,
)

EVENT_QUEUE_LIMIT = 512  # ~10 s of 20 ms chunks; the session drains it continuously
# Still "playing" this long after the last speech it released: a caller who starts again that soon
# is talking over the echo of their previous phrase.
PLAYING_HOLD_MS = 250.0


class EchoProvider(Provider):
    name = "echo"
    reports_caller_voice = True  # its barge-in VAD's decisions serve the runner's local barge-in too

    def __init__(self, delay_ms: float = 200.0, vad_aggressiveness: int = 2) -> None:
        self._delay_ms = delay_ms
        self._aggressiveness = vad_aggressiveness
        self._events: asyncio.Queue[ProviderEvent | None] = asyncio.Queue(EVENT_QUEUE_LIMIT)
        self._delay_line: deque[tuple[bytes, bool]] = deque()
        self._held_bytes = 0
        self._delay_bytes = 0
        self._released_ms = 0.0
        self._speech_released_at_ms: float | None = None
        self._response_numbers = itertools.count(1)
        self._response_id = "echo-1"
        self._to_slin: Transcoder | None = None
        self._format: AudioFormat | None = None
        self._detector: SpeechDetector | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.interruptions = 0
        self.dropped_events = 0
        self._closed = False

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        return ModelFormats(input=leg, output=leg)  # whatever the leg carries: no transcoding at all

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        fmt = formats.input
        self._delay_bytes = fmt.bytes_for_ms(self._delay_ms)
        self._format = fmt
        self._loop = asyncio.get_running_loop()
        self._to_slin = Transcoder(fmt, slin_at(fmt.sample_rate))
        # A short onset and hangover: a caller who starts again while their echo still plays interrupts it.
        self._detector = SpeechDetector(
            fmt.sample_rate, aggressiveness=self._aggressiveness, onset_ms=60, hangover_ms=150
        )
        self._response_id = f"echo-{next(self._response_numbers)}"

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        if self._closed or self._detector is None or self._to_slin is None or self._loop is None:
            return
        voiced = self._detector.classify(self._to_slin.convert(data))
        if voiced and self.on_caller_voice is not None:
            self.on_caller_voice(voiced)
        for event in self._detector.decide(voiced):
            if isinstance(event, SpeechStarted) and self._playing:
                self._barge_in(event)
        self._delay_line.append((data, self._detector.speaking))
        self._held_bytes += len(data)
        # Taken into the delay line counts as written to the model: this model has no socket.
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)
        released_at: float | None = None
        while self._delay_line and self._held_bytes - len(self._delay_line[0][0]) >= self._delay_bytes:
            chunk, was_speech = self._delay_line.popleft()
            self._held_bytes -= len(chunk)
            self._released_ms += self._format.ms_for_bytes(len(chunk)) if self._format else 0.0
            if was_speech:
                self._speech_released_at_ms = self._released_ms
            if released_at is None:  # the moment this model "says" it: where its downlink starts
                released_at = self._loop.time()
            self._emit(AudioOut(chunk, self._response_id, received_at=released_at))

    @property
    def _playing(self) -> bool:
        last = self._speech_released_at_ms
        return last is not None and self._released_ms - last <= PLAYING_HOLD_MS

    def _barge_in(self, event: SpeechStarted) -> None:
        """What a model does when interrupted: say so, and drop the rest of what it was saying."""
        self.interruptions += 1
        self._delay_line.clear()
        self._held_bytes = 0
        self._speech_released_at_ms = None
        self._response_id = f"echo-{next(self._response_numbers)}"
        self._emit(CallerSpeechStarted(audio_ms=event.offset_ms))

    def _emit(self, event: ProviderEvent) -> None:
        take = self.take_audio
        if take is not None and type(event) is AudioOut and self._events.empty() and take(event):
            return  # played in this step (see Provider.take_audio)
        try:
            self._events.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped_events += 1

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        """Already cut at the onset (see `_barge_in`); nothing is left to truncate."""

    async def send_dtmf(self, text: str, *, respond: bool) -> None:
        """Accepted and ignored: an echo has nothing to answer keys with (it is a wiring test)."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while True:  # make room for the end marker even if the consumer stalled
            try:
                self._events.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._events.get_nowait()
