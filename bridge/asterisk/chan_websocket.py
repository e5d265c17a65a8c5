"""Asterisk chan_websocket control codec (TEXT messages), server side, sans-I/O.

`parse_event` turns a TEXT message from Asterisk into a typed event (malformed input becomes a
`ProtocolError`, never an exception); `encode_command` builds what we send. Both wire forms: compact JSON
(22.8+) and plain text (22.6 without `channel_id`, 22.7+ with). `encode_event`/`parse_command` mirror them
for fakes and tests. Normalised: empty `channel_id` reads None; `error_text` loses trailing whitespace
(Asterisk's JSON ends it with a newline); unknown extra fields are ignored (newer releases still parse),
while a known field of the wrong type is still a `ProtocolError`.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, TypeAlias

MAX_COMMAND_BYTES: Final = 128  # Asterisk ignores longer TEXT messages
EXCERPT_CHARS: Final = 80
DTMF_DIGITS: Final = frozenset("0123456789*#ABCD")


class ControlFormat(enum.Enum):
    JSON = "json"
    PLAIN = "plain-text"


class MediaDirection(enum.StrEnum):
    BOTH = "both"
    IN = "in"
    OUT = "out"


def detect_format(text: str) -> ControlFormat:
    """The control format implied by the first TEXT message of a connection."""
    return ControlFormat.JSON if text.lstrip().startswith("{") else ControlFormat.PLAIN


def is_bare_word(text: str) -> bool:
    """A non-empty token with no whitespace or control characters (a safe correlation id)."""
    return bool(text) and text.isprintable() and not any(c.isspace() for c in text)


# --------------------------------------------------------------------------- events (Asterisk -> bridge)


@dataclass(frozen=True, slots=True)
class MediaStart:
    connection_id: str
    channel: str
    channel_id: str | None
    format: str
    optimal_frame_size: int
    ptime: int
    channel_variables: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    control_format: ControlFormat = ControlFormat.JSON
    # The channel's modes (dial options `p` and `u`), announced by releases after 22.11 in both formats
    # (asterisk/asterisk#2120); None when this Asterisk does not say.
    passthrough: bool | None = None
    unbuffered: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_variables", MappingProxyType(dict(self.channel_variables)))


# Small events and commands are written densely on purpose: they are plain records.
@dataclass(frozen=True, slots=True)
class MediaXoff:
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class MediaXon:
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueDrained:
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class Status:
    queue_length: int
    xon_level: int
    xoff_level: int
    queue_full: bool
    bulk_media: bool
    media_paused: bool
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class MediaBufferingCompleted:
    correlation_id: str = ""
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class MediaMarkProcessed:
    correlation_id: str = ""
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class DtmfEnd:
    digit: str
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class AsteriskError:
    error_text: str
    channel_id: str | None = None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """Malformed or unknown input; `raw` is a short excerpt of it for the log."""

    reason: str
    raw: str = ""

    def __post_init__(self) -> None:
        if len(self.raw) > EXCERPT_CHARS:
            object.__setattr__(self, "raw", self.raw[: EXCERPT_CHARS - 3] + "...")


Event: TypeAlias = (
    MediaStart
    | MediaXoff
    | MediaXon
    | QueueDrained
    | Status
    | MediaBufferingCompleted
    | MediaMarkProcessed
    | DtmfEnd
    | AsteriskError
    | ProtocolError
)

# --------------------------------------------------------------------------- commands (bridge -> Asterisk)


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer the channel (needed only with the dial option `n`)."""


@dataclass(frozen=True, slots=True)
class Hangup:
    """Hang up (cause 16); Asterisk then closes the socket."""


@dataclass(frozen=True, slots=True)
class StartMediaBuffering:
    """Keep partial frames across binary messages until STOP_MEDIA_BUFFERING."""


@dataclass(frozen=True, slots=True)
class FlushMedia:
    """Drop every queued frame and mark; leaves buffering mode; does not clear pause."""


@dataclass(frozen=True, slots=True)
class PauseMedia:
    """Stop playout, keep the queue."""


@dataclass(frozen=True, slots=True)
class ContinueMedia:
    """Resume playout."""


@dataclass(frozen=True, slots=True)
class ReportQueueDrained:
    """One-shot: QUEUE_DRAINED the next time a tick finds the queue empty."""


@dataclass(frozen=True, slots=True)
class GetStatus:
    """Ask for a STATUS event."""


