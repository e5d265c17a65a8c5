"""Client-created conversation items, truncation, deletion, retrieval."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .script import TruncateRecord
from .validation import Problem
from .wire import Item

if TYPE_CHECKING:
    from .connection import FakeConnection


class ConversationItems:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn

    async def on_create(self, event: dict[str, Any]) -> None:
        conn = self.conn
        item = dict(event["item"])
        item.setdefault("id", conn.new_id("item"))
        item.setdefault("object", "realtime.item")
        item.setdefault("status", "completed")
        conn.record.items_created.append(item)
        kind = item["type"]
        if kind == "function_call_output":
            conn.record.function_outputs.append({"call_id": item["call_id"], "output": item["output"]})
            if item["call_id"] not in conn.responder.call_ids:
                conn.fail(f"function_call_output for unknown call_id {item['call_id']!r}")
        elif kind == "message" and item.get("role") == "user":
            conn.user_turns += 1
        previous = conn.add_item(Item(item["id"], kind, item))
        await conn.send({"type": "conversation.item.added", "item": item, "previous_item_id": previous})
        await conn.send({"type": "conversation.item.done", "item": item, "previous_item_id": previous})

    async def on_truncate(self, event: dict[str, Any]) -> None:
        conn = self.conn
        item_id, end_ms, event_id = event["item_id"], event["audio_end_ms"], event.get("event_id")
        item = conn.items.get(item_id)
        rec = TruncateRecord(item_id, end_ms, item.audio_ms if item else None, time.monotonic(), False)
        conn.record.truncates.append(rec)
        if item is None:
            await conn.reject(
                Problem("item_not_found", f"Item with item_id '{item_id}' not found.", "item_id", event_id)
            )
        elif item.kind != "assistant" or event["content_index"] != 0:
            msg = "Only the audio content (content_index 0) of an assistant message can be truncated."
            await conn.reject(Problem("invalid_value", msg, "content_index", event_id))
        elif end_ms < 0 or end_ms > round(item.audio_ms):
            msg = f"Audio content of {item.audio_ms:.0f}ms is already shorter than {end_ms}ms"
            await conn.reject(Problem("invalid_value", msg, "audio_end_ms", event_id))
        else:
            rec.accepted = True
            item.audio_ms = end_ms
            await conn.send(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item_id,
                    "content_index": 0,
                    "audio_end_ms": end_ms,
                }
            )

    async def on_delete(self, event: dict[str, Any]) -> None:
        conn = self.conn
        if conn.items.pop(event["item_id"], None) is None:
            msg = f"Item with item_id '{event['item_id']}' not found."
            await conn.reject(Problem("item_not_found", msg, "item_id", event.get("event_id")))
            return
        await conn.send({"type": "conversation.item.deleted", "item_id": event["item_id"]})

    async def on_retrieve(self, event: dict[str, Any]) -> None:
        conn = self.conn
        item = conn.items.get(event["item_id"])
        if item is None:
            msg = f"Item with item_id '{event['item_id']}' not found."
            await conn.reject(Problem("item_not_found", msg, "item_id", event.get("event_id")))
            return
        await conn.send({"type": "conversation.item.retrieved", "item": item.wire})
