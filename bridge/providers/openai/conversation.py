"""The conversation so far as text, kept to be replayed into a new model session (after a reconnect or a
rotation), and the client events that put text into a conversation. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["caller", "bot"]


@dataclass(slots=True)
class Line:
    role: Role
    text: str


def text_item(role: Role, text: str) -> dict[str, Any]:
    """`conversation.item.create` of a text message: the caller speaks `input_text`, the bot `output_text`."""
    if role == "caller":
        item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}
    else:
        item = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
    return {"type": "conversation.item.create", "item": item}


class ConversationHistory:
    """Lines by the model's item id, in arrival order; a later line for the same item replaces it."""

    def __init__(self) -> None:
        self._lines: dict[str, Line] = {}
        self._inputs = 0

    def set(self, item_id: str, role: Role, text: str) -> None:
        self._lines[item_id] = Line(role, text)

    def add_input(self, text: str) -> None:
        """Text the bridge itself added for the caller (their keys): it has no server item id to go by."""
        self._inputs += 1
        self._lines[f"bridge-input-{self._inputs}"] = Line("caller", text)

    def replay(self) -> list[dict[str, Any]]:
        """The conversation as `conversation.item.create` events, empty lines left out."""
        return [text_item(line.role, line.text) for line in self._lines.values() if line.text]