def _check_id(correlation_id: str | None) -> None:
    if correlation_id is not None and not is_bare_word(correlation_id):
        raise ValueError(f"correlation id must be a bare word: {correlation_id!r}")


@dataclass(frozen=True, slots=True)
class StopMediaBuffering:
    """Queue the leftover as a last short frame, then MEDIA_BUFFERING_COMPLETED(id) at the head."""

    correlation_id: str | None = None

    def __post_init__(self) -> None:
        _check_id(self.correlation_id)


@dataclass(frozen=True, slots=True)
class MarkMedia:
    """MEDIA_MARK_PROCESSED(id) once everything queued before it has played (22.8+)."""

    correlation_id: str | None  # Asterisk accepts an id-less mark; ours always carry one

    def __post_init__(self) -> None:
        _check_id(self.correlation_id)


@dataclass(frozen=True, slots=True)
class SetMediaDirection:
    """JSON only (22.9+)."""

    direction: MediaDirection

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", MediaDirection(self.direction))


Command: TypeAlias = (
    Answer
    | Hangup
    | StartMediaBuffering
    | StopMediaBuffering
    | MarkMedia
    | FlushMedia
    | PauseMedia
    | ContinueMedia
    | ReportQueueDrained
    | GetStatus
    | SetMediaDirection
)

_NO_ARG_COMMANDS: Final[Mapping[str, Callable[[], Command]]] = MappingProxyType(
    {
        "ANSWER": Answer,
        "HANGUP": Hangup,
        "START_MEDIA_BUFFERING": StartMediaBuffering,
        "FLUSH_MEDIA": FlushMedia,
        "PAUSE_MEDIA": PauseMedia,
        "CONTINUE_MEDIA": ContinueMedia,
        "REPORT_QUEUE_DRAINED": ReportQueueDrained,
        "GET_STATUS": GetStatus,
    }
)
_ID_COMMANDS: Final[Mapping[str, Callable[[str | None], Command]]] = MappingProxyType(
    {"STOP_MEDIA_BUFFERING": StopMediaBuffering, "MARK_MEDIA": MarkMedia}
)
_COMMAND_NAMES: Final[Mapping[object, str]] = MappingProxyType(
    {v: k for k, v in (*_NO_ARG_COMMANDS.items(), *_ID_COMMANDS.items())}
    | {SetMediaDirection: "SET_MEDIA_DIRECTION"}
)


