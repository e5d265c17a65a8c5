"""The effective session: defaults, partial-update merging, and typed accessors per variant."""

from __future__ import annotations

import copy
import time
from typing import Any

from .audio import AudioFormat

SERVER_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 500,
    "idle_timeout_ms": None,
    "create_response": True,
    "interrupt_response": True,
}
SEMANTIC_VAD_DEFAULTS: dict[str, Any] = {
    "type": "semantic_vad",
    "eagerness": "auto",
    "create_response": True,
    "interrupt_response": True,
}


def default_session(variant: str, model: str, session_id: str) -> dict[str, Any]:
    pcm24 = {"type": "audio/pcm", "rate": 24000}
    if variant == "xai":
        xai_vad = {k: v for k, v in SERVER_VAD_DEFAULTS.items() if k != "idle_timeout_ms"}
        return {
            "id": session_id,
            "object": "realtime.session",
            "type": "realtime",
            "model": model,
            "instructions": "",
            "voice": "Ara",
            "turn_detection": xai_vad,
            "audio": {"input": {"format": dict(pcm24)}, "output": {"format": dict(pcm24)}},
            "tools": [],
        }
    return {
        "id": session_id,
        "object": "realtime.session",
        "type": "realtime",
        "model": model,
        "expires_at": int(time.time()) + 3600,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful assistant.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "tracing": None,
        "prompt": None,
        "truncation": "auto",
        "include": None,
        "audio": {
            "input": {
                "format": dict(pcm24),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": dict(SERVER_VAD_DEFAULTS),
            },
            "output": {"format": dict(pcm24), "voice": "marin", "speed": 1.0},
        },
    }


def _fill_turn_detection(td: object) -> object:
    if not isinstance(td, dict):
        return None
    defaults = SEMANTIC_VAD_DEFAULTS if td.get("type") == "semantic_vad" else SERVER_VAD_DEFAULTS
    return {**defaults, **td}


def _fill_format(fmt: object) -> object:
    if isinstance(fmt, dict) and fmt.get("type", "audio/pcm") == "audio/pcm":
        return {"type": "audio/pcm", "rate": 24000, **fmt}
    return copy.deepcopy(fmt)


def _merge_direction(current: dict[str, Any], update: dict[str, Any], *, xai: bool) -> dict[str, Any]:
    out = dict(current)
    for key, value in update.items():
        if key == "format":
            out[key] = _fill_format(value)
        elif key == "turn_detection" and not xai:
            out[key] = _fill_turn_detection(value)
        else:
            out[key] = copy.deepcopy(value)  # replaced wholesale: transcription, noise_reduction, ...
    return out


def merge_session(current: dict[str, Any], update: dict[str, Any], variant: str) -> dict[str, Any]:
    """Apply a validated partial `session` object; only the fields present change.

    `type` and `model` are not updatable: the model is fixed by the URL (and is a deployment
    name on Azure), so the fake keeps the query's value whatever the update says.
    """
    xai = variant == "xai"
    out = copy.deepcopy(current)
    for key, value in update.items():
        if key in ("type", "model"):
            continue
        if key == "audio" and isinstance(value, dict):
            audio = out.setdefault("audio", {})
            for direction in ("input", "output"):
                if isinstance(value.get(direction), dict):
                    audio[direction] = _merge_direction(audio.get(direction) or {}, value[direction], xai=xai)
        elif key == "turn_detection" and xai:
            out[key] = (
                {**{k: v for k, v in SERVER_VAD_DEFAULTS.items() if k != "idle_timeout_ms"}, **value}
                if value
                else None
            )
        else:
            out[key] = copy.deepcopy(value)
    return out


def input_format(session: dict[str, Any]) -> AudioFormat:
    return AudioFormat.from_wire(session.get("audio", {}).get("input", {}).get("format"))


def output_format(session: dict[str, Any]) -> AudioFormat:
    return AudioFormat.from_wire(session.get("audio", {}).get("output", {}).get("format"))


def turn_detection(session: dict[str, Any], variant: str) -> dict[str, Any] | None:
    td = (
        session.get("turn_detection")
        if variant == "xai"
        else session.get("audio", {}).get("input", {}).get("turn_detection")
    )
    return td if isinstance(td, dict) else None


def voice(session: dict[str, Any], variant: str) -> object:
    return (
        session.get("voice") if variant == "xai" else session.get("audio", {}).get("output", {}).get("voice")
    )


def requested_voice(update: dict[str, Any], variant: str) -> object:
    """The voice an update asks for, or None when it does not touch the voice."""
    if variant == "xai":
        return update.get("voice")
    out = (update.get("audio") or {}).get("output") or {}
    return out.get("voice")


def transcription_enabled(session: dict[str, Any], variant: str) -> bool:
    if variant == "xai":
        return True  # xAI transcribes the caller without being asked (spec §10)
    return bool(session.get("audio", {}).get("input", {}).get("transcription"))
