"""File-descriptor limits: hundreds of calls need more sockets than the default soft limit of 1024."""

from __future__ import annotations

import resource

# Sockets per call, with room: the generator holds a media socket and, briefly, a webhook connection;
# the bridge the same plus one model socket (openai-fake), and the fake model one per call.
FDS_PER_CALL = 3
FDS_SPARE = 64


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (children inherit it); returns the (soft, hard) now set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, hard
        soft = target
    return soft, hard


def fds_needed(calls: int) -> int:
    return calls * FDS_PER_CALL + FDS_SPARE
