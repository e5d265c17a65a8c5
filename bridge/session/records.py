"""Keeps each call's record in the store: at creation, at every state change, at the end, and every
`checkpoint_seconds` while the call has media.

So a crash (kill -9, power cut) loses at most about the last interval of the calls in flight: after
the restart each shows what its last checkpoint held (duration, frames, usage, cost, transcript) and
ends when that checkpoint was taken. One task checkpoints the calls, a tenth of them every tenth of
the interval in turn; the event loop only takes the snapshots, and the store's one worker thread
encodes and writes them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, Final

from bridge.logging import get_logger
from bridge.session.session import Session
from bridge.store.records import CallRecord, CallStore, StoreWrite

# Snapshots taken per turn of the event loop: with many calls, media still runs between batches.
CHECKPOINT_BATCH: Final = 50
# The periodic checkpoint takes this share of the live calls at a time, round robin, each share a
# `1/CHECKPOINT_SLICES` of the interval apart. All 200 calls at once held the event loop (snapshots)
# and the GIL (the store's thread encoding them) for 25-30 ms every interval: a gap in every call's
# audio (bench: 400 underrun ticks in 20 s at 200 calls, 0 without the checkpoints).
CHECKPOINT_SLICES: Final = 10


Companion = Callable[[Session, CallRecord], StoreWrite | None]


def _together(writes: list[StoreWrite]) -> StoreWrite:
    def write(conn: Any) -> None:
        for each in writes:
            each(conn)

    return write


class CallRecorder:
    def __init__(
        self,
        store: CallStore,
        *,
        checkpoint_seconds: float = 5.0,
        companions: Sequence[Companion] = (),
    ) -> None:
        if checkpoint_seconds <= 0:
            raise ValueError("checkpoint_seconds must be positive")
        self.store = store
        # Asked at each save, in order: rows that must commit with this version of the record (the
        # webhook outbox's events when the call became active, ended or failed; usage rows at the end),
        # or None. Append to add one.
        self.companions: list[Companion] = list(companions)
        self.checkpoint_seconds = checkpoint_seconds
        self.failures = 0
        self._saving: set[asyncio.Task[None]] = set()
        self._live: dict[Session, None] = {}  # tracked calls not over yet (a dict keeps arrival order)
        self._checkpointing: set[Session] = set()  # their last checkpoint is still being written
        self._checkpointer: asyncio.Task[None] | None = None
        self._share_credit = 0.0  # calls owed a turn by `checkpoint_share`, fractions included
        self._log = get_logger("records")

    def start(self) -> None:
        """Start checkpointing live calls (idempotent; call it with the event loop running)."""
        if self._checkpointer is None:
            self._checkpointer = asyncio.get_running_loop().create_task(
                self._checkpoint_forever(), name="call-checkpoints"
            )

    @property
    def running(self) -> bool:
        """Whether live calls are being checkpointed."""
        return self._checkpointer is not None and not self._checkpointer.done()

    def track(self, session: Session) -> None:
        session.on_change(self.save)
        session.on_end(self._forget)
        if not session.state.is_terminal:
            self._live[session] = None
        self.save(session)

    def save(self, session: Session) -> None:
        self._issue(session)

    def _issue(self, session: Session) -> asyncio.Task[None]:
        # The task snapshots the call and hands the write to the store's thread in one step, and
        # tasks start in creation order: saves land in the order they were issued.
        task = asyncio.ensure_future(self._save(session))
        self._saving.add(task)
        task.add_done_callback(self._saving.discard)
        return task

    async def _save(self, session: Session) -> None:
        try:
            record = session.record()
            writes = [w for w in (companion(session, record) for companion in self.companions) if w]
            await self.store.save(record, also=_together(writes) if writes else None)
        except Exception as exc:  # a full disk must not take calls down; it is logged and counted
            self.failures += 1
            self._log.error("record_save_failed", call_id=session.call_id, error=type(exc).__name__)

    def _forget(self, session: Session) -> None:
        # Its final save follows (the end is a state change); no more checkpoints.
        self._live.pop(session, None)

    async def checkpoint(self) -> int:
        """Save every call that has media, unless its previous checkpoint is still being written
        (a slow disk gets one pending checkpoint per call, not a growing queue). Returns how many."""
        issued = 0
        for session in list(self._live):
            if not self._checkpointable(session):
                continue
            if issued and issued % CHECKPOINT_BATCH == 0:
                await asyncio.sleep(0)  # the call may have ended meanwhile: `_checkpoint_call` looks again
            issued += self._checkpoint_call(session)
        return issued

    def checkpoint_share(self, shares: int) -> int:
        """Checkpoint the next `1/shares` of the live calls, taking them in turn (a fraction of a call
        carries over to the next share): called `shares` times, it has been through every call once.
        Returns how many were saved."""
        live = self._live
        self._share_credit = min(len(live), self._share_credit + len(live) / shares)
        turns = int(self._share_credit + 1e-9)  # 10 x 0.1 is 0.999...
        self._share_credit = max(0.0, self._share_credit - turns)
        issued = 0
        for _ in range(turns):
            session = next(iter(live))
            del live[session]
            live[session] = None  # to the back of the line
            issued += self._checkpoint_call(session)
        return issued

    def _checkpointable(self, session: Session) -> bool:
        # Without media nothing moves between state changes, which save anyway.
        return not (
            session.connected_at is None or session.state.is_terminal or session in self._checkpointing
        )

    def _checkpoint_call(self, session: Session) -> bool:
        if not self._checkpointable(session):
            return False
        self._checkpointing.add(session)
        self._issue(session).add_done_callback(functools.partial(self._checkpoint_done, session))
        return True

    def _checkpoint_done(self, session: Session, _: asyncio.Task[None]) -> None:
        self._checkpointing.discard(session)

    async def _checkpoint_forever(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_seconds / CHECKPOINT_SLICES)
            self.checkpoint_share(CHECKPOINT_SLICES)

    async def flush(self) -> None:
        """Wait for every save issued so far."""
        if self._saving:
            await asyncio.gather(*list(self._saving), return_exceptions=True)

    async def close(self) -> None:
        """Stop checkpointing, checkpoint the calls still live one last time, wait for every save."""
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.cancel()
            await asyncio.gather(checkpointer, return_exceptions=True)
        await self.checkpoint()
        await self.flush()
