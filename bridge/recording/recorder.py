"""One call's recording as it runs: the leg's tap on the loop, the disk writes off it.

On the loop a `CallRecording` only appends to the timeline's buffers. Every `block_s` a pump task
commits what is at least `hold_s` old into a bounded queue, and a writer task hands each block to a
worker thread (`asyncio.to_thread`). A writer that falls behind loses blocks (counted; the file keeps
its timing, with silence there), never grows memory. `aclose` writes the rest and the final sizes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

from bridge.audio.formats import AudioFormat
from bridge.logging import get_logger
from bridge.recording.timeline import Block, StereoTimeline
from bridge.recording.wavfile import StereoWavWriter

MAX_PENDING_BLOCKS: Final = 8
CLOSE_TIMEOUT_S: Final = 10.0


class CallRecording:
    """A `LegTap` (bridge.session.leg_tap) writing `<recordings_dir>/<company>/<call>.wav`."""

    def __init__(
        self,
        path: Path,
        call_id: str,
        *,
        block_s: float = 0.5,
        hold_s: float = 0.4,
        max_pending: int = MAX_PENDING_BLOCKS,
        on_done: Callable[[CallRecording], None] | None = None,
    ) -> None:
        self.path = path
        self.call_id = call_id
        self.block_s, self.hold_s = block_s, hold_s
        self.timeline: StereoTimeline | None = None
        self.queue: asyncio.Queue[Block | None] = asyncio.Queue(max_pending)
        self.dropped_blocks = 0
        self.max_queued = 0  # the deepest the queue got (the tests read it)
        self.max_buffered_bytes = 0  # the most audio the timeline held at a commit
        self.failed = False
        self.began = asyncio.Event()  # the leg's format is known (or the call ended without one)
        self.finished = asyncio.Event()  # the file is complete (or was never made)
        # Replaced and set after each block reaches the disk: a live stream waits on the current one.
        self.grown = asyncio.Event()
        self._writer: StereoWavWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_done = on_done
        self._closed = False
        self._log = get_logger("recording").bind(call_id=call_id)

    @property
    def format(self) -> AudioFormat | None:
        return self.timeline.fmt if self.timeline else None

    # -- the tap (on the loop, per frame: arithmetic and appends only) --------------------------------

    def started(self, fmt: AudioFormat) -> None:
        if self.timeline is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        self.timeline = StereoTimeline(fmt, loop.time(), hold_s=self.hold_s)
        self._writer = StereoWavWriter(self.path, fmt)
        self._tasks = [loop.create_task(self._pump()), loop.create_task(self._write())]
        self.began.set()

    def caller(self, data: bytes, received_at: float | None) -> None:
        if self.timeline is not None and not self.failed:
            at = received_at if received_at is not None else asyncio.get_running_loop().time()
            self.timeline.caller(data, at)

    def bot(self, data: bytes) -> None:
        if self.timeline is not None and not self.failed:
            self.timeline.bot(data, asyncio.get_running_loop().time())

    def end_response(self) -> None:
        if self.timeline is not None:
            self.timeline.end_response()

    def interrupted(self, played_ms: float) -> None:
        if self.timeline is not None:
            self.timeline.interrupt(played_ms, asyncio.get_running_loop().time())

    # -- off the loop ---------------------------------------------------------------------------------

    def _enqueue(self, block: Block) -> None:
        try:
            self.queue.put_nowait(block)
        except asyncio.QueueFull:
            self.dropped_blocks += 1  # the writer fills the gap with silence
        self.max_queued = max(self.max_queued, self.queue.qsize())

    async def _pump(self) -> None:
        loop, timeline = asyncio.get_running_loop(), self.timeline
        assert timeline is not None
        while True:
            await asyncio.sleep(self.block_s)
            self.max_buffered_bytes = max(self.max_buffered_bytes, timeline.buffered_bytes)
            block = timeline.commit(loop.time())
            if block is not None and not self.failed:
                self._enqueue(block)

    async def _write(self) -> None:
        writer = self._writer
        assert writer is not None
        try:
            await asyncio.to_thread(writer.open)
            while (block := await self.queue.get()) is not None:
                await asyncio.to_thread(writer.write, block)
                self._grew()
            await asyncio.to_thread(writer.close)
        except Exception as exc:  # a full disk or a bad block ends this recording, never the call
            self.failed = True
            self._log.warning("recording_failed", path=str(self.path), error=repr(exc))
            with contextlib.suppress(OSError):
                await asyncio.to_thread(writer.close)
        finally:
            self._grew()

    def _grew(self) -> None:
        grown, self.grown = self.grown, asyncio.Event()
        grown.set()

    async def aclose(self) -> None:
        """Commit everything heard, write it and the final sizes; bounded by CLOSE_TIMEOUT_S."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.timeline is None or not self._tasks:
                return
            pump, write = self._tasks
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            block = self.timeline.commit(asyncio.get_running_loop().time(), final=True)
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    if block is not None and not write.done():
                        await self.queue.put(block)
                    if not write.done():
                        await self.queue.put(None)
                    await write
            except TimeoutError:
                self._log.warning("recording_close_timeout", path=str(self.path))
                write.cancel()
            if self.dropped_blocks or self.timeline.bot_dropped_bytes:
                self._log.warning(
                    "recording_dropped",
                    blocks=self.dropped_blocks,
                    bot_bytes=self.timeline.bot_dropped_bytes,
                )
        finally:
            self.began.set()
            self.finished.set()
            self._grew()
            if self._on_done is not None:
                self._on_done(self)
