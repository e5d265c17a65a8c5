"""The REST side of an Ultravox call: the create-call body, and what its answer means.

Pure: no I/O. Field names follow Ultravox's OpenAPI `ultravox.v1.StartCallRequest`; the tools are
client tools (`temporaryTool` with a `client` implementation), so every invocation comes to the bridge
over the call's socket and the bridge runs it (end_call, transfer_call, send_dtmf, HTTP tools).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.providers.base import ProviderUnavailable, ToolSpec
from bridge.providers.brief import ResolvedBrief

# Voices of the OpenAI family (the agent profile's default is one): Ultravox does not know them, so
# the call then gets Ultravox's default voice unless [providers.ultravox] names one.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "cedar", "coral", "echo", "marin", "sage", "shimmer", "verse"}
)
STATUS_CODES = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "permission_denied",
    402: "insufficient_quota",
    404: "model_not_found",
    429: "rate_limited",
}
# Codes no retry can cure: a reconnect gives up on them at once.
FATAL_CODES = frozenset({"invalid_request", "invalid_api_key", "permission_denied", "insufficient_quota"})


@dataclass(frozen=True, slots=True)
class CallSpec:
    """What every create-call of this bridge call shares (a resumed call sends it again)."""

    model: str
    voice: str
    language: str
    silence_ms: int
    input_rate: int
    output_rate: int
    client_buffer_ms: int
    tools: Sequence[ToolSpec] = ()


@dataclass(frozen=True, slots=True)
class CreatedCall:
    call_id: str
    join_url: str


def seconds(ms: float) -> str:
    """A protobuf Duration in JSON ("0.5s")."""
    return f"{max(ms, 0) / 1000:.3f}".rstrip("0").rstrip(".") + "s"


def dynamic_parameters(schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON-schema object's properties as Ultravox body parameters (client tools take body only)."""
    properties = schema.get("properties")
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    if not isinstance(properties, Mapping):
        return []
    return [
        {
            "name": str(name),
            "location": "PARAMETER_LOCATION_BODY",
            "schema": dict(prop) if isinstance(prop, Mapping) else {},
            "required": name in needed,
        }
        for name, prop in properties.items()
    ]


def selected_tool(tool: ToolSpec) -> dict[str, Any]:
    definition: dict[str, Any] = {
        "modelToolName": tool.name,
        "description": tool.description,
        "client": {},
    }
    parameters = dynamic_parameters(tool.parameters)
    if parameters:
        definition["dynamicParameters"] = parameters
    return {"temporaryTool": definition}


def call_body(spec: CallSpec, resolved: ResolvedBrief, *, greet: bool, resumed: bool) -> dict[str, Any]:
    """The create-call body. The agent speaks the opening line first when there is one and the call
    greets; a resumed call (after a drop) and a call without one wait for the caller."""
    opening = resolved.opening_line if greet and not resumed else ""
    first: dict[str, Any] = {"agent": {"text": opening}} if opening else {"user": {}}
    body: dict[str, Any] = {
        "systemPrompt": resolved.instructions,
        "model": spec.model,
        "medium": {
            "serverWebSocket": {
                "inputSampleRate": spec.input_rate,
                "outputSampleRate": spec.output_rate,
                "clientBufferSizeMs": spec.client_buffer_ms,
            }
        },
        "firstSpeakerSettings": first,
        "recordingEnabled": False,
        "initialOutputMedium": "MESSAGE_MEDIUM_VOICE",
        "vadSettings": {"turnEndpointDelay": seconds(spec.silence_ms)},
    }
    if spec.voice:
        body["voice"] = spec.voice
    if spec.language:
        body["languageHint"] = spec.language
    if spec.tools:
        body["selectedTools"] = [selected_tool(tool) for tool in spec.tools]
    return body


def voice_for(configured: str, agent_voice: str) -> str:
    """The configured Ultravox voice, else the agent's unless it is an OpenAI voice name."""
    if configured:
        return configured
    return "" if agent_voice.lower() in OPENAI_VOICES else agent_voice


def created_call(status: int, text: str) -> CreatedCall:
    """The create-call answer: its id and join URL, or ProviderUnavailable with a code."""
    if status not in (200, 201):
        code = STATUS_CODES.get(status, "provider_unavailable")
        raise ProviderUnavailable(f"ultravox refused the call (HTTP {status}): {text[:200]}", code=code)
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ProviderUnavailable("ultravox answered the call with no JSON") from exc
    join_url = body.get("joinUrl") if isinstance(body, dict) else None
    if not isinstance(join_url, str) or not join_url.startswith(("ws://", "wss://")):
        raise ProviderUnavailable("ultravox answered the call without a joinUrl")
    call_id = body.get("callId") if isinstance(body, dict) else None
    return CreatedCall(call_id if isinstance(call_id, str) else "", join_url)
