"""What a response or a caller transcription consumed, from the server's `usage` objects.

Pure: no I/O. OpenAI and Azure break tokens down by modality (and cached input); xAI gives totals only.
"""

from __future__ import annotations

from typing import Any

from bridge.providers.base import Usage


def _int(mapping: object, key: str) -> int:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return int(value) if isinstance(value, int | float) else 0


def response_usage(usage: dict[str, Any]) -> Usage:
    inputs, outputs = usage.get("input_token_details") or {}, usage.get("output_token_details") or {}
    cached = inputs.get("cached_tokens_details") if isinstance(inputs, dict) else None
    input_text, input_audio = _int(inputs, "text_tokens"), _int(inputs, "audio_tokens")
    output_text, output_audio = _int(outputs, "text_tokens"), _int(outputs, "audio_tokens")
    if not (input_text or input_audio):  # xAI: totals only
        input_text = _int(usage, "input_tokens")
    if not (output_text or output_audio):
        output_audio = _int(usage, "output_tokens")
    return Usage(
        input_text_tokens=input_text,
        input_audio_tokens=input_audio,
        input_cached_text_tokens=_int(cached, "text_tokens"),
        input_cached_audio_tokens=_int(cached, "audio_tokens"),
        output_text_tokens=output_text,
        output_audio_tokens=output_audio,
        responses=1,
    )


def transcription_usage(usage: dict[str, Any]) -> Usage:
    if usage.get("type") == "duration":
        seconds = usage.get("seconds")
        return Usage(transcription_seconds=float(seconds) if isinstance(seconds, int | float) else 0.0)
    return Usage(
        transcription_input_tokens=_int(usage, "input_tokens"),
        transcription_output_tokens=_int(usage, "output_tokens"),
    )
