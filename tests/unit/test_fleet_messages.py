"""The fleet bus's messages: what one node encodes another decodes, and nothing a stray publisher
sends can raise anything but Malformed."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.cluster.base import ControlReply, ControlRequest, NodeStatus
from bridge.cluster.messages import (
    HandedOverMessage,
    Malformed,
    ReplyMessage,
    RequestMessage,
    decode,
    encode,
    entry_from_registry,
    status_from_json,
    status_to_json,
)

MESSAGES = [
    RequestMessage("m1", "node-a", ControlRequest("transfer", "c1", "acme", {"to": "sip:x@y", "n": [1]})),
    ReplyMessage("m1", ControlReply(200, body={"ok": True})),
    ReplyMessage("m2", ControlReply(404, "call_not_found", "no such call")),
    HandedOverMessage("c1"),
]


@pytest.mark.parametrize("message", MESSAGES)
def test_every_message_survives_the_wire(message: object) -> None:
    assert isinstance(message, RequestMessage | ReplyMessage | HandedOverMessage)
    assert decode(encode(message)) == message
    assert json.loads(encode(message))["v"] == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"v": 2, "type": "handed_over", "call_id": "c"}', "unknown version"),
        ('{"v": true, "type": "handed_over", "call_id": "c"}', "unknown version"),
        ('{"v": 1, "type": "shout"}', "unknown type"),
        ('{"v": 1, "type": "reply", "id": "m", "reply": {"status": true}}', "bad status"),
        ('{"v": 1, "type": "reply", "id": "m", "reply": {"status": 700}}', "bad status"),
        ('{"v": 1, "type": "request", "id": "m", "reply_to": "a b", "request": {}}', "bad reply_to"),
        (
            '{"v": 1, "type": "request", "id": "m", "reply_to": "a", "request": {"op": 1}}',
            "op is not a string",
        ),
    ],
)
def test_malformed_messages_say_why_without_echoing_them(raw: str | bytes, reason: str) -> None:
    with pytest.raises(Malformed) as caught:
        decode(raw)
    assert str(caught.value) == reason


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=64) | json_values.map(json.dumps))
def test_nothing_raises_but_malformed(raw: bytes | str) -> None:
    with contextlib.suppress(Malformed):
        decode(raw)


def test_status_round_trip_and_unreadable_status() -> None:
    status = NodeStatus("n", 3, 50, True, 10.0, 12.5)
    assert status_from_json("n", status_to_json(status), alive=False) == NodeStatus(
        "n", 3, 50, True, 10.0, 12.5, False
    )
    assert status_from_json("n", '{"live_calls": "x"}', alive=True) == NodeStatus(
        "n", 0, 0, False, 0.0, 0.0, True
    )
    assert status_from_json("n", None, alive=True).live_calls == 0


def test_registry_entries_unreadable_are_none() -> None:
    assert entry_from_registry("c", None, None) is None
    assert entry_from_registry("c", "{", None) is None
    assert entry_from_registry("c", '{"node": "a"}', None) is None
    found = entry_from_registry("c", '{"node":"a","company":"k","state":"pending"}', '{"x":[]}')
    assert found is not None
    assert (found.node_id, found.info) == ("a", {"x": []})
