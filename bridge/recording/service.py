"""The recordings of every call: where they live, which are being written, repair and retention.

Files are `<recordings_dir>/<company_id>/<call_id>.wav`; a path is resolved and must stay under the
directory whatever the ids hold. At start, files a crash left half-written are repaired (or deleted
when empty); a sweeper deletes recordings older than `recording_retention_days`, at start and hourly.
Every filesystem walk runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from bridge.logging import get_logger
from bridge.recording.recorder import CallRecording
from bridge.recording.wavfile import repair

SWEEP_INTERVAL_S: Final = 3600.0
_DAY_S: Final = 86400.0


class Recordings:
    def __init__(
        self, root: str | Path, retention_days: int, *, sweep_interval_s: float = SWEEP_INTERVAL_S
    ) -> None:
        self.root = Path(root).resolve()
        self.retention_days = retention_days
        self.sweep_interval_s = sweep_interval_s
        self._active: dict[str, CallRecording] = {}  # call id -> the recording being written
        self._sweeper: asyncio.Task[None] | None = None
        self._log = get_logger("recordings")

    def path_for(self, company_id: str, call_id: str) -> Path:
        """Where a call's recording lives; ValueError for ids that would leave the directory."""
        for part in (company_id, call_id):
            if not part or part in (".", "..") or "/" in part or "\\" in part or "\x00" in part:
                raise ValueError(f"unusable id for a recording path: {part!r}")
        path = (self.root / company_id / f"{call_id}.wav").resolve()
        if not path.is_relative_to(self.root) or path.parent.parent != self.root:
            raise ValueError(f"recording path {path} leaves {self.root}")
        return path

    # -- per call ---------------------------------------------------------------------------------

    def open(self, company_id: str, call_id: str) -> CallRecording | None:
        """A recording for a call about to run (None if the ids are unusable or it already has one)."""
        try:
            path = self.path_for(company_id, call_id)
        except ValueError as exc:
            self._log.warning("recording_refused", call_id=call_id, error=str(exc))
            return None
        if call_id in self._active:
            return None
        recording = CallRecording(path, call_id, on_done=self._done)
        self._active[call_id] = recording
        return recording

    def _done(self, recording: CallRecording) -> None:
        if self._active.get(recording.call_id) is recording:
            del self._active[recording.call_id]

    def live(self, company_id: str, call_id: str) -> CallRecording | None:
        """The recording still being written for the company's call, if any."""
        recording = self._active.get(call_id)
        if recording is None or recording.path.parent.name != company_id:
            return None
        return recording

    async def find(self, company_id: str, call_id: str) -> Path | None:
        """The company's finished or growing recording of the call, if there is one on disk."""
        try:
            path = self.path_for(company_id, call_id)
        except ValueError:
            return None
        return path if await asyncio.to_thread(path.is_file) else None

    async def existing(self, company_id: str, call_ids: Iterable[str]) -> set[str]:
        """Which of the company's calls have a recording on disk (one worker-thread trip for a page)."""

        def look() -> set[str]:
            found = set()
            for call_id in call_ids:
                with contextlib.suppress(ValueError):
                    if self.path_for(company_id, call_id).is_file():
                        found.add(call_id)
            return found

        return await asyncio.to_thread(look)

    # -- the directory ----------------------------------------------------------------------------

    def _files(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.glob("*/*.wav") if p.is_file()]

    def repair_all(self) -> dict[str, int]:
        """Blocking: fix every recording a crash left behind (none is being written at start)."""
        counts: dict[str, int] = {}
        for path in self._files():
            try:
                outcome = repair(path)
            except OSError as exc:
                self._log.warning("recording_repair_failed", path=str(path), error=str(exc))
                continue
            counts[outcome] = counts.get(outcome, 0) + 1
        return counts

    def sweep(self, now: float | None = None) -> int:
        """Blocking: delete recordings last written more than retention days before `now`."""
        cutoff = (time.time() if now is None else now) - self.retention_days * _DAY_S
        writing = {r.path for r in self._active.values()}
        removed = 0
        for path in self._files():
            with contextlib.suppress(OSError):
                if path not in writing and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    async def start(self) -> None:
        counts = await asyncio.to_thread(self.repair_all)
        if counts.get("repaired") or counts.get("deleted"):
            self._log.warning("recordings_repaired", **counts)
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await asyncio.to_thread(self.sweep)
            except Exception:  # a failed sweep is retried next hour; the daemon goes on
                self._log.exception("recordings_sweep_failed")
            else:
                if removed:
                    self._log.info("recordings_expired", removed=removed)
            await asyncio.sleep(self.sweep_interval_s)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
