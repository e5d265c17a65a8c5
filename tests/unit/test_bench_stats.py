"""Benchmark arithmetic: percentiles, /proc parsing, pacing counts (bench/stats.py)."""

from __future__ import annotations

import pytest

from bench.stats import (
    Dist,
    MachineSample,
    ProcSample,
    arrival_pacing,
    cpu_percent,
    cpu_ticks_from_stat,
    machine_load,
    machine_ticks_from_proc_stat,
    max_rss_kb,
    percentile,
    rss_kb_from_status,
    tick_gaps,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_dist_of_values_and_of_nothing() -> None:
    d = Dist.of([float(x) for x in range(1, 101)])
    assert d.n == 100
    assert d.p50 == pytest.approx(50.5)
    assert d.p99 == pytest.approx(99.01)
    assert d.max == 100.0
    assert Dist.of([]).to_dict() == {"n": 0, "p50": None, "p99": None, "max": None}


def test_cpu_ticks_from_stat_with_spaces_in_the_name() -> None:
    fields = ["S", *["0"] * 10, "150", "50", *["0"] * 30]
    text = "1234 (python -m bridge) " + " ".join(fields)
    assert cpu_ticks_from_stat(text) == 200


def test_rss_from_status() -> None:
    assert rss_kb_from_status("Name:\tpython\nVmRSS:\t  70312 kB\nThreads: 3\n") == 70312
    with pytest.raises(ValueError):
        rss_kb_from_status("Name: x\n")


def test_cpu_percent_and_rss_over_a_window() -> None:
    samples = [ProcSample(0.0, 1.0, 100), ProcSample(1.0, 1.25, 300), ProcSample(2.0, 1.5, 200)]
    assert cpu_percent(samples, 0.0, 2.0) == pytest.approx(25.0)
    assert cpu_percent(samples, 1.5, 2.0) is None
    assert max_rss_kb(samples, 0.5, 2.0) == 300
    assert max_rss_kb(samples, 3.0, 4.0) is None


def test_machine_load() -> None:
    text = "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 1 2 3\n"
    assert machine_ticks_from_proc_stat(text) == (150, 40, 1000)
    samples = [MachineSample(0.0, 0, 0, 0), MachineSample(1.0, 100, 20, 200)]
    busy, steal = machine_load(samples, 0.0, 1.0, cores=2) or (0.0, 0.0)
    assert busy == pytest.approx(100.0)
    assert steal == pytest.approx(10.0)


def test_tick_gaps() -> None:
    assert tick_gaps([1, 2, 3]).gaps == 0
    gaps = tick_gaps([1, 2, 5, 6, 8])
    assert (gaps.gaps, gaps.missing) == (2, 3)


def test_arrival_pacing_even_stream_then_burst() -> None:
    even = arrival_pacing([i * 0.02 for i in range(10)], [0.02] * 10)
    assert (even.gaps, even.bursts) == (0, 0)
    assert even.max_lead_ms == pytest.approx(20.0)
    burst = arrival_pacing([0.0, 0.001, 0.002, 0.1], [0.02] * 4)
    assert burst.bursts == 1
    assert burst.gaps == 1
    assert burst.max_lead_ms == pytest.approx(58.0)
