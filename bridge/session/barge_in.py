"""Our own view of the caller's voice: one VAD decision per 20 ms frame, shared by every listener (local
barge-in, the silence guard, the wait for a voicemail beep), so there is at most one webrtcvad pass per
frame.

A provider that already classifies the caller's audio (`Provider.reports_caller_voice`, e.g. the echo
model) hands its per-frame webrtcvad decisions over and nothing runs here; otherwise webrtcvad runs
here, on the leg's audio.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.audio.convert import Transcoder
from bridge.audio.formats import AudioFormat, slin_at
from bridge.audio.vad import SpeechStarted, SpeechTurns, VoiceClassifier
from bridge.providers.base import Provider

VAD_FRAME_MS = 20  # the frame the provider hook reports decisions for (see Provider.on_caller_voice)
# Strictest webrtcvad mode when we classify ourselves: a false onset cuts the bot off.
LOCAL_AGGRESSIVENESS = 3


class CallerVoice:
    """Feed it each caller chunk after the provider took it; get webrtcvad's decision per frame."""

    def __init__(self, provider: Provider, leg_format: AudioFormat) -> None:
        self._classifier: VoiceClassifier | None = None
        self._to_slin: Transcoder | None = None
        self._reported: list[bool] = []
        self.latency_ms = 0.0  # offsets are not used by any listener, only the decisions themselves
        if provider.reports_caller_voice:
            provider.on_caller_voice = self._reported.extend
        else:
            self._classifier = VoiceClassifier(leg_format.sample_rate, LOCAL_AGGRESSIVENESS, VAD_FRAME_MS)
            self._to_slin = Transcoder(leg_format, slin_at(leg_format.sample_rate))
            self.latency_ms = self._classifier.latency_ms

    @property
    def shares_provider_vad(self) -> bool:
        return self._classifier is None

    def hear(self, audio: bytes) -> list[bool]:
        """The decisions for the frames `audio` (leg format) completed: ours, or what the provider
        reported while it took the same audio."""
        if self._classifier is not None and self._to_slin is not None:
            return self._classifier.classify(self._to_slin.convert(audio))
        decisions = self._reported.copy()
        self._reported.clear()
        return decisions


class LocalBargeIn:
    """Counts speech onsets over the caller's voice decisions: the caller started talking."""

    def __init__(self, onset_ms: int, latency_ms: float = 0.0) -> None:
        self._turns = SpeechTurns(VAD_FRAME_MS, onset_ms=onset_ms, latency_ms=latency_ms)

    def heard(self, voiced: Sequence[bool]) -> bool:
        """Whether the caller's speech started in these frames."""
        return any(isinstance(event, SpeechStarted) for event in self._turns.decide(voiced))
