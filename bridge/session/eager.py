"""Run a coroutine in the caller's own step until it first has to wait (Python 3.12's eager tasks, on 3.11).

A caller frame is sent to the model 50 times a second per call, and almost every send finishes without
waiting (the socket takes the bytes). Queueing each one for another task costs a wake-up and a loop
iteration per frame, in CPU and in latency; starting it eagerly costs neither. Only a send that must
wait (the socket's buffer is full) becomes a task, which resumes the same coroutine where it stopped.

The eager part runs inside the caller's task: work started this way must not use `asyncio.timeout()` or
`asyncio.current_task()` (they would see the caller's task, and a timeout would cancel it).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any


def start_eagerly(
    work: Coroutine[Any, None, None], spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
) -> asyncio.Task[None] | None:
    """Step `work` now. None: it finished (or raised, and then the exception is raised here). Otherwise
    it is waiting on something: `spawn` (e.g. a task group's `create_task`) gets a coroutine that
    resumes it exactly where it waits, and its result (the task) is returned."""
    try:
        waiting_on = work.send(None)
    except StopIteration:
        return None
    return spawn(_resume(work, waiting_on))


async def _resume(work: Coroutine[Any, None, None], waiting_on: Any) -> None:
    await _delegate(work, waiting_on)


@types.coroutine
def _delegate(work: Coroutine[Any, None, None], waiting_on: Any) -> Generator[Any, Any, None]:
    """`yield from work` for a coroutine already started: the running task first sees what `work` yielded
    (the future it waits on, still marked blocking), then everything is passed through both ways."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # a cancel (or a close) reaches the coroutine where it waits
            try:
                waiting_on = work.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting_on = work.send(sent)
            except StopIteration:
                return
