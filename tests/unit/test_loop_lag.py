"""The event loop's lag: a loop held up is seen by the probe, and exported as a histogram in the strict
text format next to the call metrics."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time

from bridge.session.loop_lag import probe_loop_lag
from bridge.session.metrics import CallMetrics, LoopLagMetrics
from tests.unit.test_metrics import idle, le, scrape

BLOCK_S = 0.08
INTERVAL_S = 0.01


async def test_a_loop_held_up_is_seen_as_lag_by_the_probe() -> None:
    lags: list[float] = []
    probe = asyncio.create_task(probe_loop_lag(lags.append, INTERVAL_S))
    while len(lags) < 3:
        await asyncio.sleep(INTERVAL_S)
    time.sleep(BLOCK_S)  # the point: the loop runs nothing else meanwhile
    seen = len(lags)
    while len(lags) < seen + 2:
        await asyncio.sleep(INTERVAL_S)
    probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await probe
    assert min(lags) >= 0.0
    # The timer was due at most one interval into the block: it woke at least the rest of it late.
    assert max(lags) >= BLOCK_S - INTERVAL_S
    assert lags.index(max(lags)) >= 3  # the sample taken across the block, not one before it


def test_the_lag_is_exported_as_a_histogram_beside_the_call_metrics() -> None:
    lag = LoopLagMetrics()
    for seconds in (0.0002, 0.0008, 0.004, 0.3):
        lag.tally.observe(seconds)
    types, samples = scrape(CallMetrics(idle), lag)
    assert types["bridge_event_loop_lag_seconds"] == "histogram"
    name = "bridge_event_loop_lag_seconds"
    assert samples[(f"{name}_count", ())] == 4
    assert samples[(f"{name}_bucket", le(0.0005))] == 1
    assert samples[(f"{name}_bucket", le(0.001))] == 2
    assert samples[(f"{name}_bucket", le(0.005))] == 3
    assert samples[(f"{name}_bucket", le(math.inf))] == 4  # 300 ms: past the last bound
    assert math.isclose(samples[(f"{name}_sum", ())], 0.305)
