"""Request rate limits shared by a fleet: the same token buckets as bridge/companies/ratelimit.py, kept in
Redis so a key's "1000 a minute" holds across every node it is spread over.

Each bucket is a hash {tokens, ts} refilled and taken in one Lua script on Redis's own clock (nodes'
clocks never disagree about it), expiring once it would be full again. When Redis cannot answer within
`timeout_seconds`, `hit`/`peek` return None and the caller counts on its own node's buckets instead:
a Redis outage weakens the limit to per node, it never refuses or delays every request.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from typing import Final

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from bridge.companies.ratelimit import WINDOW_SECONDS, Verdict, verdict_for
from bridge.logging import get_logger

# ARGV: limit, window in ms, cost, take (1) or peek (0). Returns {allowed, tokens as text}.
BUCKET: Final = """
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local capacity = math.max(limit, 0)
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil or ts == nil then
  tokens = capacity
else
  tokens = math.min(capacity, tokens + math.max(0, now - ts) * capacity / window_ms)
end
local allowed = 0
if ARGV[4] == '1' then
  if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
  end
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', KEYS[1], window_ms)
elseif tokens >= 1 then
  allowed = 1
end
return {allowed, tostring(tokens)}
"""

OUTAGE_LOG_SECONDS: Final = 60.0  # one warning a minute while Redis is away, not one per request


def bucket_name(bucket_id: Hashable) -> str:
    """A bucket id (a tuple of its kind and a key digest or an address) as a Redis key suffix."""
    parts = bucket_id if isinstance(bucket_id, tuple) else (bucket_id,)
    return ":".join(part.hex() if isinstance(part, bytes) else str(part) for part in parts)


class RedisRateLimits:
    def __init__(
        self,
        redis_url: str,
        *,
        prefix: str = "bridge",
        window_seconds: float = WINDOW_SECONDS,
        timeout_seconds: float = 0.25,
    ) -> None:
        self.window = window_seconds
        self._prefix = prefix
        pool = BlockingConnectionPool.from_url(
            redis_url,
            max_connections=16,
            timeout=timeout_seconds,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            decode_responses=True,
        )
        self._redis: Redis = Redis.from_pool(pool)  # owns the pool: aclose() closes its connections
        self._script = self._redis.register_script(BUCKET)
        self._warned_at = float("-inf")
        self._log = get_logger("rate_limits")

    async def hit(self, bucket_id: Hashable, limit: int, cost: float = 1.0) -> Verdict | None:
        """Take `cost` tokens if the bucket has them; None when Redis does not answer."""
        return await self._run(bucket_id, limit, cost, take=True)

    async def peek(self, bucket_id: Hashable, limit: int) -> Verdict | None:
        """The bucket's state without taking a token; None when Redis does not answer."""
        return await self._run(bucket_id, limit, 1.0, take=False)

    async def _run(self, bucket_id: Hashable, limit: int, cost: float, *, take: bool) -> Verdict | None:
        key = f"{self._prefix}:rl:{bucket_name(bucket_id)}"
        args = [max(limit, 0), max(1, round(self.window * 1000)), cost, "1" if take else "0"]
        try:
            allowed, tokens = await self._script(keys=[key], args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            now = time.monotonic()
            if now - self._warned_at > OUTAGE_LOG_SECONDS:
                self._warned_at = now
                self._log.warning("shared_rate_limits_unavailable", error=type(exc).__name__)
            return None
        return verdict_for(float(tokens), limit, self.window, bool(int(allowed)))

    async def close(self) -> None:
        await self._redis.aclose()
