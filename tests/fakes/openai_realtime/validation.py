"""Strict validation of client events with the `openai` package's models (spec §11), plus xAI's shape.

Every event is validated against a *real* discriminated union (the SDK's own marker is ignored by
pydantic), then checked recursively for unknown fields, which the SDK models silently allow.
"""

from __future__ import annotations

import binascii
import json
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator


def discriminated(sdk_union: object) -> TypeAdapter[Any]:
    members = typing.get_args(typing.get_args(sdk_union)[0])  # unwrap Annotated, then Union
    union: Any = Annotated[Union[members], Field(discriminator="type")]  # noqa: UP007
    return TypeAdapter(union)


CLIENT_EVENTS = discriminated(RealtimeClientEvent)
SERVER_EVENTS = discriminated(RealtimeServerEvent)

XAI_PCM_RATES = (8000, 16000, 21050, 24000, 32000, 44100, 48000)


@dataclass(frozen=True)
class Problem:
    """Why a client event was rejected; becomes an `error` event."""

    code: str
    message: str
    param: str | None = None
    event_id: str | None = None

    def to_error(self) -> dict[str, Any]:
        return {
            "type": "invalid_request_error",
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": self.event_id,
        }


# --- xAI session.update (the openai types put voice/turn_detection elsewhere) -----------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class XaiFormat(_Strict):
    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[8000, 16000, 21050, 24000, 32000, 44100, 48000] | None = None

    @model_validator(mode="after")
    def _g711_is_8k(self) -> XaiFormat:
        if self.type != "audio/pcm" and self.rate not in (None, 8000):
            raise ValueError("G.711 formats are 8000 Hz only")
        return self


class XaiAudioOutput(_Strict):
    format: XaiFormat | None = None
    transport: Literal["json", "binary"] | None = None


class XaiAudioInput(XaiAudioOutput):
    transcription: dict[str, Any] | None = None


class XaiAudio(_Strict):
    input: XaiAudioInput | None = None
    output: XaiAudioOutput | None = None


class XaiServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class XaiFunctionTool(_Strict):
    type: Literal["function"]
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class XaiBuiltinTool(BaseModel):
    model_config = ConfigDict(extra="allow")  # built-in tool options are not pinned down by the spec
    type: Literal["web_search", "x_search", "file_search", "mcp"]


class XaiSession(_Strict):
    type: Literal["realtime"] | None = None
    model: str | None = None
    instructions: str | None = None
    voice: str | None = None
    turn_detection: XaiServerVad | None = None
    audio: XaiAudio | None = None
    tools: list[Annotated[XaiFunctionTool | XaiBuiltinTool, Field(discriminator="type")]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class XaiSessionUpdate(_Strict):
    type: Literal["session.update"]
    session: XaiSession
    event_id: str | None = None


# --- Helpers ---------------------------------------------------------------------------------------

_CODE_BY_ERROR_TYPE = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "literal_error": "invalid_value",
    "union_tag_invalid": "invalid_value",
    "union_tag_not_found": "missing_required_parameter",
    "enum": "invalid_value",
}


def _param(loc: tuple[int | str, ...], *, drop_tag: bool) -> str:
    # pydantic puts the union tag first and the model class name of each union branch into loc.
    parts = list(loc[1:] if drop_tag and loc else loc)
    kept = [str(p) for p in parts if not (isinstance(p, str) and p[:1].isupper())]
    return ".".join(kept)


def problem_from_validation(exc: ValidationError, raw: dict[str, Any], *, drop_tag: bool) -> Problem:
    errors = exc.errors()
    session = raw.get("session")
    wants_transcription = isinstance(session, dict) and session.get("type") == "transcription"
    # Union branches the client obviously did not mean only add noise.
    relevant = [
        e
        for e in errors
        if wants_transcription or "RealtimeTranscriptionSessionCreateRequest" not in map(str, e["loc"])
    ] or errors
    first = relevant[0]
    etype = first["type"]
    code = _CODE_BY_ERROR_TYPE.get(etype, "invalid_type" if etype.endswith("_type") else "invalid_value")
    param = _param(first["loc"], drop_tag=drop_tag) or None
    if etype == "union_tag_invalid":
        param = "type"
    details = "; ".join(
        f"{_param(e['loc'], drop_tag=drop_tag) or 'event'}: {e['msg']} (got {e.get('input')!r:.60})"
        for e in relevant[:3]
    )
    event_id = raw.get("event_id") if isinstance(raw.get("event_id"), str) else None
    return Problem(code, f"Invalid '{raw.get('type')}' event: {details}", param, event_id)


