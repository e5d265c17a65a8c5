"""Strict checks of every client message, from the documented shapes and the `elevenlabs` SDK's models.

`check_client_message(raw, ...)` returns the parsed message or raises `Violation` (with the close code
and reason the fake closes with). The first message must be `conversation_initiation_client_data`; its
fields are checked against `elevenlabs.types.ConversationInitiationClientDataRequestInput` twice: field
types by pydantic, and unknown fields by walking the SDK model's fields (the SDK models allow extras,
the service does not accept them silently in the overrides it validates). The other client messages
have no SDK model; their shapes are the AsyncAPI file's / what the SDK sends.
"""

from __future__ import annotations

import base64
import binascii
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

import pydantic
from elevenlabs.types import ConversationInitiationClientDataRequestInput

POLICY_VIOLATION = 1008  # the close code ElevenLabs uses for a refused message (reason text UNVERIFIED)
INITIATION = "conversation_initiation_client_data"
# Client messages with a `type`, and the fields each takes: {name: allowed python types}.
TYPED_SHAPES: dict[str, dict[str, tuple[type, ...]]] = {
    "pong": {"event_id": (int,)},
    "client_tool_result": {"tool_call_id": (str,), "result": (str,), "is_error": (bool,)},
    "contextual_update": {"text": (str,)},
    "user_message": {"text": (str,)},
    "user_activity": {},
}
REQUIRED: dict[str, frozenset[str]] = {
    "pong": frozenset({"event_id"}),
    "client_tool_result": frozenset({"tool_call_id", "result"}),
    "contextual_update": frozenset({"text"}),
    "user_message": frozenset({"text"}),
    "user_activity": frozenset(),
}
# Override paths an agent can allow (its platform_settings.overrides); the fake's agent allows a set.
OVERRIDE_PATHS = {
    ("agent", "prompt", "prompt"): "prompt",
    ("agent", "first_message"): "first_message",
    ("agent", "language"): "language",
    ("tts", "voice_id"): "voice_id",
}


class Violation(Exception):
    """A client message the real service would refuse: close with `code` and `reason`."""

    def __init__(self, reason: str, code: int = POLICY_VIOLATION) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


def _model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    """The pydantic model inside Optional[Model] (None for anything else)."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def unknown_fields(model: type[pydantic.BaseModel], data: Mapping[str, Any], path: str = "") -> list[str]:
    """Keys of `data` (recursively through nested models) that `model` does not declare."""
    found: list[str] = []
    fields = model.model_fields
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            found.append(f"{path}{key}")
            continue
        inner = _model_of(field.annotation)
        if inner is not None and isinstance(value, dict):
            found += unknown_fields(inner, value, f"{path}{key}.")
    return found


def check_initiation(message: Mapping[str, Any], allowed_overrides: frozenset[str]) -> None:
    body = {k: v for k, v in message.items() if k != "type"}
    unknown = unknown_fields(ConversationInitiationClientDataRequestInput, body)
    if unknown:
        raise Violation(f"Invalid message received: unknown field(s) {', '.join(unknown)}")
    try:
        ConversationInitiationClientDataRequestInput.model_validate(body)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise Violation(f"Invalid message received: {where}: {first['msg']}") from exc
    variables = body.get("dynamic_variables") or {}
    for name, value in variables.items():
        if not isinstance(value, str | int | float | bool):
            raise Violation(f"Invalid message received: dynamic variable {name!r} must be a scalar")
    override = body.get("conversation_config_override") or {}
    for path, name in _override_paths(override):
        if name not in allowed_overrides:
            raise Violation(f"Override for field '{'.'.join(path)}' is not allowed by config.")


def _override_paths(override: Mapping[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    used: list[tuple[tuple[str, ...], str]] = []

    def walk(node: Mapping[str, Any], path: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*path, key)
            if isinstance(value, dict):
                walk(value, here)
            elif value is not None:
                used.append((here, OVERRIDE_PATHS.get(here, ".".join(here))))

    walk(override, ())
    return used


def audio_bytes(message: Mapping[str, Any], sample_width: int) -> bytes:
    """The decoded `user_audio_chunk` (its only field), whole samples of the agent's input format."""
    if set(message) != {"user_audio_chunk"}:
        raise Violation(f"Invalid message received: audio chunk with fields {sorted(message)}")
    chunk = message["user_audio_chunk"]
    if not isinstance(chunk, str):
        raise Violation("Invalid message received: user_audio_chunk must be a base64 string")
    try:
        data = base64.b64decode(chunk, validate=True)
    except binascii.Error as exc:
        raise Violation("Invalid message received: user_audio_chunk is not base64") from exc
    if len(data) % sample_width:
        raise Violation("Invalid message received: audio chunk splits a sample")
    return data


def check_client_message(
    raw: str, *, initiated: bool, allowed_overrides: frozenset[str] = frozenset(OVERRIDE_PATHS.values())
) -> dict[str, Any]:
    """The message, parsed and checked; raises Violation. Audio chunks are checked by `audio_bytes`."""
    try:
        message = json.loads(raw)
    except ValueError as exc:
        raise Violation("Invalid message received: not JSON") from exc
    if not isinstance(message, dict):
        raise Violation("Invalid message received: not a JSON object")
    kind = message.get("type")
    if not initiated:
        if kind != INITIATION:
            raise Violation(f"The first message must be {INITIATION}, got {kind or 'an untyped message'}")
        check_initiation(message, allowed_overrides)
        return message
    if kind is None and "user_audio_chunk" in message:
        return message
    if kind == INITIATION:
        raise Violation("Invalid message received: the conversation is already initiated")
    if not isinstance(kind, str) or kind not in TYPED_SHAPES:
        raise Violation(f"Invalid message received: unknown message type {kind!r}")
    shape = TYPED_SHAPES[kind]
    for key, value in message.items():
        if key == "type":
            continue
        allowed = shape.get(key)
        if allowed is None:
            raise Violation(f"Invalid message received: {kind} has no field {key!r}")
        if isinstance(value, bool) and bool not in allowed:
            raise Violation(f"Invalid message received: {kind}.{key} has the wrong type")
        if not isinstance(value, allowed):
            raise Violation(f"Invalid message received: {kind}.{key} has the wrong type")
    missing = REQUIRED[kind] - set(message)
    if missing:
        raise Violation(f"Invalid message received: {kind} lacks {', '.join(sorted(missing))}")
    return message
