"""Keeps each call's record in the store: written at creation, at every state change and at the end.

So a crash loses at most the live part of the calls in flight (their transcript so far is
written at each state change and at the end). Saves run beside the calls; `flush` waits for
them on shutdown.
"""

from __future__ import annotations

import asyncio

from bridge.logging import get_logger
from bridge.session.session import Session
from bridge.store.records import CallStore


class CallRecorder:
    def __init__(self, store: CallStore) -> None:
        self.store = store
        self._saving: set[asyncio.Task[None]] = set()
        self.failures = 0
        self._log = get_logger("records")

    def track(self, session: Session) -> None:
        session.on_change(self.save)
        self.save(session)

    def save(self, session: Session) -> None:
        # The store hands the write to its thread before its first await: saves land in order.
        task = asyncio.ensure_future(self._save(session))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)

    async def _save(self, session: Session) -> None:
        try:
            await self.store.save(session.record())
        except Exception as exc:  # a full disk must not take calls down; it is logged and counted
            self.failures += 1
            self._log.error("record_save_failed", call_id=session.call_id, error=type(exc).__name__)

    async def flush(self) -> None:
        if self._saving:
            await asyncio.gather(*list(self._saving), return_exceptions=True)
