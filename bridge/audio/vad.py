"""Speech start/stop detection on the caller's audio, over webrtcvad, with onset and hangover.

webrtcvad takes only 10/20/30 ms frames at 8/16/32/48 kHz. Input arrives in any size, so it is
re-framed here. Any other rate (24 kHz, 12 kHz, 44.1 kHz...) is resampled for the VAD only, to 8 kHz:
webrtcvad decimates 16/32/48 kHz input to 8 kHz before deciding anyway, so nothing is lost and the
resampler is the cheapest one. Event offsets are corrected for that resampler's delay so they stay on
the caller's stream timeline.

Onset and hangover count webrtcvad's own decisions, which already carry its internal overhang: at
mode 2 it marks ~80 ms more than the voice (measured: a 20 ms voiced blip reads as 100 ms, a 60 ms one
as 140 ms), and a stop is reported that much after the voice ends. Raise `onset_ms` to reject longer
blips (coughs, clicks); a bot-speaking barge-in debounce belongs to the session, not here.
"""

from __future__ import annotations

import math
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


class SpeechDetector:
    """Feed s16le mono audio in any chunk size; get SpeechStarted / SpeechStopped events."""

    __slots__ = (
        "_aggressiveness",
        "_chunker",
        "_frame_index",
        "_frame_ms",
        "_hangover_frames",
        "_last_voiced_end",
        "_onset_frames",
        "_resampler",
        "_sample_rate",
        "_samples",
        "_silent_run",
        "_speaking",
        "_vad",
        "_vad_rate",
        "_voiced_run",
        "_voiced_start",
    )

    def __init__(
        self,
        sample_rate: int,
        aggressiveness: int = 2,
        frame_ms: int = 20,
        onset_ms: float = DEFAULT_ONSET_MS,
        hangover_ms: float = DEFAULT_HANGOVER_MS,
    ) -> None:
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0..3, got {aggressiveness}")
        if frame_ms not in VAD_FRAME_MS:
            raise ValueError(f"frame_ms must be 10, 20 or 30, got {frame_ms}")
        if onset_ms < 0 or hangover_ms < 0:
            raise ValueError("onset_ms and hangover_ms must not be negative")
        self._sample_rate = sample_rate
        self._vad_rate = vad_rate_for(sample_rate)
        self._resampler = Resampler(sample_rate, self._vad_rate) if self._vad_rate != sample_rate else None
        self._frame_ms = frame_ms
        self._samples = FrameChunker(2)  # whole samples for the resampler; chunks may split one
        self._chunker = FrameChunker(self._vad_rate * frame_ms // 1000 * 2)
        self._onset_frames = max(1, math.ceil(onset_ms / frame_ms))
        self._hangover_frames = max(1, math.ceil(hangover_ms / frame_ms))
        self._aggressiveness = aggressiveness
        self._vad = webrtcvad.Vad(aggressiveness)
        self._frame_index = 0
        self._voiced_run = 0
        self._voiced_start = 0
        self._silent_run = 0
        self._last_voiced_end = 0
        self._speaking = False

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def vad_rate(self) -> int:
        """The rate webrtcvad actually sees."""
        return self._vad_rate

    @property
    def speaking(self) -> bool:
        """True between a SpeechStarted and the following SpeechStopped."""
        return self._speaking

    @property
    def latency_ms(self) -> float:
        """Delay of the VAD-only resampler (0 at a native VAD rate)."""
        return self._resampler.latency_ms if self._resampler is not None else 0.0

    def feed(self, pcm: bytes) -> list[SpeechEvent]:
        """Add audio; return the events completed by it, in order (usually none)."""
        if self._resampler is not None:
            pcm = self._resampler.process(self._samples.feed(pcm))
        frames = self._chunker.feed(pcm)
        if not frames:
            return []
        events: list[SpeechEvent] = []
        size = self._chunker.frame_bytes
        view = memoryview(frames)
        for start in range(0, len(frames), size):
            voiced = bool(self._vad.is_speech(view[start : start + size], self._vad_rate))
            event = self._decide(voiced)
            if event is not None:
                events.append(event)
        return events

    def reset(self) -> None:
        """Forget everything, as for a new stream starting at offset 0."""
        if self._resampler is not None:
            self._resampler.reset()
        self._samples.clear()
        self._chunker.clear()
        # A fresh webrtcvad: the old one keeps its noise estimate and overhang across streams.
        self._vad = webrtcvad.Vad(self._aggressiveness)
        self._frame_index = self._voiced_run = self._voiced_start = 0
        self._silent_run = self._last_voiced_end = 0
        self._speaking = False

    def _ms(self, frame_boundary: int) -> float:
        return max(0.0, frame_boundary * self._frame_ms - self.latency_ms)

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
