"""Local barge-in: our own speech onset detection on the caller's audio, one VAD pass per frame.

A provider that already classifies the caller's audio (`Provider.reports_caller_voice`, e.g. the echo
model) hands its per-frame webrtcvad decisions over and only the onset count runs here; otherwise
webrtcvad runs here, on the leg's audio.
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


class LocalBargeIn:
    """Feed it each caller chunk after the provider took it; it says when the caller started talking."""

    def __init__(self, provider: Provider, leg_format: AudioFormat, onset_ms: int) -> None:
        self._classifier: VoiceClassifier | None = None
        self._to_slin: Transcoder | None = None
        if provider.reports_caller_voice:
            provider.on_caller_voice = self._count
            latency_ms = 0.0  # offsets are not used here, only the onset itself
        else:
            self._classifier = VoiceClassifier(leg_format.sample_rate, LOCAL_AGGRESSIVENESS, VAD_FRAME_MS)
            self._to_slin = Transcoder(leg_format, slin_at(leg_format.sample_rate))
            latency_ms = self._classifier.latency_ms
        self._turns = SpeechTurns(VAD_FRAME_MS, onset_ms=onset_ms, latency_ms=latency_ms)
        self._onset = False

    @property
    def shares_provider_vad(self) -> bool:
        return self._classifier is None

    def heard(self, audio: bytes) -> bool:
        """Whether the caller's speech started in `audio` (leg format) or in what the provider reported."""
        if self._classifier is not None and self._to_slin is not None:
            self._count(self._classifier.classify(self._to_slin.convert(audio)))
        onset, self._onset = self._onset, False
        return onset

    def _count(self, voiced: Sequence[bool]) -> None:
        for event in self._turns.decide(voiced):
            if isinstance(event, SpeechStarted):
                self._onset = True
