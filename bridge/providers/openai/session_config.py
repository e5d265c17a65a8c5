"""The model session a call asks for: the agent profile plus the call's own brief, as GA JSON.

Pure: no I/O. `{{name}}` placeholders in instructions and greeting are filled from the
call's variables; unknown ones stay visible (so a wrong template is audible in testing)
and are reported so the caller of this module can log them once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.audio.formats import AudioFormat
from bridge.providers.base import ToolSpec
from bridge.providers.openai.dialect import Dialect

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")


@dataclass(frozen=True, slots=True)
class AgentBrief:
    """Everything the model is told about this call."""

    instructions: str = ""
    greeting: str = ""
    voice: str = "marin"
    language: str = "en"
    turn_detection: str = "server_vad"
    vad_threshold: float = 0.5
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300
    noise_reduction: str = "near_field"
    transcription_model: str = "gpt-4o-mini-transcribe"
    tools: Sequence[ToolSpec] = ()
    call_objective: str = ""
    first_message: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)


def fill_placeholders(text: str, variables: Mapping[str, str]) -> tuple[str, set[str]]:
    """`text` with `{{name}}` replaced from `variables`, and the names it did not know."""
    unknown: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in variables:
            return str(variables[name])
        unknown.add(name)
        return match.group(0)

    return PLACEHOLDER.sub(replace, text), unknown


@dataclass(frozen=True, slots=True)
class ResolvedBrief:
    instructions: str
    opening_line: str  # what the bot says first ("" = wait for the caller)
    unknown_placeholders: frozenset[str]


def resolve(brief: AgentBrief) -> ResolvedBrief:
    parts = [brief.instructions.strip()]
    if brief.call_objective.strip():
        parts.append(f"The purpose of this call: {brief.call_objective.strip()}")
    if brief.language:
        parts.append(f"Speak in the language with code '{brief.language}' unless the caller uses another.")
    instructions, unknown = fill_placeholders("\n\n".join(p for p in parts if p), brief.variables)
    opening, unknown_opening = fill_placeholders(brief.first_message or brief.greeting, brief.variables)
    return ResolvedBrief(instructions, opening.strip(), frozenset(unknown | unknown_opening))


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
        turn = {"type": "semantic_vad", "create_response": True, "interrupt_response": True}
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
    session["tools"] = [tool.as_json() for tool in brief.tools]
    if brief.tools:
        session["tool_choice"] = "auto"
    return session


def opening_instructions(opening_line: str) -> str:
    """The one-off instructions of the response that greets the caller."""
    return (
        "Greet the caller now by saying exactly the following, then stop and wait for them to answer: "
        f"{opening_line}"
    )


def say_instructions(text: str) -> str:
    """The one-off instructions of a response that speaks a given text (POST /say, closing lines)."""
    return (
        "Say exactly the following to the caller, word for word, and nothing else; do not answer it or "
        f"add to it: {text}"
    )
