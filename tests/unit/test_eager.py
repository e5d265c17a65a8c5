"""`start_eagerly`: a coroutine runs in the caller's step until it must wait, and a task finishes it."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest

from bridge.session.eager import start_eagerly


async def _no_wait() -> None:
    return None


def _no_spawn(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    work.close()
    raise AssertionError("work that never waits needs no task")


async def test_work_that_never_waits_is_done_before_start_eagerly_returns() -> None:
    done: list[int] = []

    async def work() -> None:
        done.append(1)
        await _no_wait()  # an await that does not suspend
        done.append(2)

    assert start_eagerly(work(), _no_spawn) is None
    assert done == [1, 2]


async def test_work_that_waits_is_resumed_by_a_task_where_it_stopped() -> None:
    gate: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def work() -> None:
        steps.append("before")
        steps.append(await gate)
        await asyncio.sleep(0)  # a bare yield after the resume is passed through too
        steps.append("after")

    task = start_eagerly(work(), asyncio.ensure_future)
    assert task is not None
    assert steps == ["before"]  # the first part ran in our step
    await asyncio.sleep(0.01)
    assert steps == ["before"]
    assert not task.done()
    gate.set_result("gate")
    await asyncio.wait_for(task, 1)
    assert steps == ["before", "gate", "after"]


async def test_an_exception_before_the_first_wait_is_raised_to_the_caller() -> None:
    async def work() -> None:
        raise ValueError("at once")

    with pytest.raises(ValueError, match="at once"):
        start_eagerly(work(), asyncio.ensure_future)


async def test_an_exception_after_a_wait_ends_the_task_with_it() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def work() -> None:
        await gate
        raise ValueError("later")

    task = start_eagerly(work(), asyncio.ensure_future)
    assert task is not None
    gate.set_result(None)
    with pytest.raises(ValueError, match="later"):
        await asyncio.wait_for(task, 1)


async def test_a_failed_wait_raises_inside_the_work_where_it_waits() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    caught: list[str] = []

    async def work() -> None:
        try:
            await gate
        except KeyError as exc:
            caught.append(str(exc))

    task = start_eagerly(work(), asyncio.ensure_future)
    assert task is not None
    gate.set_exception(KeyError("socket"))
    await asyncio.wait_for(task, 1)
    assert caught == ["'socket'"]


async def test_cancelling_the_task_cancels_the_work_where_it_waits() -> None:
    gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def work() -> None:
        try:
            await gate
        finally:
            cleaned.append(True)

    task = start_eagerly(work(), asyncio.ensure_future)
    assert task is not None
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
    assert gate.cancelled()  # as a task would: the future it waited on is cancelled with it
