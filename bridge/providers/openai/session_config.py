"""The model session a call asks for, as OpenAI Realtime GA JSON (the brief itself is providers/brief.py).

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from bridge.audio.formats import AudioFormat
from bridge.providers.brief import AgentBrief, ResolvedBrief
from bridge.providers.openai.dialect import Dialect


def session_body(
    dialect: Dialect,
    brief: AgentBrief,
    resolved: ResolvedBrief,
    input_format: AudioFormat,
    output_format: AudioFormat,
) -> dict[str, Any]:
    """The `session` object of `session.update` for this dialect."""
    turn: dict[str, Any]
    if brief.turn_detection == "semantic_vad" and dialect.semantic_vad:
        turn = {
            "type": "semantic_vad",
            "eagerness": brief.vad_eagerness,
            "create_response": True,
            "interrupt_response": True,
        }
    elif dialect.top_level_voice:
        turn = {"type": "server_vad"}
    else:
        turn = {
            "type": "server_vad",
            "threshold": brief.vad_threshold,
            "prefix_padding_ms": brief.prefix_padding_ms,
            "silence_duration_ms": brief.silence_duration_ms,
            "create_response": True,
            "interrupt_response": True,
        }
        if brief.idle_timeout_ms and dialect.session_type:
            turn["idle_timeout_ms"] = brief.idle_timeout_ms
    audio_in: dict[str, Any] = {"format": dialect.format_object(input_format)}
    audio_out: dict[str, Any] = {"format": dialect.format_object(output_format)}
    session: dict[str, Any] = {"instructions": resolved.instructions}
    if dialect.session_type:
        session = {"type": "realtime", **session, "output_modalities": ["audio"]}
    if dialect.top_level_voice:
        session["voice"] = brief.voice
        session["turn_detection"] = turn
    else:
        audio_in["turn_detection"] = turn
        audio_in["noise_reduction"] = (
            None if brief.noise_reduction == "off" else {"type": brief.noise_reduction}
        )
        if brief.transcription_model and dialect.sends_caller_transcription_config:
            transcription: dict[str, Any] = {"model": brief.transcription_model}
            if brief.language:
                transcription["language"] = brief.language
            audio_in["transcription"] = transcription
        audio_out["voice"] = brief.voice
    session["audio"] = {"input": audio_in, "output": audio_out}
    if dialect.session_type:
        session["truncation"] = truncation(brief)
    session["tools"] = [tool.as_json() for tool in brief.tools]
    if brief.tools:
        session["tool_choice"] = "auto"
    return session


def truncation(brief: AgentBrief) -> str | dict[str, Any]:
    """What the model drops when a long call fills its context (GA `session.truncation`)."""
    if brief.truncation != "retention_ratio":
        return brief.truncation
    strategy: dict[str, Any] = {"type": "retention_ratio", "retention_ratio": brief.retention_ratio}
    if brief.truncation_token_limit:
        strategy["token_limits"] = {"post_instructions": brief.truncation_token_limit}
    return strategy
