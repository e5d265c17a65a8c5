"""`{{placeholders}}` in what an agent says: `{{x}}` and `{{crm.x}}` are the call's variables (the request's
`variables`, a task's `context_data`, the inbound webhook's extra fields); `{{call.x}}` are facts of the call.

Pure. An unknown placeholder is refused when the call is requested (the caller must never hear
"{{crm.name}}"), so requests check their texts with `unknown_placeholders` before a call is made, and the
call's brief is filled from `template_variables`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from bridge.errors import BadRequest
from bridge.providers.brief import PLACEHOLDER
from bridge.settings_agents import AgentSettings

CRM_PREFIX = "crm."
CALL_PREFIX = "call."


def template_variables(variables: Mapping[str, str], call: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every name a placeholder may use: `x` and `crm.x` for each variable, `call.y` for each call fact."""
    names: dict[str, str] = {}
    for name, value in variables.items():
        names[name] = value
        names[CRM_PREFIX + name] = value
    for name, value in (call or {}).items():
        names[CALL_PREFIX + name] = value
    return names


def placeholders(text: str) -> list[str]:
    """The placeholder names in `text`, in order of appearance."""
    return [match.group(1) for match in PLACEHOLDER.finditer(text)]


def unknown_placeholders(texts: Iterable[str], names: Mapping[str, str]) -> list[str]:
    """Placeholders in `texts` that `names` (from `template_variables`) cannot fill, sorted, once each."""
    return sorted({name for text in texts for name in placeholders(text) if name not in names})


def call_facts(
    *, call_id: str, caller: str, called: str, direction: str, caller_name: str, company: str
) -> dict[str, str]:
    """What `{{call.x}}` may name: the call's id, numbers, direction, the caller's name and the company."""
    return {
        "id": call_id,
        "from": caller,
        "to": called,
        "direction": direction,
        "caller_name": caller_name,
        "company": company,
    }


def agent_texts(agent: AgentSettings, *extra: str) -> list[str]:
    """Everything the agent may say or be told that takes placeholders, plus the call's own texts
    (`extra`: its objective, first message)."""
    return [
        agent.instructions,
        agent.greeting,
        agent.voicemail_message,
        agent.closing_message,
        agent.silence_prompt,
        *extra,
    ]


def check_placeholders(texts: Iterable[str], names: Mapping[str, str]) -> None:
    """Raises BadRequest `unknown_placeholder` naming every placeholder `names` cannot fill."""
    unknown = unknown_placeholders(texts, names)
    if unknown:
        listed = ", ".join("{{" + name + "}}" for name in unknown)
        raise BadRequest(
            f"unknown placeholder(s) {listed}: give them in variables (or use call.id, call.from, "
            "call.to, call.direction, call.caller_name, call.company)",
            code="unknown_placeholder",
        )
