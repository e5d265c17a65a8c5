"""What the model is told about one call, whatever the provider: the agent profile plus the call's brief.

Pure: no I/O. `{{name}}` placeholders in instructions and greeting are filled from the call's
variables; unknown ones stay visible (so a wrong template is audible in testing) and are reported so
the provider can log them once. Each provider turns a `ResolvedBrief` into its own session message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bridge.providers.base import ToolSpec

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
    vad_eagerness: str = "auto"
    idle_timeout_ms: int = 0
    truncation: str = "auto"
    retention_ratio: float = 0.8
    truncation_token_limit: int = 0
    transcription_model: str = "gpt-4o-mini-transcribe"
    tools: Sequence[ToolSpec] = ()
    call_objective: str = ""
    first_message: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    # A failover: what was said before this model took over, as (role, text), role "caller" or "bot".
    # The model continues the conversation (told in its instructions) and does not greet again.
    history: Sequence[tuple[str, str]] = ()


HISTORY_LINES = 200  # a takeover hears at most the last this many lines


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
    if brief.history:
        instructions = f"{instructions}\n\n{history_instructions(brief.history)}".strip()
        return ResolvedBrief(instructions, "", frozenset(unknown))
    opening, unknown_opening = fill_placeholders(brief.first_message or brief.greeting, brief.variables)
    return ResolvedBrief(instructions, opening.strip(), frozenset(unknown | unknown_opening))


def history_instructions(history: Sequence[tuple[str, str]]) -> str:
    """What a model taking over a call is told of it (the caller must not notice the change)."""
    speakers = {"caller": "Caller", "bot": "You"}
    lines = [f"{speakers.get(role, role)}: {text}" for role, text in history[-HISTORY_LINES:] if text]
    return (
        "You are taking over a phone call already in progress; do not greet the caller again or say that "
        "anything changed. Continue from where it stopped. The conversation so far:\n" + "\n".join(lines)
    )


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
