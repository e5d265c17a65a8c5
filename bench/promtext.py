"""Histograms read from the Prometheus text exposition format, and quantiles of what was observed between
two scrapes, computed as Prometheus' `histogram_quantile` does (linear interpolation inside a bucket).

Pure: the scraper (bench.daemon.MetricsScraper) hands text in. A histogram with extra labels (say, per
transport) is summed over them, as `histogram_quantile(q, sum by (le) (rate(...)))` would.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bench.stats import Dist

UPLINK = "bridge_uplink_latency_seconds"
DOWNLINK = "bridge_downlink_latency_seconds"
LOOP_LAG = "bridge_event_loop_lag_seconds"

# name, optional {labels} (values may hold '}' or escaped quotes), value; an optional timestamp follows.
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')
_LE = re.compile(r'(?:^|[{,\s])le="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts by upper bound (ascending, the last +Inf), plus `_sum` and `_count`."""

    bounds: tuple[float, ...]
    counts: tuple[float, ...]
    sum: float
    count: float


def _value(text: str) -> float:
    return float(text.replace("Inf", "inf"))  # "+Inf" / "-Inf" as Prometheus writes them


def parse_histogram(text: str, name: str) -> Histogram | None:
    """The histogram `name` in an exposition, or None if it is absent or has no +Inf bucket."""
    buckets: dict[float, float] = {}
    total_sum = total_count = 0.0
    seen = False
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        series, labels, raw = match.groups()
        try:
            value = _value(raw)
        except ValueError:
            continue
        if series == name + "_bucket":
            le = _LE.search(labels or "")
            if le is None:
                continue
            try:
                bound = _value(le.group(1))
            except ValueError:
                continue
            buckets[bound] = buckets.get(bound, 0.0) + value
            seen = True
        elif series == name + "_sum":
            total_sum += value
        elif series == name + "_count":
            total_count += value
    if not seen or math.inf not in buckets:
        return None
    bounds = tuple(sorted(buckets))
    return Histogram(bounds, tuple(buckets[b] for b in bounds), total_sum, total_count)


def delta(before: Histogram, after: Histogram) -> Histogram | None:
    """What was observed between two scrapes; None if the buckets differ or a counter went back (restart)."""
    if before.bounds != after.bounds:
        return None
    counts = tuple(b - a for a, b in zip(before.counts, after.counts, strict=True))
    if any(c < 0 for c in counts) or after.count < before.count:
        return None
    return Histogram(after.bounds, counts, after.sum - before.sum, after.count - before.count)


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float | None:
    """Prometheus' algorithm (promql/quantile.go): find the bucket holding rank q * total and interpolate
    linearly between its lower and upper bound; the lowest bucket starts at 0 (if its bound is positive);
    a rank in the +Inf bucket returns the highest finite bound. None where Prometheus returns NaN."""
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within 0..1")
    if len(bounds) < 2 or bounds[-1] != math.inf or len(counts) != len(bounds):
        return None
    cumulative = list(counts)
    for i in range(1, len(cumulative)):  # as Prometheus does, repair non-monotonic counts
        cumulative[i] = max(cumulative[i], cumulative[i - 1])
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    b = next(i for i, c in enumerate(cumulative) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, end, count = 0.0, bounds[b], cumulative[b]
    if b > 0:
        start = bounds[b - 1]
        count -= cumulative[b - 1]
        rank -= cumulative[b - 1]
    return start + (end - start) * (rank / count)


def observed_ms(histogram: Histogram | None) -> Dist:
    """p50 / p99 in ms of a (delta) histogram; no max (a histogram does not keep it)."""
    if histogram is None or histogram.count <= 0:
        return Dist(0, None, None, None)

    def ms(q: float) -> float | None:
        value = histogram_quantile(q, histogram.bounds, histogram.counts)
        return None if value is None else value * 1000

    return Dist(round(histogram.count), ms(0.50), ms(0.99), None)


@dataclass(frozen=True, slots=True)
class Scrape:
    """One GET /metrics: monotonic time the request started and the response ended, and the body."""

    started: float
    ended: float
    text: str


def window_latency(scrapes: Sequence[Scrape], start: float, end: float, name: str) -> Dist:
    """Quantiles of `name` observed between the first scrape begun at or after `start` and the last one
    finished by `end` (the steady window); empty when there are not two such scrapes or no such metric."""
    inside = [s for s in scrapes if s.started >= start and s.ended <= end]
    if len(inside) < 2:
        return Dist(0, None, None, None)
    first = parse_histogram(inside[0].text, name)
    last = parse_histogram(inside[-1].text, name)
    if first is None or last is None:
        return Dist(0, None, None, None)
    return observed_ms(delta(first, last))
