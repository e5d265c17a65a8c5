"""The event loop's lag, sampled for `bridge_event_loop_lag_seconds` (session/metrics.py).

A timer sleeps `interval` and notes how much later than that it woke: the time the loop spent on other
work first, which every socket's data waits on top of what the latency histograms see. Read from
`time.monotonic()`: uvloop's `loop.time()` is the start of the loop's iteration in whole milliseconds,
and libuv's timers count whole milliseconds too, so an idle loop reads 0-1 ms.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

PROBE_INTERVAL_S: Final = 0.05  # 20 samples a second: a p99 per minute of 1,200, no load worth naming


async def probe_loop_lag(observe: Callable[[float], None], interval: float = PROBE_INTERVAL_S) -> None:
    """Observe the loop's lag every `interval` seconds, until cancelled."""
    clock = time.monotonic
    while True:
        due = clock() + interval
        await asyncio.sleep(interval)
        observe(max(0.0, clock() - due))
