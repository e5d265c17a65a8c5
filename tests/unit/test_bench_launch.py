"""The load generator's call placing: the rate asked for, with call phases as unrelated as real calls'."""

from __future__ import annotations

import pytest

from bench.loadgen import LoadSpec, launch_times


def spec(calls: int, rate: float, seed: int = 1) -> LoadSpec:
    return LoadSpec(
        url="http://x", connector_key="k", called="1", calls=calls, seconds=1.0, launch_rate=rate, seed=seed
    )


def test_each_call_is_placed_inside_its_own_slot() -> None:
    times = launch_times(spec(200, 25.0), start=100.0)
    assert len(times) == 200
    for i, t in enumerate(times):
        assert 100.0 + i * 0.04 <= t < 100.0 + (i + 1) * 0.04
    assert times == sorted(times)


def test_call_phases_cover_the_whole_frame_period() -> None:
    # On an exact 40 ms cadence every call would start at phase 0 of the 20 ms frame clock.
    phases = [(t % 0.020) / 0.020 for t in launch_times(spec(400, 25.0), start=0.0)]
    quarters = [sum(1 for p in phases if q / 4 <= p < (q + 1) / 4) for q in range(4)]
    assert min(quarters) > 60, quarters  # about 100 each


def test_placing_is_seeded_and_generators_differ() -> None:
    assert launch_times(spec(10, 25.0), 0.0) == launch_times(spec(10, 25.0), 0.0)
    assert launch_times(spec(10, 25.0, seed=1), 0.0) != launch_times(spec(10, 25.0, seed=2), 0.0)


def test_rate_zero_places_every_call_at_once() -> None:
    assert launch_times(spec(3, 0.0), start=5.0) == pytest.approx([5.0, 5.0, 5.0])
