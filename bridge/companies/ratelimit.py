"""Request rate limits: token buckets keyed by an opaque id (an API key's digest, a client address).

Pure and synchronous (called on the event loop, never blocks). A bucket holds `limit` tokens and refills
at `limit` per `window` seconds, so "1000 a minute" allows a burst of 1000 and then 1000/60 a second.
Each bucket is two floats; a bucket untouched for a whole window has refilled completely and is the same
as no bucket, so idle buckets are evicted (oldest first, amortised O(1)) and memory stays bounded by the
ids seen in the last window, with a hard cap against a flood of fresh ids.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final, Protocol

WINDOW_SECONDS: Final = 60.0
MAX_BUCKETS: Final = 100_000


@dataclass(frozen=True, slots=True)
class Verdict:
    """One bucket's state after a request: what the X-RateLimit-* headers and Retry-After say."""

    allowed: bool
    limit: int
    remaining: int  # whole requests left now
    reset_seconds: int  # until the bucket is full again (X-RateLimit-Reset)
    retry_after_seconds: int  # until one more request is allowed (0 when allowed)


class SharedBuckets(Protocol):
    """Buckets a fleet shares (bridge/cluster/redis_limits.py): None when they cannot be asked now, and
    the node's own RateLimiter answers instead."""

    async def hit(self, bucket_id: Hashable, limit: int, cost: float = 1.0) -> Verdict | None: ...

    async def peek(self, bucket_id: Hashable, limit: int) -> Verdict | None: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    touched: float  # monotonic seconds of the last refill


class RateLimiter:
    def __init__(
        self,
        *,
        window_seconds: float = WINDOW_SECONDS,
        max_buckets: int = MAX_BUCKETS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0 or max_buckets < 1:
            raise ValueError("window_seconds and max_buckets must be positive")
        self.window = window_seconds
        self.max_buckets = max_buckets
        self.clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()  # least recently touched first

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, bucket_id: Hashable, limit: int, cost: float = 1.0) -> Verdict:
        """Take `cost` tokens from the bucket if it has them; the verdict says whether it had."""
        bucket = self._refilled(bucket_id, limit)
        allowed = bucket.tokens >= cost
        if allowed:
            bucket.tokens -= cost
        return self._verdict(bucket, limit, allowed)

    def peek(self, bucket_id: Hashable, limit: int) -> Verdict:
        """The bucket's state without taking a token: `allowed` when at least one is left."""
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            return Verdict(True, max(limit, 0), max(limit, 0), 0, 0)
        bucket = self._refilled(bucket_id, limit)
        return self._verdict(bucket, limit, bucket.tokens >= 1.0)

    def _refilled(self, bucket_id: Hashable, limit: int) -> _Bucket:
        now = self.clock()
        self._evict(now)
        capacity = float(max(limit, 0))
        bucket = self._buckets.get(bucket_id)
        if bucket is None:
            bucket = _Bucket(capacity, now)
            self._buckets[bucket_id] = bucket
            if len(self._buckets) > self.max_buckets:  # a flood of fresh ids: forget the stalest
                self._buckets.popitem(last=False)
        else:
            elapsed = max(0.0, now - bucket.touched)
            # min(): a limit lowered by a reload takes effect at once.
            bucket.tokens = min(capacity, bucket.tokens + elapsed * self._rate(limit))
            bucket.touched = now
            self._buckets.move_to_end(bucket_id)
        return bucket

    def _evict(self, now: float) -> None:
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if now - oldest.touched < self.window:
                return
            self._buckets.popitem(last=False)

    def _rate(self, limit: int) -> float:
        return max(limit, 0) / self.window

    def _verdict(self, bucket: _Bucket, limit: int, allowed: bool) -> Verdict:
        return verdict_for(bucket.tokens, limit, self.window, allowed)


def verdict_for(tokens: float, limit: int, window_seconds: float, allowed: bool) -> Verdict:
    """The headers' view of a bucket holding `tokens` of `limit` (refilling over `window_seconds`);
    shared with the fleet's buckets in Redis (bridge/cluster/redis_limits.py)."""
    rate = max(limit, 0) / window_seconds
    if rate <= 0:  # a limit of 0 refuses everything, for a whole window
        window = math.ceil(window_seconds)
        return Verdict(allowed, 0, 0, window, 0 if allowed else window)
    missing = max(0.0, limit - tokens)
    reset = math.ceil(missing / rate - 1e-9)
    retry = 0 if allowed else max(1, math.ceil((1.0 - tokens) / rate - 1e-9))
    return Verdict(allowed, limit, math.floor(tokens + 1e-9), reset, retry)
