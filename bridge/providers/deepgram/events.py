"""Deepgram Voice Agent (v1) wire messages: server JSON in, typed messages out; client JSON builders.

Pure: no I/O, no clocks. Audio is not here: it travels as binary WebSocket frames both ways.
`parse_server_message` raises only `DeepgramMessageError`; a type it does not know becomes `Other`
(the service adds message types over time, and none of them may end a call).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias


class DeepgramMessageError(ValueError):
    """A text frame that is not a well-formed server message (not JSON, no type, a field mistyped)."""


@dataclass(frozen=True, slots=True)
class Welcome:
    request_id: str


@dataclass(frozen=True, slots=True)
class SettingsApplied:
    pass


@dataclass(frozen=True, slots=True)
class UserStartedSpeaking:
    pass


@dataclass(frozen=True, slots=True)
class AgentThinking:
    content: str


@dataclass(frozen=True, slots=True)
class ConversationText:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class FunctionCall:
    id: str
    name: str
    arguments: str  # JSON text, as the LLM produced it
    client_side: bool


@dataclass(frozen=True, slots=True)
class FunctionCallRequest:
    functions: tuple[FunctionCall, ...]


@dataclass(frozen=True, slots=True)
class AgentStartedSpeaking:
    total_latency: float | None = None


@dataclass(frozen=True, slots=True)
class AgentAudioDone:
    pass


@dataclass(frozen=True, slots=True)
class InjectionRefused:
    message: str


@dataclass(frozen=True, slots=True)
class ServerWarning:
    code: str
    description: str


@dataclass(frozen=True, slots=True)
class ServerError:
    """Fatal: the service ends the session after it."""

    code: str
    description: str


@dataclass(frozen=True, slots=True)
class Other:
    """A message the bridge has no use for (History, LatencyReport, PromptUpdated, ...)."""

    type: str


ServerMessage: TypeAlias = (
    Welcome
    | SettingsApplied
    | UserStartedSpeaking
    | AgentThinking
    | ConversationText
    | FunctionCallRequest
    | AgentStartedSpeaking
    | AgentAudioDone
    | InjectionRefused
    | ServerWarning
    | ServerError
    | Other
)


def _str(message: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = message.get(key, default)
    if not isinstance(value, str):
        raise DeepgramMessageError(f"{message.get('type')}.{key} is not a string")
    return value


def _function_call(item: object) -> FunctionCall:
    if not isinstance(item, dict):
        raise DeepgramMessageError("FunctionCallRequest.functions[] is not an object")
    client_side = item.get("client_side")
    if not isinstance(client_side, bool):
        raise DeepgramMessageError("FunctionCallRequest.functions[].client_side is not a boolean")
    arguments = item.get("arguments", "{}")
    if isinstance(arguments, dict):  # tolerate an object: it means the same
        arguments = json.dumps(arguments)
    if not isinstance(arguments, str):
        raise DeepgramMessageError("FunctionCallRequest.functions[].arguments is not a string")
    return FunctionCall(
        id=_str(item, "id"), name=_str(item, "name"), arguments=arguments, client_side=client_side
    )


def _function_call_request(message: Mapping[str, Any]) -> FunctionCallRequest:
    functions = message.get("functions")
    if not isinstance(functions, list):
        raise DeepgramMessageError("FunctionCallRequest.functions is not a list")
    return FunctionCallRequest(tuple(_function_call(item) for item in functions))


def _conversation_text(message: Mapping[str, Any]) -> ConversationText:
    role = message.get("role")
    if role not in ("user", "assistant"):
        raise DeepgramMessageError(f"ConversationText.role {role!r} is not user or assistant")
    return ConversationText(role=role, content=_str(message, "content"))


def _latency(message: Mapping[str, Any]) -> AgentStartedSpeaking:
    total = message.get("total_latency")
    return AgentStartedSpeaking(
        float(total) if isinstance(total, int | float) and not isinstance(total, bool) else None
    )


def parse_server_message(text: str | bytes) -> ServerMessage:
    """One text frame from the service, typed; raises DeepgramMessageError when it is malformed."""
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DeepgramMessageError(f"not JSON: {type(exc).__name__}") from None
    if not isinstance(message, dict):
        raise DeepgramMessageError("not a JSON object")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise DeepgramMessageError("no message type")
    if kind == "Welcome":
        return Welcome(_str(message, "request_id", default=""))
    if kind == "SettingsApplied":
        return SettingsApplied()
    if kind == "UserStartedSpeaking":
        return UserStartedSpeaking()
    if kind == "AgentThinking":
        return AgentThinking(_str(message, "content", default=""))
    if kind == "ConversationText":
        return _conversation_text(message)
    if kind == "FunctionCallRequest":
        return _function_call_request(message)
    if kind == "AgentStartedSpeaking":
        return _latency(message)
    if kind == "AgentAudioDone":
        return AgentAudioDone()
    if kind == "InjectionRefused":
        return InjectionRefused(_str(message, "message", default=""))
    if kind == "Warning":
        return ServerWarning(_str(message, "code", default=""), _str(message, "description", default=""))
    if kind == "Error":
        return ServerError(_str(message, "code", default=""), _str(message, "description", default=""))
    return Other(kind)


# -- client messages ------------------------------------------------------------------------------


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


KEEP_ALIVE = _dump({"type": "KeepAlive"})


def settings_message(
    *, audio_in: Mapping[str, Any], audio_out: Mapping[str, Any], agent: Mapping[str, Any]
) -> str:
    return _dump(
        {
            "type": "Settings",
            "audio": {"input": dict(audio_in), "output": dict(audio_out)},
            "agent": dict(agent),
        }
    )


def inject_agent_message(message: str, behavior: Literal["default", "queue", "interrupt"]) -> str:
    return _dump({"type": "InjectAgentMessage", "message": message, "behavior": behavior})


def inject_user_message(content: str) -> str:
    return _dump({"type": "InjectUserMessage", "content": content})


def update_prompt(prompt: str) -> str:
    """Adds to the think prompt (Deepgram appends, never replaces)."""
    return _dump({"type": "UpdatePrompt", "prompt": prompt})


def function_call_response(call_id: str, name: str, content: str) -> str:
    return _dump({"type": "FunctionCallResponse", "id": call_id, "name": name, "content": content})


def history_messages(lines: Sequence[tuple[Literal["user", "assistant"], str]]) -> list[dict[str, str]]:
    """`agent.context.messages`: the conversation so far, for a new session that continues it."""
    return [{"type": "History", "role": role, "content": content} for role, content in lines if content]
