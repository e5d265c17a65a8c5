"""Running a fake model as its own process, for the benchmark: as light as the harness can make it.

The benchmark measures the bridge; a fake that stalls (a full garbage collection over everything its
connections keep: 80-214 ms at 200 calls, measured) delays the model's audio, and the caller's queue
runs dry for reasons of the harness's own. So: no cyclic GC while serving (a bounded run's cycles are
few; the process exits), and uvloop when it is installed, as the bridge runs.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_fake(serve: Coroutine[Any, Any, T]) -> T:
    gc.freeze()
    gc.disable()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve)