def find_extra(obj: object, path: str = "") -> str | None:
    """Dotted path of the first field the SDK model accepted but does not define."""
    if isinstance(obj, BaseModel):
        if obj.model_extra:
            key = next(iter(obj.model_extra))
            return f"{path}.{key}" if path else key
        for name in type(obj).model_fields:
            found = find_extra(getattr(obj, name), f"{path}.{name}" if path else name)
            if found:
                return found
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            found = find_extra(v, f"{path}[{i}]")
            if found:
                return found
    return None


def decode_audio(audio: str, event_id: str | None) -> bytes | Problem:
    """Strict base64 (no stray characters, correct padding), as a Problem when malformed."""
    try:
        return binascii.a2b_base64(audio, strict_mode=True)
    except binascii.Error as exc:
        return Problem("invalid_value", f"Invalid 'audio': not valid base64 ({exc}).", "audio", event_id)


_APPEND_KEYS = frozenset({"type", "audio", "event_id"})


def check_append_fast(raw: dict[str, Any]) -> Problem | None:
    """Shape check for the hot path: keys and types. No pydantic."""
    event_id = raw.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        return Problem("invalid_type", "Invalid type for 'event_id': expected a string.", "event_id")
    extra = set(raw) - _APPEND_KEYS
    if extra:
        key = sorted(extra)[0]
        return Problem("unknown_parameter", f"Unknown parameter: '{key}'.", key, event_id)
    if "audio" not in raw:
        return Problem(
            "missing_required_parameter", "Missing required parameter: 'audio'.", "audio", event_id
        )
    if not isinstance(raw["audio"], str):
        return Problem("invalid_type", "Invalid type for 'audio': expected a string.", "audio", event_id)
    return None  # base64 is checked where it is decoded, so it is decoded only once


def parse_client_event(
    message: str | bytes, *, variant: str, full_append: bool
) -> tuple[dict[str, Any] | None, Problem | None]:
    """Decode and validate one client frame. Returns (event, None) or (None, problem)."""
    if isinstance(message, bytes):
        return None, Problem("invalid_request_error", "Binary frames are not supported; send JSON text.")
    try:
        raw = json.loads(message)
    except ValueError as exc:
        return None, Problem("invalid_json", f"Invalid JSON: {exc}")
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        return None, Problem("missing_required_parameter", "Missing required parameter: 'type'.", "type")
    etype = raw["type"]
    if etype == "input_audio_buffer.append" and not full_append:
        return (None, p) if (p := check_append_fast(raw)) else (raw, None)
    if variant == "xai" and etype == "session.update":
        try:
            XaiSessionUpdate.model_validate(raw)
        except ValidationError as exc:
            return None, problem_from_validation(exc, raw, drop_tag=False)
        return raw, None
    try:
        model = CLIENT_EVENTS.validate_python(raw)
    except ValidationError as exc:
        return None, problem_from_validation(exc, raw, drop_tag=True)
    event_id = raw.get("event_id")
    extra = find_extra(model)
    if extra:
        return None, Problem("unknown_parameter", f"Unknown parameter: '{extra}'.", extra, event_id)
    if etype == "session.update":
        return (None, p) if (p := _session_extras(raw, event_id)) else (raw, None)
    return raw, None


def _session_extras(raw: dict[str, Any], event_id: str | None) -> Problem | None:
    """GA rules the SDK types do not enforce."""
    session = raw["session"]
    if session.get("type") != "realtime":
        return Problem(
            "invalid_value", "This server only supports session.type 'realtime'.", "session.type", event_id
        )
    audio = session.get("audio") or {}
    for direction in ("input", "output"):
        fmt = (audio.get(direction) or {}).get("format")
        if isinstance(fmt, dict) and "type" not in fmt:
            param = f"session.audio.{direction}.format.type"
            return Problem(
                "missing_required_parameter", f"Missing required parameter: '{param}'.", param, event_id
            )
    modalities = session.get("output_modalities")
    if isinstance(modalities, list) and len(modalities) != 1:
        msg = "output_modalities must be ['audio'] or ['text']."
        return Problem("invalid_value", msg, "session.output_modalities", event_id)
    return None


def check_outgoing(event: dict[str, Any]) -> str | None:
    """Validate an event the fake is about to send; None when fine (catches bugs in the fake itself)."""
    try:
        SERVER_EVENTS.validate_python(event)
    except ValidationError as exc:
        return f"{event.get('type')}: {exc.errors()[:2]}"
    return None
