"""What a call's model usage costs: per-response token counts priced from the configured table.

Each response re-bills the whole conversation as input, so cost grows with the call; cached
input tokens are a subset of input tokens and are priced at the cached rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.providers.base import Usage as ModelUsage
from bridge.settings_agents import ModelPrice, TranscriptionPrice
from bridge.store.records import Usage

PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class PriceTable:
    model: ModelPrice | None
    transcription: TranscriptionPrice | None

    def cost(self, usage: ModelUsage) -> float | None:
        """USD for `usage`, or None when no price is known for what it consumed."""
        total = 0.0
        priced = False
        if usage.responses or usage.input_text_tokens or usage.output_audio_tokens:
            if self.model is None:
                return None
            p = self.model
            fresh_text = max(0, usage.input_text_tokens - usage.input_cached_text_tokens)
            fresh_audio = max(0, usage.input_audio_tokens - usage.input_cached_audio_tokens)
            total += (
                fresh_text * p.input_text
                + fresh_audio * p.input_audio
                + usage.input_cached_text_tokens * p.cached_input_text
                + usage.input_cached_audio_tokens * p.cached_input_audio
                + usage.output_text_tokens * p.output_text
                + usage.output_audio_tokens * p.output_audio
            ) / PER_MILLION
            priced = True
        if usage.model_seconds:
            if self.model is None:
                return total if priced else None
            total += usage.model_seconds / 60 * self.model.per_minute
            priced = True
        transcribed = usage.transcription_input_tokens or usage.transcription_output_tokens
        if transcribed or usage.transcription_seconds:
            if self.transcription is None:
                return total if priced else None
            t = self.transcription
            total += (
                usage.transcription_input_tokens * t.input_tokens
                + usage.transcription_output_tokens * t.output_tokens
            ) / PER_MILLION + usage.transcription_seconds / 60 * t.per_minute
            priced = True
        return total if priced else None


def record_usage(usage: ModelUsage) -> Usage:
    """The provider's per-response usage in the call record's terms."""
    return Usage(
        input_text_tokens=usage.input_text_tokens,
        input_audio_tokens=usage.input_audio_tokens,
        input_cached_tokens=usage.input_cached_text_tokens + usage.input_cached_audio_tokens,
        output_text_tokens=usage.output_text_tokens,
        output_audio_tokens=usage.output_audio_tokens,
        transcription_input_tokens=usage.transcription_input_tokens,
        transcription_output_tokens=usage.transcription_output_tokens,
        transcription_seconds=usage.transcription_seconds,
        responses=usage.responses,
        model_seconds=usage.model_seconds,
    )
