"""What the fake ARI server (`tests/fakes/ari_server.py`) knows about channels, without the HTTP side:
the Channel JSON, caller ids, the `variables` bodies, chan_websocket `v()` options and outbound scripts.

Caller id and connected line follow the Asterisk 22.10.1 captures (ari_inbound_stasis, ari_callerid_
propagation): an originate's `callerId` becomes the channel's CALLERID and CONNECTEDLINE; a `variables`
body or `POST /variable` may write CALLERID(num) / CALLERID(name) (function writes are applied, not
listed among the variables); a two-party bridge copies each side's caller id into the other's connected
line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from aiohttp import web

HANGUP_REASONS = {"normal": 16, "busy": 17, "congestion": 34, "no_answer": 19, "answered_elsewhere": 26}
CAUSE_TEXT = {0: "Unknown", 3: "No route to destination", 16: "Normal Clearing", 17: "User busy"}
CAUSE_TEXT |= {
    19: "No answer",
    21: "Call Rejected",
    26: "Answered elsewhere",
    34: "Circuit/channel congestion",
}
BRIDGE_TYPES = {"mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single"}
# The function writes the fake applies; any other `NAME(..)` is refused (Asterisk would log an error and
# go on: stricter here, so a typo fails the test).
_CALLERID_PARTS = {"CALLERID(num)": "number", "CALLERID(name)": "name"}
_CALLER_ID = re.compile(r'^\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^<]*?))\s*<(?P<number>[^>]*)>\s*$')


class Script(StrEnum):
    ANSWER = "answer"  # rings, answers, enters Stasis
    BUSY = "busy"  # Dial BUSY + cause 17
    NO_ANSWER = "no_answer"  # rings, Dial NOANSWER + cause 19
    TIMEOUT = "timeout"  # rings, then main/dial.c's timeout: no Dial event, cause 0
    CONGESTION = "congestion"  # Dial CONGESTION + cause 34
    REJECT = "reject"  # rings, Dial NOANSWER (as dial.c reports it) + cause 21
    RING = "ring"  # rings until hung up
    DROP_THEN_ANSWER = "drop_then_answer"  # rings, drops every events socket, answers while none is up


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass(frozen=True)
class MediaDial:
    """Asterisk dialling the bridge's media socket for a channel: what the socket will present."""

    channel_id: str  # the media channel (its hangup is what the socket closing causes)
    transport: str  # "websocket" or "audiosocket"
    call_id: str  # the `v(callId=..)` of chan_websocket, or the AudioSocket UUID
    options: Mapping[str, str]  # the decoded `v()` parameters (empty for AudioSocket)
    variables: Mapping[str, str]  # the media channel's variables


AnswerHook = Callable[[MediaDial], Awaitable[None] | None]


@dataclass
class FakeChannel:
    id: str
    name: str
    state: str = "Down"
    app: str = ""  # the Stasis app subscribed to its events
    in_stasis: bool = False
    stasis_args: list[str] = field(default_factory=list)
    # Created by the app (originate, externalMedia): its events reach the app even outside Stasis. A
    # caller that entered Stasis() from the dialplan is followed only while in Stasis (no ChannelDestroyed).
    subscribed: bool = True
    caller: str = ""
    caller_name: str = ""
    connected: str = ""
    connected_name: str = ""
    context: str = "default"
    exten: str = "s"
    variables: dict[str, str] = field(default_factory=dict)
    dtmf_sent: list[str] = field(default_factory=list)
    created: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": self.caller_name, "number": self.caller},
            "connected": {"name": self.connected_name, "number": self.connected},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": 1,
                "app_name": "Stasis" if self.in_stasis else "",
                "app_data": ",".join([self.app, *self.stasis_args]) if self.in_stasis else "",
            },
            "creationtime": self.created,
            "language": "en",
        }

    def set_caller(self, number: str, name: str) -> None:
        self.caller, self.caller_name = number, name

    def connect_to(self, peer: FakeChannel) -> bool:
        """A two-party bridge copies the peer's caller id into this channel's connected line; True when
        that changed it (Asterisk then publishes ChannelConnectedLine)."""
        changed = (self.connected, self.connected_name) != (peer.caller, peer.caller_name)
        self.connected, self.connected_name = peer.caller, peer.caller_name
        return changed


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"message": message}), content_type="application/json")


def parse_caller_id(text: str) -> tuple[str, str]:
    """ARI `callerId` (`"Name" <number>`, `<number>` or a bare number) as (number, name)."""
    match = _CALLER_ID.match(text)
    if match is None:
        return text.strip(), ""
    return match["number"].strip(), (match["quoted"] if match["quoted"] is not None else match["bare"] or "")


def body_variables(body: Any) -> dict[str, str]:
    """The `variables` object of a request body, as ARI's json_to_ast_variables accepts it."""
    if body is None:
        return {}
    variables = body.get("variables", {}) if isinstance(body, dict) else None
    if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
        raise bad_request("Only string values in the 'variables' object allowed")
    return dict(variables)


def set_variables(channel: FakeChannel, variables: Mapping[str, str]) -> bool:
    """Store plain variables, apply CALLERID writes; True when the caller id changed."""
    number, name = channel.caller, channel.caller_name
    for key, value in variables.items():
        if key.endswith(")"):
            part = _CALLERID_PARTS.get(key)
            if part is None:
                raise bad_request(f"the fake applies only CALLERID(num) and CALLERID(name), not {key}")
            number, name = (value, name) if part == "number" else (number, value)
        else:
            channel.variables[key] = value
    changed = (number, name) != (channel.caller, channel.caller_name)
    channel.set_caller(number, name)
    return changed


def websocket_options(transport_data: str) -> dict[str, str]:
    """The `v(k=v,..)` parameters of chan_websocket dial options, as the media socket's query gets them."""
    match = re.search(r"v\(([^)]*)\)", transport_data)
    if match is None:
        return {}
    options: dict[str, str] = {}
    for item in match.group(1).split(","):
        key, _, value = item.partition("=")
        if key:
            options[key] = unquote(value)
    return options
