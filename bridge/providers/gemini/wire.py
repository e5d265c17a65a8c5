"""Gemini Live wire helpers and the small records the protocol keeps (pure: no I/O)."""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.providers.base import ProviderEvent


@dataclass(frozen=True, slots=True)
class ProtocolNote:
    """Something the client should log (at `level`), not act on."""

    level: Literal["debug", "info", "warning"]
    message: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class SetupComplete:
    """The server accepted the setup: the session is live."""


@dataclass(frozen=True, slots=True)
class GoAway:
    """The server will close this connection soon (`time_left` as sent, e.g. "50s")."""

    time_left: str = ""


Incoming = ProviderEvent | ProtocolNote | SetupComplete | GoAway


@dataclass(slots=True)
class TurnState:
    id: str
    audio_bytes: int = 0
    text: list[str] = field(default_factory=list)
    audio_done: bool = False
    interrupted: bool = False  # the server cut it (the caller talked, or our text input)
    muted: bool = False  # the bridge cut it: its late audio is dropped
    heard_ms: float | None = None  # set by interrupt()
    say_id: int | None = None
    line_sent: bool = False


@dataclass(frozen=True, slots=True)
class Owed:
    """A client-content message waiting for the model's turn to end."""

    message: str
    starts_turn: bool
    say_id: int | None = None


def field_of(obj: dict[str, Any], camel: str, snake: str) -> Any:
    """Proto3 JSON: the server may use either casing."""
    return obj[camel] if camel in obj else obj.get(snake)


def b64decode(data: str) -> bytes:
    """Standard or URL-safe base64 (proto3 JSON accepts both)."""
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    if len(data) % 4:
        data += "=" * (-len(data) % 4)
    return binascii.a2b_base64(data.encode("ascii"), strict_mode=True)


def dumps(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
