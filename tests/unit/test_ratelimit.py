"""companies/ratelimit.py: token buckets per id, with a manual clock (no sleeping, no timing)."""

from __future__ import annotations

import pytest

from bridge.companies.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_up_to_the_limit_then_refusal_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    verdicts = [limiter.hit("k", 3) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert all(v.limit == 3 for v in verdicts)
    refused = verdicts[-1]
    assert refused.retry_after_seconds == 20  # 3 a minute: one token every 20 s
    assert refused.reset_seconds == 60  # empty: a whole window to be full again
    clock.now += 20
    assert limiter.hit("k", 3).allowed
    assert not limiter.hit("k", 3).allowed


def test_buckets_are_independent() -> None:
    limiter = RateLimiter(clock=Clock())
    for _ in range(2):
        limiter.hit("a", 2)
    assert not limiter.hit("a", 2).allowed
    assert limiter.hit("b", 2).allowed


def test_peek_takes_nothing() -> None:
    limiter = RateLimiter(clock=Clock())
    assert limiter.peek("a", 1).allowed
    assert limiter.peek("a", 1).allowed
    limiter.hit("a", 1)
    seen = limiter.peek("a", 1)
    assert (seen.allowed, seen.remaining, seen.retry_after_seconds) == (False, 0, 60)


def test_idle_buckets_are_evicted_after_a_window() -> None:
    clock = Clock()
    limiter = RateLimiter(clock=clock)
    for name in ("a", "b", "c"):
        limiter.hit(name, 10)
    assert len(limiter) == 3
    clock.now += 30
    limiter.hit("c", 10)
    clock.now += 31  # a and b idle for 61 s: full again, the same as absent
    limiter.hit("d", 10)
    assert len(limiter) == 2


def test_the_bucket_count_is_capped() -> None:
    limiter = RateLimiter(clock=Clock(), max_buckets=100)
    for index in range(1000):
        limiter.hit(index, 5)
    assert len(limiter) == 100


def test_a_lowered_limit_applies_at_once() -> None:
    limiter = RateLimiter(clock=Clock())
    limiter.hit("k", 100)
    assert limiter.hit("k", 2).remaining == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        RateLimiter(window_seconds=0)
