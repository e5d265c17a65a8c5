"""The bus's JSON messages and the node status record, encoded and checked without any I/O.

Every message carries `"v": 1`; anything else (another version, a missing or mistyped field) is
`Malformed`, which the reader logs and drops: a stray publisher must never stop a node's bus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bridge.cluster.base import CallEntry, ControlReply, ControlRequest, NodeStatus

VERSION = 1
NODE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Malformed(ValueError):
    """A bus message that cannot be understood; its text is a short reason, never the payload."""


@dataclass(frozen=True, slots=True)
class RequestMessage:
    id: str
    reply_to: str
    request: ControlRequest


@dataclass(frozen=True, slots=True)
class ReplyMessage:
    id: str
    reply: ControlReply


@dataclass(frozen=True, slots=True)
class HandedOverMessage:
    call_id: str


BusMessage = RequestMessage | ReplyMessage | HandedOverMessage


def encode(message: BusMessage) -> str:
    """JSON text; TypeError/ValueError when args or body hold something JSON cannot carry."""
    out: dict[str, Any] = {"v": VERSION}
    if isinstance(message, RequestMessage):
        r = message.request
        out |= {"type": "request", "id": message.id, "reply_to": message.reply_to}
        out["request"] = {"op": r.op, "call_id": r.call_id, "company_id": r.company_id, "args": dict(r.args)}
    elif isinstance(message, ReplyMessage):
        p = message.reply
        out |= {"type": "reply", "id": message.id}
        out["reply"] = {"status": p.status, "code": p.code, "message": p.message, "body": dict(p.body)}
    else:
        out |= {"type": "handed_over", "call_id": message.call_id}
    return json.dumps(out, separators=(",", ":"), allow_nan=False)


def decode(raw: str | bytes) -> BusMessage:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Malformed("not JSON") from exc
    if not isinstance(data, dict):
        raise Malformed("not a JSON object")
    version = data.get("v")
    if type(version) is not int or version != VERSION:
        raise Malformed("unknown version")
    kind = data.get("type")
    if kind == "request":
        reply_to = _text(data, "reply_to")
        if not NODE_ID.match(reply_to):
            raise Malformed("bad reply_to")
        r = _object(data, "request")
        request = ControlRequest(
            _text(r, "op"), _text(r, "call_id"), _text(r, "company_id"), _object(r, "args")
        )
        return RequestMessage(_text(data, "id"), reply_to, request)
    if kind == "reply":
        p = _object(data, "reply")
        status = p.get("status")
        if type(status) is not int or not 100 <= status <= 599:
            raise Malformed("bad status")
        reply = ControlReply(status, _text(p, "code"), _text(p, "message"), _object(p, "body"))
        return ReplyMessage(_text(data, "id"), reply)
    if kind == "handed_over":
        return HandedOverMessage(_text(data, "call_id"))
    raise Malformed("unknown type")


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise Malformed(f"{key} is not a string")
    return value


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise Malformed(f"{key} is not an object")
    return value


def status_to_json(status: NodeStatus) -> str:
    return json.dumps(
        {
            "v": VERSION,
            "live_calls": status.live_calls,
            "max_calls": status.max_calls,
            "draining": status.draining,
            "started_at": status.started_at,
            "last_seen": status.last_seen,
        }
    )


def status_from_json(node_id: str, raw: str | None, *, alive: bool) -> NodeStatus:
    """A node's last status; zeros when it never wrote one or wrote one this version cannot read."""
    try:
        data = json.loads(raw) if raw else {}
        return NodeStatus(
            node_id=node_id,
            live_calls=int(data.get("live_calls", 0)),
            max_calls=int(data.get("max_calls", 0)),
            draining=bool(data.get("draining", False)),
            started_at=float(data.get("started_at", 0.0)),
            last_seen=float(data.get("last_seen", 0.0)),
            alive=alive,
        )
    except (ValueError, TypeError, AttributeError):
        return NodeStatus(node_id, 0, 0, False, 0.0, 0.0, alive)


def entry_from_registry(call_id: str, raw: str | None, info: str | None) -> CallEntry | None:
    """A registry entry from its two hash fields; None when absent or unreadable."""
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        details = json.loads(info) if info else {}
        if not isinstance(data, dict) or not isinstance(details, dict):
            return None
        return CallEntry(call_id, str(data["company"]), str(data["node"]), str(data["state"]), details)
    except (ValueError, KeyError):
        return None
