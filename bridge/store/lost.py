"""Calls a lost fleet node held: failed as `node_lost` in the store, once, whichever survivor writes.

Runs on the store's writer thread (`store.run(mark_lost, records, now)`). Idempotent: a call already
over is left alone and a call already written is not written again, so two survivors racing, or one
retrying after a failure, change each row once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from bridge.store.records import CallRecord
from bridge.store.schema import EXISTS, UPSERT, record_to_row, stored_text

NODE_LOST: Final = "node_lost"

_LOST: Final = (
    "UPDATE calls SET status = 'failed', error_code = 'node_lost', ended_at = COALESCE(updated_at, ?) "
    "WHERE call_id = ? AND company_id = ? AND status NOT IN ('ended', 'failed')"
)


def mark_lost(conn: Any, records: Sequence[CallRecord], now: float) -> list[str]:
    """Each call still unfinished fails as node_lost, ending at its last save; a call the store never
    saw is written as `records` has it (already failed). Returns the ids this changed."""
    changed: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for record in records:
            call_id = stored_text(record.call_id)
            cursor = conn.execute(_LOST, (now, call_id, stored_text(record.company_id)))
            if cursor.rowcount == 1:
                changed.append(record.call_id)
            elif conn.execute(EXISTS, (call_id,)).fetchone() is None:
                conn.execute(UPSERT, record_to_row(record))
                changed.append(record.call_id)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return changed
