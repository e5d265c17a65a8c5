"""chan_websocket's TEXT messages as Asterisk writes them, per control format and version.

Pure formatting, written from the spec and the 22.10.1 captures (not shared with bridge.asterisk):
JSON events are compact (no spaces) with `event` first and `channel_id` second; plain-text events are
the bare event name plus `key:value` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal

PlainVariant = Literal["22.6", "22.7", "22.10"]

_VERSIONS: Final[Mapping[str, tuple[int, int]]] = {"22.6": (22, 6), "22.7": (22, 7), "22.10": (22, 10)}


@dataclass(frozen=True, slots=True)
class Dialect:
    """Control format plus the Asterisk version whose behaviour is emulated."""

    json: bool
    version: tuple[int, int] = (22, 10)

    @classmethod
    def of(cls, control: Literal["json", "plain"], plain_variant: PlainVariant = "22.10") -> Dialect:
        if control == "json":
            return cls(json=True, version=(22, 10))
        return cls(json=False, version=_VERSIONS[plain_variant])

    @property
    def has_channel_id(self) -> bool:
        """MEDIA_START, STATUS and DTMF_END carry channel_id from 22.7."""
        return self.version >= (22, 7)

    @property
    def has_marks(self) -> bool:
        """MARK_MEDIA / MEDIA_MARK_PROCESSED exist from 22.8 (earlier: unknown command, ignored)."""
        return self.version >= (22, 8)

    @property
    def has_error_event(self) -> bool:
        return self.version >= (22, 8)

    @property
    def has_direction(self) -> bool:
        return self.version >= (22, 9)

    @property
    def pads_short_frames(self) -> bool:
        """22.6-22.8 padded a short frame with silence; 22.9+ plays it short."""
        return self.version < (22, 9)

    @property
    def label(self) -> str:
        fmt = "json" if self.json else "plain-text"
        return f"{fmt} (Asterisk {self.version[0]}.{self.version[1]})"


def _compact(obj: Mapping[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _bool(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True, slots=True)
class EventFormatter:
    """Builds the TEXT messages one channel sends."""

    dialect: Dialect
    channel_id: str

    def media_start(
        self,
        *,
        connection_id: str,
        channel: str,
        format_name: str,
        optimal_frame_size: int,
        ptime: int,
        channel_variables: Mapping[str, str],
        modes: Mapping[str, bool] | None = None,
    ) -> str:
        """`modes`: `passthrough` and `unbuffered`, which releases after 22.11 add in both formats
        (asterisk/asterisk#2120; where they sit among the fields is not documented: after ptime here)."""
        modes = dict(modes or {})
        if self.dialect.json:
            event: dict[str, object] = {
                "event": "MEDIA_START",
                "connection_id": connection_id,
                "channel": channel,
                "channel_id": self.channel_id,
                "format": format_name,
                "optimal_frame_size": optimal_frame_size,
                "ptime": ptime,
            }
            return _compact(event | modes | {"channel_variables": dict(channel_variables)})
        chan_id = f" channel_id:{self.channel_id}" if self.dialect.has_channel_id else ""
        extra = "".join(f" {name}:{_bool(value)}" for name, value in modes.items())
        return (
            f"MEDIA_START connection_id:{connection_id} channel:{channel}{chan_id} format:{format_name} "
            f"optimal_frame_size:{optimal_frame_size} ptime:{ptime}{extra}"
        )

    def nodata(self, event: str) -> str:
        """MEDIA_XON, MEDIA_XOFF, QUEUE_DRAINED."""
        if self.dialect.json:
            return _compact({"event": event, "channel_id": self.channel_id})
        return event

    def with_id(self, event: str, correlation_id: str) -> str:
        """MEDIA_BUFFERING_COMPLETED, MEDIA_MARK_PROCESSED."""
        if self.dialect.json:
            return _compact({"event": event, "channel_id": self.channel_id, "correlation_id": correlation_id})
        return f"{event} {correlation_id}" if correlation_id else event

    def status(self, queue_length: int, queue_full: bool, bulk_media: bool, media_paused: bool) -> str:
        if self.dialect.json:
            return _compact(
                {
                    "event": "STATUS",
                    "channel_id": self.channel_id,
                    "queue_length": queue_length,
                    "xon_level": 800,
                    "xoff_level": 900,
                    "queue_full": queue_full,
                    "bulk_media": bulk_media,
                    "media_paused": media_paused,
                }
            )
        chan_id = f" channel_id:{self.channel_id}" if self.dialect.has_channel_id else ""
        return (
            f"STATUS{chan_id} queue_length:{queue_length} xon_level:800 xoff_level:900 "
            f"queue_full:{_bool(queue_full)} bulk_media:{_bool(bulk_media)} "
            f"media_paused:{_bool(media_paused)}"
        )

    def dtmf_end(self, digit: str) -> str:
        if self.dialect.json:
            return _compact({"event": "DTMF_END", "channel_id": self.channel_id, "digit": digit})
        if self.dialect.has_channel_id:
            return f"DTMF_END digit:{digit} channel_id:{self.channel_id}"
        return f"DTMF_END digit:{digit}"

    def error(self, error_text: str) -> str:
        if self.dialect.json:
            return _compact({"event": "ERROR", "channel_id": self.channel_id, "error_text": error_text})
        return f"ERROR channel_id:{self.channel_id} error_text:{error_text}"
