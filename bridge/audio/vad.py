"""Speech start/stop detection on the caller's audio, over webrtcvad, with onset and hangover.

webrtcvad takes only 10/20/30 ms frames at 8/16/32/48 kHz. Input arrives in any size, so it is
re-framed here. Any other rate (24 kHz, 12 kHz, 44.1 kHz...) is resampled for the VAD only, to 8 kHz:
webrtcvad decimates 16/32/48 kHz input to 8 kHz before deciding anyway, so nothing is lost and the
resampler is the cheapest one. Event offsets are corrected for that resampler's delay so they stay on
the caller's stream timeline.

The work is split in two so one webrtcvad pass per frame can serve several listeners: `VoiceClassifier`
turns audio into one voiced/unvoiced decision per frame, `SpeechTurns` counts onset and hangover over
such decisions (each listener its own), and `SpeechDetector` is the two together.

Onset and hangover count webrtcvad's own decisions, which already carry its internal overhang: at
mode 2 it marks ~80 ms more than the voice (measured: a 20 ms voiced blip reads as 100 ms, a 60 ms one
as 140 ms), and a stop is reported that much after the voice ends. Raise `onset_ms` to reject longer
blips (coughs, clicks); a bot-speaking barge-in debounce belongs to the session, not here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import webrtcvad

from bridge.audio.chunker import FrameChunker
from bridge.audio.resample import Resampler

VAD_RATES: Final = frozenset({8000, 16000, 32000, 48000})
VAD_FRAME_MS: Final = frozenset({10, 20, 30})
# webrtcvad calls the first 80-100 ms of even faint steady noise speech while its noise model
# settles (measured, mode 2); requiring a little more than that keeps a line's first hiss quiet.
DEFAULT_ONSET_MS: Final = 120
DEFAULT_HANGOVER_MS: Final = 300


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """Sustained speech: it began at `offset_ms` and was confirmed at `detected_ms` of the stream."""

    offset_ms: float
    detected_ms: float


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    """Speech ended at `offset_ms`; the hangover of silence ran out at `detected_ms`."""

    offset_ms: float
    detected_ms: float


SpeechEvent = SpeechStarted | SpeechStopped


def vad_rate_for(sample_rate: int) -> int:
    """The rate the VAD runs at for input at `sample_rate`."""
    if sample_rate in VAD_RATES:
        return sample_rate
    if sample_rate < 8000:
        raise ValueError(f"no VAD below 8000 Hz, got {sample_rate}")
    return 8000


class VoiceClassifier:
    """Feed s16le mono audio in any chunk size; get webrtcvad's decision for each whole frame completed."""

    __slots__ = (
        "_aggressiveness",
        "_chunker",
        "_frame_ms",
        "_resampler",
        "_sample_rate",
        "_samples",
        "_vad",
        "_vad_rate",
    )

    def __init__(self, sample_rate: int, aggressiveness: int = 2, frame_ms: int = 20) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
        if frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {frame_ms}")
        self._sample_rate = sample_rate
        self._vad_rate = vad_rate_for(sample_rate)
        self._resampler = Resampler(sample_rate, self._vad_rate) if self._vad_rate != sample_rate else None
        self._frame_ms = frame_ms
        self._samples = FrameChunker(2)  # whole samples for the resampler; chunks may split one
        self._chunker = FrameChunker(self._vad_rate * frame_ms // 1000 * 2)
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def vad_rate(self) -> int:
        """The rate webrtcvad actually sees."""
        return self._vad_rate

    @property
    def frame_ms(self) -> int:
        return self._frame_ms

    @property
    def latency_ms(self) -> float:
        """Delay of the VAD-only resampler (0 at a native VAD rate)."""
        return self._resampler.latency_ms if self._resampler is not None else 0.0

    def classify(self, pcm: bytes) -> list[bool]:
        """Add audio; return whether each frame it completed is voiced, in order (often none or one)."""
        if self._resampler is not None:
            pcm = self._resampler.process(self._samples.feed(pcm))
        frames = self._chunker.feed(pcm)
        if not frames:
            return []
        size = self._chunker.frame_bytes
        if len(frames) == size:  # the usual case: one 20 ms frame in, one decision out
            return [bool(self._vad.is_speech(frames, self._vad_rate))]
        view = memoryview(frames)
        return [
            bool(self._vad.is_speech(view[start : start + size], self._vad_rate))
            for start in range(0, len(frames), size)
        ]

    def reset(self) -> None:
        if self._resampler is not None:
            self._resampler.reset()
        self._samples.clear()
        self._chunker.clear()
        # A fresh webrtcvad: the old one keeps its noise estimate and overhang across streams.
        self._vad = webrtcvad.Vad(self._aggressiveness)


class SpeechTurns:
    """Onset and hangover over per-frame voice decisions: SpeechStarted / SpeechStopped events.

    `latency_ms` is the classifier's delay, subtracted so event offsets stay on the caller's timeline.
    """

    __slots__ = (
        "_frame_index",
        "_frame_ms",
        "_hangover_frames",
        "_last_voiced_end",
        "_latency_ms",
        "_onset_frames",
        "_silent_run",
        "_speaking",
        "_voiced_run",
        "_voiced_start",
    )

    def __init__(
        self,
        frame_ms: int = 20,
        onset_ms: float = DEFAULT_ONSET_MS,
        hangover_ms: float = DEFAULT_HANGOVER_MS,
        latency_ms: float = 0.0,
    ) -> None:
        if onset_ms < 0 or hangover_ms < 0:
            raise ValueError("onset_ms and hangover_ms must not be negative")
        self._frame_ms = frame_ms
        self._latency_ms = latency_ms
        self._onset_frames = max(1, math.ceil(onset_ms / frame_ms))
        self._hangover_frames = max(1, math.ceil(hangover_ms / frame_ms))
        self.reset()

    @property
    def speaking(self) -> bool:
        """True between a SpeechStarted and the following SpeechStopped."""
        return self._speaking

    def decide(self, voiced: Iterable[bool]) -> list[SpeechEvent]:
        """Count these frames' decisions; return the events they complete, in order (usually none)."""
        events: list[SpeechEvent] = []
        for frame_voiced in voiced:
            event = self._decide(frame_voiced)
            if event is not None:
                events.append(event)
        return events

    def reset(self) -> None:
        self._frame_index = self._voiced_run = self._voiced_start = 0
        self._silent_run = self._last_voiced_end = 0
        self._speaking = False

    def _ms(self, frame_boundary: int) -> float:
        return max(0.0, frame_boundary * self._frame_ms - self._latency_ms)

    def _decide(self, voiced: bool) -> SpeechEvent | None:
        index = self._frame_index
        self._frame_index += 1
        if voiced:
            if self._voiced_run == 0:
                self._voiced_start = index
            self._voiced_run += 1
            self._silent_run = 0
            self._last_voiced_end = index + 1
            if not self._speaking and self._voiced_run >= self._onset_frames:
                self._speaking = True
                return SpeechStarted(self._ms(self._voiced_start), self._ms(index + 1))
            return None
        self._voiced_run = 0
        if not self._speaking:
            return None
        self._silent_run += 1
        if self._silent_run < self._hangover_frames:
            return None
        self._speaking = False
        self._silent_run = 0
        return SpeechStopped(self._ms(self._last_voiced_end), self._ms(index + 1))


class SpeechDetector:
    """Feed s16le mono audio in any chunk size; get SpeechStarted / SpeechStopped events."""

    __slots__ = ("_classifier", "_turns")

    def __init__(
        self,
        sample_rate: int,
        aggressiveness: int = 2,
        frame_ms: int = 20,
        onset_ms: float = DEFAULT_ONSET_MS,
        hangover_ms: float = DEFAULT_HANGOVER_MS,
    ) -> None:
        self._classifier = VoiceClassifier(sample_rate, aggressiveness, frame_ms)
        self._turns = SpeechTurns(frame_ms, onset_ms, hangover_ms, self._classifier.latency_ms)

    @property
    def sample_rate(self) -> int:
        return self._classifier.sample_rate

    @property
    def vad_rate(self) -> int:
        """The rate webrtcvad actually sees."""
        return self._classifier.vad_rate

    @property
    def speaking(self) -> bool:
        """True between a SpeechStarted and the following SpeechStopped."""
        return self._turns.speaking

    @property
    def latency_ms(self) -> float:
        """Delay of the VAD-only resampler (0 at a native VAD rate)."""
        return self._classifier.latency_ms

    def feed(self, pcm: bytes) -> list[SpeechEvent]:
        """Add audio; return the events completed by it, in order (usually none)."""
        return self._turns.decide(self._classifier.classify(pcm))

    def classify(self, pcm: bytes) -> list[bool]:
        """`feed` in two steps, for a caller that shares the per-frame decisions: classify, then `decide`."""
        return self._classifier.classify(pcm)

    def decide(self, voiced: Iterable[bool]) -> list[SpeechEvent]:
        return self._turns.decide(voiced)

    def reset(self) -> None:
        """Forget everything, as for a new stream starting at offset 0."""
        self._classifier.reset()
        self._turns.reset()
