"""The process's file-descriptor budget: raised to the hard limit at start, checked against max_calls.

Every live call holds descriptors (its media socket, its model socket, now and then a tool's HTTP
request), and a process out of descriptors fails calls in ways no log line explains well (EMFILE on
accept, on the model's connect, on the store). So `serve` raises the soft limit as far as the hard
limit allows and refuses to start with a `max_calls` the result cannot hold.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

# Measured by counting /proc/<pid>/fd of a serving daemon idle and during calls on the OpenAI relay
# (tests/integration/test_descriptor_budget.py checks these stay above what it measures): a call holds
# 2.0 (its media socket and its model socket); the rest is margin for a rotation's second model socket,
# a tool's HTTP request and the PBX's webhook connection for the next call.
DESCRIPTORS_PER_CALL = 4
# The idle daemon holds 19 (stdio, the event loop's, the listening socket, the store's files); the rest
# is margin for AMI/ARI, the AudioSocket listener, DNS lookups and HTTP API clients.
BASE_DESCRIPTORS = 64


@dataclass(frozen=True, slots=True)
class DescriptorLimit:
    before: int  # the soft limit the process was started with
    soft: int  # the soft limit now
    hard: int  # the hard limit (RLIM_INFINITY is reported as -1)


def raise_descriptor_limit() -> DescriptorLimit:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit (as far as the kernel allows)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    before = soft
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass  # e.g. an unlimited hard limit the kernel caps lower: keep what we have
    return DescriptorLimit(before, soft, hard)


def descriptors_needed(max_calls: int) -> int:
    return BASE_DESCRIPTORS + DESCRIPTORS_PER_CALL * max_calls


def calls_within(limit: int) -> int:
    """The most calls `limit` descriptors hold."""
    return max(0, (limit - BASE_DESCRIPTORS) // DESCRIPTORS_PER_CALL)


def descriptor_problem(max_calls: int, soft_limit: int) -> str | None:
    """Why `max_calls` cannot be honoured under `soft_limit` open files, or None when it can."""
    if soft_limit == resource.RLIM_INFINITY or descriptors_needed(max_calls) <= soft_limit:
        return None
    return (
        f"[server] max_calls = {max_calls} needs about {descriptors_needed(max_calls)} file descriptors "
        f"({DESCRIPTORS_PER_CALL} per call + {BASE_DESCRIPTORS}), but this process may open only "
        f"{soft_limit} (RLIMIT_NOFILE; its hard limit does not allow more). Lower max_calls to "
        f"{calls_within(soft_limit)} or less, or raise the limit (systemd: LimitNOFILE=, shell: ulimit -n)."
    )
