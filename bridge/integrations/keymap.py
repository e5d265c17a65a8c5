"""The key mapper of the post-call push: a company names its CRM's fields and fills each from the call
result with `{{call.x}}` placeholders (`{"crm_duration": "{{call.duration_seconds}}"}`). Pure.

A value that is one placeholder alone keeps the field's JSON type (a number stays a number, the
transcript a list); placeholders inside text are substituted as text. Unknown names are refused when
the map is configured (`unknown_names`), never discovered at send time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*\}\}")
CALL_PREFIX: Final = "call."
ANALYSIS_PREFIX: Final = "post_call_analysis."

# What `{{call.x}}` may name: the fields of an event's `data` (outbox.event_data builds them).
CALL_FIELDS: Final = frozenset(
    {
        "session_id",
        "call_id",
        "caller_id",
        "caller_name",
        "call_duration_seconds",
        "duration_seconds",
        "disconnected_by",
        "transcript",
        "recording_url",
        "post_call_analysis",
        "summary",
        "status",
        "error_code",
        "direction",
        "from",
        "to",
        "agent_id",
        "task_id",
        "call_objective",
        "amd_result",
        "transferred_to",
        "created_at",
        "answered_at",
        "ended_at",
        "variables",
    }
)


def known(name: str) -> bool:
    """Whether `{{name}}` can be filled: `call.<field>` or `call.post_call_analysis.<declared field>`."""
    if not name.startswith(CALL_PREFIX):
        return False
    field = name.removeprefix(CALL_PREFIX)
    if field.startswith(ANALYSIS_PREFIX):
        return bool(field.removeprefix(ANALYSIS_PREFIX))
    return field in CALL_FIELDS


def unknown_names(key_map: Mapping[str, str]) -> list[str]:
    """The placeholders of `key_map` no call result can fill, sorted, once each."""
    return sorted(
        {m.group(1) for v in key_map.values() for m in PLACEHOLDER.finditer(v) if not known(m.group(1))}
    )


def _lookup(data: Mapping[str, Any], name: str) -> Any:
    field = name.removeprefix(CALL_PREFIX)
    if field.startswith(ANALYSIS_PREFIX):
        analysis = data.get("post_call_analysis")
        return analysis.get(field.removeprefix(ANALYSIS_PREFIX)) if isinstance(analysis, dict) else None
    return data.get(field)


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def apply(key_map: Mapping[str, str], data: Mapping[str, Any]) -> dict[str, Any]:
    """Each CRM field filled from the call result `data` (missing values are null, or "" in text)."""
    mapped: dict[str, Any] = {}
    for key, template in key_map.items():
        whole = PLACEHOLDER.fullmatch(template.strip())
        if whole is not None:
            mapped[key] = _lookup(data, whole.group(1))
        else:
            mapped[key] = PLACEHOLDER.sub(lambda m: _as_text(_lookup(data, m.group(1))), template)
    return mapped
