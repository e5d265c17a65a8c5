"""Strict checks of client JSON messages: the documented shapes, then deepgram-sdk's AgentV1* models.

The SDK models accept unknown fields and any string for enums, so they alone are not strict; the
shapes below (from the Voice Agent docs and the SDK 7.17.0 types) refuse unknown fields, wrong types,
and missing required ones, e.g. `FunctionCallResponse.id`, optional in the SDK but required from a
client. Written independently of `bridge.providers.deepgram`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from deepgram.agent.v1.types import (
    AgentV1InjectAgentMessage,
    AgentV1InjectUserMessage,
    AgentV1KeepAlive,
    AgentV1SendFunctionCallResponse,
    AgentV1Settings,
    AgentV1UpdatePrompt,
    AgentV1UpdateSpeak,
    AgentV1UpdateThink,
)

INPUT_ENCODINGS = (
    "linear16",
    "linear32",
    "flac",
    "alaw",
    "mulaw",
    "amr-nb",
    "amr-wb",
    "opus",
    "ogg-opus",
    "speex",
    "g729",
)
OUTPUT_ENCODINGS = ("linear16", "mulaw", "alaw", "mp3", "opus", "flac", "aac")


@dataclass(frozen=True)
class Field:
    kind: Any  # a type, a tuple of types, a nested shape (dict), ListOf(...) or OneOrList(shape)
    required: bool = False
    one_of: tuple[str, ...] = ()


@dataclass(frozen=True)
class ListOf:
    item: Any  # a type or a shape


@dataclass(frozen=True)
class AnyOf:
    options: tuple[Any, ...]


@dataclass(frozen=True)
class OneOrList:
    """Deepgram takes one provider object, or a list of them (fallbacks)."""

    shape: Any


Shape = Mapping[str, Field]

ENDPOINT: Shape = {"url": Field(str, True), "headers": Field(dict), "method": Field(str)}
LISTEN_PROVIDER: Shape = {
    "type": Field(str, True, one_of=("deepgram",)),
    "version": Field(str, one_of=("v1", "v2")),
    "model": Field(str),
    "language": Field(str),
    "keyterms": Field(ListOf(str)),
    "smart_format": Field(bool),
    "language_hints": Field(ListOf(str)),
    "eot_threshold": Field((int, float)),
    "eager_eot_threshold": Field((int, float)),
    "eot_timeout_ms": Field(int),
}
THINK_PROVIDER: Shape = {
    "type": Field(str, True, one_of=("open_ai", "anthropic", "google", "groq", "aws_bedrock", "deepgram")),
    "model": Field(str),
    "version": Field(str),
    "temperature": Field((int, float)),
    "reasoning_mode": Field(str),
    "credentials": Field(dict),
}
FUNCTION: Shape = {
    "name": Field(str, True),
    "description": Field(str),
    "parameters": Field(dict),
    "endpoint": Field(ENDPOINT),
    "defer_until_eot": Field(bool),
}
THINK: Shape = {
    "provider": Field(THINK_PROVIDER, True),
    "endpoint": Field(ENDPOINT),
    "functions": Field(ListOf(FUNCTION)),
    "prompt": Field(str),
    "context_length": Field((int, str)),
}
SPEAK_PROVIDER: Shape = {
    "type": Field(str, True, one_of=("deepgram", "eleven_labs", "cartesia", "open_ai", "aws_polly")),
    "model": Field(str),
    "model_id": Field(str),
    "voice": Field((str, dict)),
    "version": Field(str),
    "language": Field(str),
    "language_code": Field(str),
    "speed": Field((int, float)),
    "engine": Field(str),
    "credentials": Field(dict),
}
SPEAK: Shape = {"provider": Field(SPEAK_PROVIDER, True), "endpoint": Field(ENDPOINT)}
HISTORY: Shape = {
    "type": Field(str, True, one_of=("History",)),
    "role": Field(str, True, one_of=("user", "assistant")),
    "content": Field(str, True),
}
AGENT: Shape = {
    "language": Field(str),
    "context": Field({"messages": Field(ListOf(HISTORY))}),
    "listen": Field({"provider": Field(LISTEN_PROVIDER, True)}),
    "think": Field(OneOrList(THINK)),
    "speak": Field(OneOrList(SPEAK)),
    "greeting": Field(str),
}
SETTINGS: Shape = {
    "type": Field(str, True),
    "tags": Field(ListOf(str)),
    "experimental": Field(bool),
    "mip_opt_out": Field(bool),
    "flags": Field({"history": Field(bool)}),
    "audio": Field(
        {
            "input": Field(
                {"encoding": Field(str, True, one_of=INPUT_ENCODINGS), "sample_rate": Field(int, True)}
            ),
            "output": Field(
                {
                    "encoding": Field(str, one_of=OUTPUT_ENCODINGS),
                    "sample_rate": Field(int),
                    "bitrate": Field(int),
                    "container": Field(str, one_of=("none", "wav", "ogg")),
                }
            ),
        },
        True,
    ),
    "agent": Field(AnyOf((AGENT, str)), True),  # or a stored agent's id,
}
MESSAGES: Mapping[str, tuple[Shape, type[pydantic.BaseModel]]] = {
    "Settings": (SETTINGS, AgentV1Settings),
    "KeepAlive": ({"type": Field(str, True)}, AgentV1KeepAlive),
    "UpdatePrompt": ({"type": Field(str, True), "prompt": Field(str, True)}, AgentV1UpdatePrompt),
    "UpdateSpeak": ({"type": Field(str, True), "speak": Field(OneOrList(SPEAK), True)}, AgentV1UpdateSpeak),
    "UpdateThink": ({"type": Field(str, True), "think": Field(OneOrList(THINK), True)}, AgentV1UpdateThink),
    "InjectAgentMessage": (
        {
            "type": Field(str, True),
            "message": Field(str, True),
            "behavior": Field(str, one_of=("default", "queue", "interrupt")),
        },
        AgentV1InjectAgentMessage,
    ),
    "InjectUserMessage": ({"type": Field(str, True), "content": Field(str, True)}, AgentV1InjectUserMessage),
    "FunctionCallResponse": (
        {
            "type": Field(str, True),
            "id": Field(str, True),
            "name": Field(str, True),
            "content": Field(str, True),
        },
        AgentV1SendFunctionCallResponse,
    ),
}


class ClientMessageError(ValueError):
    """What the real service answers with `Error{code}` before closing."""

    def __init__(self, code: str, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


def _type_ok(value: Any, kind: Any) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):  # a JSON true/false is never a number here
        return bool in kinds
    return isinstance(value, kinds)


def _check(value: Any, kind: Any, path: str, one_of: tuple[str, ...] = ()) -> list[str]:
    if isinstance(kind, Mapping):
        return _check_shape(value, kind, path) if isinstance(value, dict) else [f"{path} is not an object"]
    if isinstance(kind, ListOf):
        if not isinstance(value, list):
            return [f"{path} is not a list"]
        return [p for i, v in enumerate(value) for p in _check(v, kind.item, f"{path}[{i}]")]
    if isinstance(kind, AnyOf):
        results = [_check(value, option, path) for option in kind.options]
        return [] if any(not r for r in results) else results[0]
    if isinstance(kind, OneOrList):
        if isinstance(value, list):
            if not value:
                return [f"{path} is an empty list"]
            return [p for i, v in enumerate(value) for p in _check(v, kind.shape, f"{path}[{i}]")]
        return _check(value, kind.shape, path)
    if not _type_ok(value, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        return [f"{path} is {type(value).__name__}, not {name}"]
    if one_of and value not in one_of:
        return [f"{path} is {value!r}, not one of {list(one_of)}"]
    return []


def _check_shape(obj: Mapping[str, Any], shape: Shape, path: str) -> list[str]:
    problems = [f"{path}.{key} is not a known field" for key in obj if key not in shape]
    for key, field in shape.items():
        if key not in obj:
            if field.required:
                problems.append(f"{path}.{key} is required")
            continue
        problems += _check(obj[key], field.kind, f"{path}.{key}", field.one_of)
    return problems


def validate_client_message(text: str) -> dict[str, Any]:
    """The parsed message, or ClientMessageError with the code the real service sends."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ClientMessageError("UNPARSABLE_CLIENT_MESSAGE", f"not JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ClientMessageError("UNPARSABLE_CLIENT_MESSAGE", "a message is a JSON object with a type")
    kind = message["type"]
    if kind not in MESSAGES:
        raise ClientMessageError("UNPARSABLE_CLIENT_MESSAGE", f"unknown message type {kind!r}")
    shape, model = MESSAGES[kind]
    code = "INVALID_SETTINGS" if kind == "Settings" else "UNPARSABLE_CLIENT_MESSAGE"
    problems = _check_shape(message, shape, kind)
    if problems:
        raise ClientMessageError(code, "; ".join(problems))
    try:
        model.model_validate(message)
    except pydantic.ValidationError as exc:
        raise ClientMessageError(
            code, f"SDK model: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}"
        ) from None
    return message
