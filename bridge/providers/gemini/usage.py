"""Gemini's `usageMetadata` as the bridge's `Usage` (pure).

Each `usageMetadata` covers one model turn (the prompt is the whole context again, so cost grows with
the call, as with OpenAI); a second report within the same turn is treated as a cumulative snapshot
of it and only the growth is counted, so nothing is billed twice.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from bridge.providers.base import Usage


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _by_modality(details: object) -> dict[str, int]:
    """`[{modality, tokenCount}]` (either casing) as {"TEXT": n, "AUDIO": n, ...}."""
    out: dict[str, int] = {}
    if not isinstance(details, list):
        return out
    for entry in details:
        if isinstance(entry, dict):
            modality = str(entry.get("modality", "")).upper()
            count = _int(entry.get("tokenCount", entry.get("token_count")))
            out[modality] = out.get(modality, 0) + count
    return out


def _get(meta: dict[str, Any], camel: str, snake: str) -> object:
    return meta[camel] if camel in meta else meta.get(snake)


def usage_from_metadata(meta: dict[str, Any]) -> Usage:
    """Tokens by modality (TEXT vs AUDIO, images and video counted as text); totals without details
    count as text in and audio out (what an audio-only session produces)."""
    prompt = _int(_get(meta, "promptTokenCount", "prompt_token_count"))
    response = _int(_get(meta, "responseTokenCount", "response_token_count")) or _int(
        _get(meta, "candidatesTokenCount", "candidates_token_count")
    )
    prompt_details = _by_modality(_get(meta, "promptTokensDetails", "prompt_tokens_details"))
    response_details = _by_modality(
        _get(meta, "responseTokensDetails", "response_tokens_details")
        or _get(meta, "candidatesTokensDetails", "candidates_tokens_details")
    )
    cache_details = _by_modality(_get(meta, "cacheTokensDetails", "cache_tokens_details"))
    cached = _int(_get(meta, "cachedContentTokenCount", "cached_content_token_count"))
    tool_prompt = _int(_get(meta, "toolUsePromptTokenCount", "tool_use_prompt_token_count"))
    thoughts = _int(_get(meta, "thoughtsTokenCount", "thoughts_token_count"))

    input_audio = prompt_details.get("AUDIO", 0) if prompt_details else 0
    input_text = (prompt - input_audio if prompt_details else prompt) + tool_prompt
    output_audio = response_details.get("AUDIO", 0) if response_details else response
    output_text = (response - output_audio if response_details else 0) + thoughts
    cached_audio = min(cache_details.get("AUDIO", 0), input_audio)
    cached_text = min(max(0, cached - cached_audio), input_text)
    return Usage(
        input_text_tokens=max(0, input_text),
        input_audio_tokens=input_audio,
        input_cached_text_tokens=cached_text,
        input_cached_audio_tokens=cached_audio,
        output_text_tokens=max(0, output_text),
        output_audio_tokens=output_audio,
        responses=1,
    )


@dataclass(slots=True)
class TurnUsage:
    """What was already reported for the current turn (a later snapshot adds only its growth)."""

    reported: Usage | None = None

    def add(self, usage: Usage) -> Usage | None:
        before = self.reported
        self.reported = usage
        if before is None:
            return usage
        grown = {f.name: max(0, getattr(usage, f.name) - getattr(before, f.name)) for f in fields(Usage)}
        grown["responses"] = 0
        delta = Usage(**grown)
        return delta if any(getattr(delta, f.name) for f in fields(Usage)) else None

    def turn_over(self) -> None:
        self.reported = None
