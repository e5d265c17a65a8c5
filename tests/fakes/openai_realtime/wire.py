"""Pure builders for server events (no event_id: the connection stamps it when sending)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .audio import AudioFormat


@dataclass
class Item:
    """A conversation item the server knows (for truncate/delete/retrieve)."""

    id: str
    kind: str  # "user", "assistant", "function_call", "function_call_output", "message"
    wire: dict[str, Any]
    audio_ms: float = 0.0


def format_to_wire(fmt: AudioFormat) -> dict[str, Any]:
    if fmt.codec == "pcm":
        return {"type": "audio/pcm", "rate": fmt.rate}
    return {"type": f"audio/{fmt.codec}"}


def assistant_item(item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
    content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": content,
    }


def user_audio_item(item_id: str, transcript: str | None = None) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_audio", "transcript": transcript}],
    }


def function_call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "function_call",
        "status": status,
        "name": name,
        "call_id": call_id,
        "arguments": arguments,
    }


def response_object(
    response_id: str,
    *,
    status: str,
    reason: str | None,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    out_fmt: AudioFormat,
    voice: object,
    conversation_id: str,
) -> dict[str, Any]:
    details = None if status in ("completed", "in_progress") else {"type": status, "reason": reason}
    return {
        "object": "realtime.response",
        "id": response_id,
        "status": status,
        "status_details": details,
        "output": output,
        "conversation_id": conversation_id,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": format_to_wire(out_fmt), "voice": voice}},
        "usage": usage,
        "metadata": None,
    }


def part_ids(response_id: str, item_id: str) -> dict[str, Any]:
    return {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}


def transcription_usage_default(transcript: str, audio_ms: float) -> dict[str, Any]:
    audio_tokens = max(1, round(audio_ms / 100))
    text_tokens = max(1, len(transcript.split()))
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": text_tokens,
        "total_tokens": audio_tokens + text_tokens,
        "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
    }


def rate_limits() -> dict[str, Any]:
    return {
        "type": "rate_limits.updated",
        "rate_limits": [
            {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
            {"name": "tokens", "limit": 40000, "remaining": 38000, "reset_seconds": 3.0},
        ],
    }


def split_words(transcript: str, fractions: list[float]) -> list[str]:
    """Transcript deltas aligned with audio progress: delta i ends at fraction[i] of the words."""
    words = transcript.split()
    out: list[str] = []
    sent = 0
    for frac in fractions:
        upto = round(frac * len(words))
        chunk = " ".join(words[sent:upto])
        out.append(("" if sent == 0 or not chunk else " ") + chunk)
        sent = max(sent, upto)
    return out
