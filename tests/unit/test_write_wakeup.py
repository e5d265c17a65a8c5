"""The chan_websocket write loop's sleep: until a time, or until kicked."""

from __future__ import annotations

import asyncio

import pytest

from bridge.asterisk.media_ws import Wakeup


async def test_a_kick_before_the_sleep_returns_at_once() -> None:
    loop = asyncio.get_running_loop()
    wakeup = Wakeup(loop)
    wakeup.kick()
    await asyncio.wait_for(wakeup.sleep(None), 0.1)
    wakeup.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(wakeup.sleep(None), 0.05)  # cleared: only a new kick wakes it


async def test_sleep_until_a_time_and_a_kick_wakes_it_early() -> None:
    loop = asyncio.get_running_loop()
    wakeup = Wakeup(loop)
    start = loop.time()
    await wakeup.sleep(start + 0.05)
    assert loop.time() - start >= 0.05 - 0.002
    wakeup.clear()
    sleeping = asyncio.ensure_future(wakeup.sleep(loop.time() + 10))
    await asyncio.sleep(0.01)
    assert not sleeping.done()
    wakeup.kick()
    await asyncio.wait_for(sleeping, 0.1)


async def test_after_a_cancelled_sleep_the_next_one_is_woken_normally() -> None:
    loop = asyncio.get_running_loop()
    wakeup = Wakeup(loop)
    sleeping = asyncio.ensure_future(wakeup.sleep(loop.time() + 0.02))
    await asyncio.sleep(0)
    sleeping.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeping
    again = asyncio.ensure_future(wakeup.sleep(None))
    await asyncio.sleep(0.04)  # past the cancelled sleep's time: its timer must not wake this one
    assert not again.done()
    wakeup.kick()
    await asyncio.wait_for(again, 0.1)
