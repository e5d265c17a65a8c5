"""What the worker supervisor decides when a worker exits: pure functions, no clocks and no I/O.

A worker that dies is restarted after a delay that doubles with each quick exit in a row, so a crash
loop costs little CPU; one that keeps exiting right after it starts (a port it cannot bind, a store it
cannot open) will not recover by itself, and the supervisor gives up with an error instead of looping.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

# `bridge serve` exits 2 when it refuses its configuration (e.g. max_calls above the descriptor limit):
# every restart would refuse it again.
CONFIG_REFUSED = 2
# How a worker ends when the supervisor stops it: its own drain (0) or the signal before its handler.
CLEAN_STOPS = frozenset({0, -signal.SIGTERM, -signal.SIGINT})


@dataclass(frozen=True)
class RestartPolicy:
    first_delay: float = 0.5
    max_delay: float = 30.0
    stable_seconds: float = 30.0  # a worker that ran this long had recovered: its count starts again
    max_failures: int = 5  # quick exits in a row of one worker before the supervisor gives up

    def delay(self, failures: int) -> float:
        """The wait before the restart that follows the `failures`-th quick exit in a row."""
        return min(self.max_delay, self.first_delay * 2.0 ** max(0, failures - 1))


@dataclass(frozen=True)
class Restart:
    delay: float
    failures: int  # quick exits in a row so far, carried to the next decision


@dataclass(frozen=True)
class GiveUp:
    reason: str
    exit_code: int


def after_exit(
    policy: RestartPolicy, *, failures: int, ran_seconds: float, was_ready: bool, returncode: int
) -> Restart | GiveUp:
    """The decision for a worker that exited while the supervisor was not stopping."""
    if returncode == CONFIG_REFUSED and not was_ready:
        return GiveUp("a worker refused its configuration (exit status 2)", CONFIG_REFUSED)
    failures = failures + 1 if ran_seconds < policy.stable_seconds else 1
    if failures >= policy.max_failures:
        return GiveUp(
            f"a worker exited {failures} times in a row within {policy.stable_seconds:g} s of starting", 1
        )
    return Restart(policy.delay(failures), failures)


def stop_status(returncodes: list[int]) -> int:
    """The supervisor's exit status after a requested stop: 0 when every worker stopped cleanly."""
    return 0 if all(code in CLEAN_STOPS for code in returncodes) else 1


def describe_exit(returncode: int) -> str:
    """`exit status 3` or `signal SIGKILL`, as an operator reads it."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def node_id_for(node_id: str, index: int) -> str:
    """Worker `index` (1-based) is its own node of the fleet."""
    return f"{node_id}-{index}"


def parse_notification(datagram: bytes) -> dict[str, str]:
    """An sd_notify datagram (`READY=1\\nSTATUS=...`) as its fields; malformed lines are ignored."""
    fields: dict[str, str] = {}
    for line in datagram.decode("utf-8", "replace").splitlines():
        name, sep, value = line.partition("=")
        if sep:
            fields[name] = value
    return fields