def _dumps(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def encode_command(cmd: Command, fmt: ControlFormat) -> str:
    """The TEXT message for `cmd`. ValueError if it cannot be sent in `fmt` or exceeds 128 bytes."""
    name = _COMMAND_NAMES[type(cmd)]
    arg: str | None = None
    extra: dict[str, str] = {}
    if isinstance(cmd, StopMediaBuffering | MarkMedia) and cmd.correlation_id is not None:
        arg = cmd.correlation_id
        extra["correlation_id"] = arg
    elif isinstance(cmd, SetMediaDirection):
        if fmt is ControlFormat.PLAIN:
            raise ValueError("SET_MEDIA_DIRECTION is JSON-only")
        extra["direction"] = cmd.direction.value
    if fmt is ControlFormat.JSON:
        text = _dumps({"command": name, **extra})
    else:
        text = name if arg is None else f"{name} {arg}"
    if len(text.encode()) > MAX_COMMAND_BYTES:
        raise ValueError(f"{name} would be {len(text.encode())} bytes; Asterisk ignores over 128")
    return text


# --------------------------------------------------------------------------- event parsing, table-driven


class _Bad(Exception):
    """Internal: raised inside a field reader, turned into ProtocolError at the boundary."""


def _text(key: str, value: Any, plain: bool, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or not (value or allow_empty):
        raise _Bad(f"{key} is not a non-empty string")
    return value


def _int(minimum: int) -> Callable[[str, Any, bool], int]:
    def read(key: str, value: Any, plain: bool) -> int:
        if plain and value.isascii() and value.isdigit() and len(value) <= 9:
            value = int(value)
        if type(value) is not int or not minimum <= value < 2**31:
            raise _Bad(f"{key} is not an integer >= {minimum}")
        return value

    return read


def _bool(key: str, value: Any, plain: bool) -> bool:
    if plain and value in ("true", "false"):
        value = value == "true"
    if type(value) is not bool:
        raise _Bad(f"{key} is not a boolean")
    return value


def _optional(key: str, value: Any, plain: bool) -> str | None:
    return _text(key, value, plain, allow_empty=True) or None


def _correlation(key: str, value: Any, plain: bool) -> str:
    cid = _text(key, value, plain, allow_empty=True)
    if cid and not is_bare_word(cid):
        raise _Bad(f"{key} is not a bare word")
    return cid


def _digit(key: str, value: Any, plain: bool) -> str:
    if _text(key, value, plain) not in DTMF_DIGITS:
        raise _Bad(f"invalid DTMF digit {str(value)[:8]!r}")
    return str(value)


def _variables(key: str, value: Any, plain: bool) -> Mapping[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Bad(f"{key} is not an object of strings")
    return value


# How each field is read, and its value when absent (_REQUIRED: a ProtocolError).
_REQUIRED: Final = object()
_FIELDS: Final[Mapping[str, tuple[Callable[[str, Any, bool], Any], object]]] = MappingProxyType(
    {
        "connection_id": (_text, _REQUIRED),
        "channel": (_text, _REQUIRED),
        "format": (_text, _REQUIRED),
        "channel_id": (_optional, None),
        "optimal_frame_size": (_int(1), _REQUIRED),
        "ptime": (_int(1), _REQUIRED),
        "channel_variables": (_variables, {}),
        "passthrough": (_bool, None),
        "unbuffered": (_bool, None),
        "queue_length": (_int(0), _REQUIRED),
        "xon_level": (_int(0), _REQUIRED),
        "xoff_level": (_int(0), _REQUIRED),
        "queue_full": (_bool, _REQUIRED),
        "bulk_media": (_bool, _REQUIRED),
        "media_paused": (_bool, _REQUIRED),
        "digit": (_digit, _REQUIRED),
        "correlation_id": (_correlation, ""),
        "error_text": (lambda k, v, p: _text(k, v, p, allow_empty=True).rstrip(), _REQUIRED),
    }
)
# Each event: its class and its fields in Asterisk's wire order (channel_variables: JSON only).
_EVENTS: Final[Mapping[str, tuple[type[Any], tuple[str, ...]]]] = MappingProxyType(
    {
        "MEDIA_START": (
            MediaStart,
            (
                "connection_id",
                "channel",
                "channel_id",
                "format",
                "optimal_frame_size",
                "ptime",
                "passthrough",
                "unbuffered",
                "channel_variables",
            ),
        ),
        "MEDIA_XOFF": (MediaXoff, ("channel_id",)),
        "MEDIA_XON": (MediaXon, ("channel_id",)),
        "QUEUE_DRAINED": (QueueDrained, ("channel_id",)),
        "STATUS": (
            Status,
            (
                "channel_id",
                "queue_length",
                "xon_level",
                "xoff_level",
                "queue_full",
                "bulk_media",
                "media_paused",
            ),
        ),
        "MEDIA_BUFFERING_COMPLETED": (MediaBufferingCompleted, ("channel_id", "correlation_id")),
        "MEDIA_MARK_PROCESSED": (MediaMarkProcessed, ("channel_id", "correlation_id")),
        "DTMF_END": (DtmfEnd, ("digit", "channel_id")),
        "ERROR": (AsteriskError, ("channel_id", "error_text")),
    }
)
_EVENT_NAMES: Final[Mapping[object, str]] = MappingProxyType({cls: n for n, (cls, _) in _EVENTS.items()})
_ID_EVENTS: Final = frozenset(("MEDIA_BUFFERING_COMPLETED", "MEDIA_MARK_PROCESSED"))
_PLAIN_KEYED: Final = frozenset(("MEDIA_START", "STATUS", "DTMF_END", "ERROR"))  # others: no channel_id
# Asterisk 22.10.1 orders DTMF_END's keys differently per format (captures ws_dtmf_*.jsonl):
# JSON puts channel_id first, plain text puts digit first.
_JSON_KEY_ORDER: Final = MappingProxyType({"DTMF_END": ("channel_id", "digit")})


def _plain_fields(name: str, rest: str) -> dict[str, str]:
    """`key:value` tokens (split at the first colon); a bare first word is the correlation id."""
    values: dict[str, str] = {}
    tokens = list(re.finditer(r"\S+", rest))
    if name in _ID_EVENTS and tokens:
        values["correlation_id"] = tokens.pop(0).group()
    for i, match in enumerate(tokens):
        key, sep, value = match.group().partition(":")
        if name == "ERROR" and key == "error_text" and sep:
            values[key] = rest[match.start() + len("error_text:") :]  # the rest, spaces included
            break
        if not sep or not key:
            raise _Bad(f"token {i + 1} is not key:value")
        if key in values:
            raise _Bad(f"duplicate field {key}")
        values[key] = value
    return values


def _parse_json(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _Bad("invalid JSON") from exc
    if not isinstance(obj, dict):
        raise _Bad("JSON message is not an object")
    return obj


def parse_event(text: str) -> Event:
    """One TEXT message from Asterisk, in either control format. Never raises."""
    stripped = text.strip()
    try:
        if not stripped:
            raise _Bad("empty message")
        plain = not stripped.startswith("{")
        head, _, rest = stripped.partition(" ")
        values = {} if plain else _parse_json(stripped)
        name = head if plain else values.get("event")
        if not isinstance(name, str) or name not in _EVENTS:
            raise _Bad(f"unknown event {str(name)[:32]!r}")
        if plain:
            values = _plain_fields(name, rest)
        cls, keys = _EVENTS[name]
        kwargs = {}
        for key in keys:
            read, default = _FIELDS[key]
            if key in values:
                kwargs[key] = read(key, values[key], plain)
            elif default is _REQUIRED:
                raise _Bad(f"missing field {key}")
            else:
                kwargs[key] = default
        if cls is MediaStart:
            kwargs["control_format"] = ControlFormat.PLAIN if plain else ControlFormat.JSON
        event: Event = cls(**kwargs)
        return event
    except _Bad as exc:
        return ProtocolError(str(exc), text)


def parse_command(text: str) -> Command | ProtocolError:
    """One TEXT message as Asterisk would read it (for fakes and tests). Never raises."""
    stripped = text.strip()
    try:
        if len(text.encode(errors="replace")) > MAX_COMMAND_BYTES:
            raise _Bad("over 128 bytes (Asterisk ignores it)")
        if not stripped:
            raise _Bad("empty message")
        arg: str | None
        if stripped.startswith("{"):
            obj = _parse_json(stripped)
            name, arg, direction = obj.get("command"), obj.get("correlation_id"), obj.get("direction")
            if not isinstance(name, str) or not isinstance(arg, str | None):
                raise _Bad("command or correlation_id is not a string")
        else:
            name, _, arg = stripped.partition(" ")
            direction = None
            if name == "SET_MEDIA_DIRECTION":
                raise _Bad("SET_MEDIA_DIRECTION is JSON-only")
        arg = arg or None
        if name in _NO_ARG_COMMANDS:
            if arg is not None and not stripped.startswith("{"):
                raise _Bad(f"{name} takes no argument")
            return _NO_ARG_COMMANDS[name]()
        if name == "SET_MEDIA_DIRECTION":
            if direction not in ("both", "in", "out"):
                raise _Bad("invalid direction")
            return SetMediaDirection(MediaDirection(direction))
        if name not in _ID_COMMANDS:
            raise _Bad(f"unknown command {name[:32]!r}")
        if arg is not None and not is_bare_word(arg):
            raise _Bad("correlation id is not a bare word")
        return _ID_COMMANDS[name](arg)
    except _Bad as exc:
        return ProtocolError(str(exc), text)


def encode_event(event: Event, fmt: ControlFormat) -> str:
    """The TEXT message Asterisk would send for `event`, for fakes and tests. Plain text drops what
    Asterisk drops there: channel_variables, and channel_id on events that never carry it."""
    if isinstance(event, ProtocolError):
        raise ValueError("a ProtocolError is not a wire event")
    name = _EVENT_NAMES[type(event)]
    values = {key: getattr(event, key) for key in _EVENTS[name][1]}
    if fmt is ControlFormat.JSON:
        if isinstance(event, MediaStart):
            values["channel_variables"] = dict(event.channel_variables)
        if name in _JSON_KEY_ORDER:
            values = {key: values[key] for key in _JSON_KEY_ORDER[name]}
        return _dumps({"event": name} | {k: v for k, v in values.items() if v is not None})
    tokens = [name]
    for key, value in values.items():
        if value is None or key == "channel_variables" or (key == "channel_id" and name not in _PLAIN_KEYED):
            continue
        shown = str(value).lower() if isinstance(value, bool) else str(value)
        if key != "error_text" and shown and not is_bare_word(shown):
            raise ValueError(f"cannot carry {shown!r} in a plain-text token")
        tokens.append(shown if key == "correlation_id" else f"{key}:{shown}")
    return " ".join(t for t in tokens if t)
