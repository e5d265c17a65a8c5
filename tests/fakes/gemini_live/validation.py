"""Client message validation for the fake Gemini Live server.

Every client message goes through google-genai's own pydantic models (`types.LiveClientMessage`, with
`extra="forbid"` and both casings accepted, as the service's proto3 JSON parser does). Where those
models are laxer than the service, checks are added here:
- the SDK's enums accept any string with a warning: here an unknown value is an error;
- `LiveClientSetup` lacks `realtimeInputConfig` (the SDK sends it anyway): it is taken out and
  validated with `types.RealtimeInputConfig`;
- exactly one message kind per frame, one field per `realtimeInput`, `setup.model` as `models/<id>`,
  one response modality, `functionResponses[].id` (mandatory on the Gemini API) and the PCM MIME type.
A violation closes the socket like the real service: 1007 (invalid argument) with a reason.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from typing import Any

import pydantic
from google.genai import types

INVALID_ARGUMENT = 1007
POLICY_VIOLATION = 1008
KINDS = {
    "setup": "setup",
    "clientContent": "client_content",
    "client_content": "client_content",
    "realtimeInput": "realtime_input",
    "realtime_input": "realtime_input",
    "toolResponse": "tool_response",
    "tool_response": "tool_response",
}
PCM_MIME = re.compile(r"^audio/pcm(;\s*rate=(\d+))?$")


class ClientMessageError(Exception):
    """The message the real service would refuse; `code` is the close code it would send."""

    def __init__(self, reason: str, code: int = INVALID_ARGUMENT) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class ClientMessage:
    kind: str  # setup, client_content, realtime_input, tool_response
    body: dict[str, Any]  # the raw body, as sent
    parsed: types.LiveClientMessage
    realtime_input_config: types.RealtimeInputConfig | None = None


def _strict(model: type[pydantic.BaseModel], data: object) -> Any:
    """`model.model_validate(data)`, with the SDK's enum warnings turned into errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            return model.model_validate(data)
        except UserWarning as exc:  # "<value> is not a valid <Enum>"
            raise ClientMessageError(f"Invalid value: {exc}") from exc
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ClientMessageError(f"Invalid JSON payload received. {first['msg']} at '{where}'") from exc


def _field(obj: dict[str, Any], camel: str, snake: str) -> Any:
    if camel in obj and snake in obj and camel != snake:
        raise ClientMessageError(f"Invalid JSON payload received. Both '{camel}' and '{snake}' are set.")
    return obj[camel] if camel in obj else obj.get(snake)


def parse_client_message(text: str | bytes) -> ClientMessage:
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ClientMessageError("Invalid JSON payload received.") from exc
    if not isinstance(message, dict) or len(message) != 1:
        raise ClientMessageError("Invalid JSON payload received. Exactly one message kind is required.")
    ((key, body),) = message.items()
    kind = KINDS.get(key)
    if kind is None:
        raise ClientMessageError(f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.')
    if not isinstance(body, dict):
        raise ClientMessageError(f"Invalid JSON payload received. '{key}' is not an object.")
    ric: types.RealtimeInputConfig | None = None
    checked: dict[str, Any] = {kind: body}
    if kind == "setup":
        body_rest = dict(body)
        raw_ric = body_rest.pop("realtimeInputConfig", body_rest.pop("realtime_input_config", None))
        if raw_ric is not None:
            ric = _strict(types.RealtimeInputConfig, raw_ric)
        checked = {"setup": body_rest}
    parsed: types.LiveClientMessage = _strict(types.LiveClientMessage, checked)
    if kind == "setup":
        _check_setup(body, parsed)
    elif kind == "realtime_input":
        _check_realtime_input(body)
    elif kind == "tool_response":
        _check_tool_response(parsed)
    elif kind == "client_content":
        _check_client_content(body, parsed)
    return ClientMessage(kind, body, parsed, ric)


def _check_setup(body: dict[str, Any], parsed: types.LiveClientMessage) -> None:
    setup = parsed.setup
    assert setup is not None
    if not setup.model or not setup.model.startswith("models/"):
        raise ClientMessageError("Invalid JSON payload received. setup.model must be 'models/<model>'.")
    config = setup.generation_config
    modalities = config.response_modalities if config and config.response_modalities else []
    if len(modalities) > 1:
        raise ClientMessageError("Multiple response modalities are not supported.")
    for tool in setup.tools or []:
        if not isinstance(tool, types.Tool):
            raise ClientMessageError("setup.tools[] must be Tool objects.")
        for decl in tool.function_declarations or []:
            if decl.parameters is not None and decl.parameters_json_schema is not None:
                raise ClientMessageError(
                    f"function '{decl.name}': only one of parameters and parametersJsonSchema may be set"
                )
            schema = decl.parameters_json_schema
            if schema is not None and not isinstance(schema, dict):
                raise ClientMessageError(f"function '{decl.name}': parametersJsonSchema is not an object")
    del body


def _check_realtime_input(body: dict[str, Any]) -> None:
    if len(body) != 1:
        raise ClientMessageError("realtimeInput must carry exactly one of its fields.")
    audio = _field(body, "audio", "audio")
    if isinstance(audio, dict):
        mime = _field(audio, "mimeType", "mime_type")
        if not isinstance(mime, str) or not PCM_MIME.match(mime):
            raise ClientMessageError(f"Unsupported audio MIME type {mime!r}: send audio/pcm;rate=<hz>.")
        if not audio.get("data"):
            raise ClientMessageError("realtimeInput.audio.data is required.")


def _check_tool_response(parsed: types.LiveClientMessage) -> None:
    response = parsed.tool_response
    assert response is not None
    if not response.function_responses:
        raise ClientMessageError("toolResponse.functionResponses is required.")
    for fr in response.function_responses:
        if not fr.id:
            raise ClientMessageError("functionResponses[].id is required.")
        if not fr.name:
            raise ClientMessageError("functionResponses[].name is required.")
        if fr.response is None:
            raise ClientMessageError("functionResponses[].response is required.")


def _check_client_content(body: dict[str, Any], parsed: types.LiveClientMessage) -> None:
    # pydantic's lax mode takes "yes" or 1 for a bool; proto3 JSON does not.
    turn_complete = _field(body, "turnComplete", "turn_complete")
    if turn_complete is not None and not isinstance(turn_complete, bool):
        raise ClientMessageError("Invalid value at 'client_content.turn_complete' (TYPE_BOOL).")
    content = parsed.client_content
    assert content is not None
    for turn in content.turns or []:
        if turn.role not in ("user", "model"):
            raise ClientMessageError(f"Invalid role {turn.role!r}: 'user' or 'model'.")
        if not turn.parts:
            raise ClientMessageError("clientContent.turns[].parts must not be empty.")


def audio_rate(body: dict[str, Any]) -> int:
    """The rate a validated `realtimeInput.audio` declares (16 kHz when it says none)."""
    audio = _field(body, "audio", "audio")
    match = PCM_MIME.match(str(_field(audio, "mimeType", "mime_type")))
    return int(match.group(2)) if match and match.group(2) else 16000
