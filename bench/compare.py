"""`--compare A,B`: the same steps against two revisions, and the ratio B / A per column.

Pure: results in, rows out. With `--repeat` > 1 each side's value is the median over its runs (the runs
alternate A, B, A, B so slow drift of the machine hits both sides alike).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.report import StepResult

# (label, how to read it from a step): what `--compare` reports, in this order.
METRICS: tuple[tuple[str, Callable[[StepResult], float | None]], ...] = (
    ("cpu%/call", lambda s: s.cpu_per_call),
    ("MB/call", lambda s: s.mb_per_call),
    ("lat p50 ms", lambda s: s.latency.p50),
    ("lat p99 ms", lambda s: s.latency.p99),
    ("up p99 ms", lambda s: s.uplink_ms.p99),
    ("down p99 ms", lambda s: s.downlink_ms.p99),
    ("loop lag p99 ms", lambda s: s.loop_lag_ms.p99),
    ("underruns", lambda s: None if s.underruns is None else float(s.underruns)),
    ("silence", lambda s: None if s.silence is None else float(s.silence)),
    ("lost", lambda s: float(s.lost)),
    ("setup p99 ms", lambda s: s.setup_ms.p99),
    ("failed", lambda s: float(s.failed)),
)


@dataclass(frozen=True, slots=True)
class CompareRow:
    calls: int
    metric: str
    a: float | None  # median over A's runs
    b: float | None
    ratio: float | None  # b / a; None when either is missing or a is 0 and b is not


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    """b / a; 1.0 when both are 0 (no change), None when undefined."""
    if a is None or b is None:
        return None
    if a == 0:
        return 1.0 if b == 0 else None
    return b / a


def compare_rows(
    runs_a: Sequence[Sequence[StepResult]], runs_b: Sequence[Sequence[StepResult]]
) -> list[CompareRow]:
    """One row per (step, metric) for the steps both sides ran, in step order."""

    def by_calls(runs: Sequence[Sequence[StepResult]]) -> dict[int, list[StepResult]]:
        out: dict[int, list[StepResult]] = {}
        for run in runs:
            for step in run:
                out.setdefault(step.calls, []).append(step)
        return out

    a_steps, b_steps = by_calls(runs_a), by_calls(runs_b)
    rows: list[CompareRow] = []
    for calls in sorted(set(a_steps) & set(b_steps)):
        for label, read in METRICS:
            a = median([read(s) for s in a_steps[calls]])
            b = median([read(s) for s in b_steps[calls]])
            rows.append(CompareRow(calls, label, a, b, ratio(a, b)))
    return rows


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value == int(value) and abs(value) >= 10 else f"{value:.3g}"


def compare_table(rows: Sequence[CompareRow], label_a: str, label_b: str) -> list[list[str]]:
    out = [["calls", "metric", label_a, label_b, "B/A"]]
    for r in rows:
        out.append(
            [str(r.calls), r.metric, _num(r.a), _num(r.b), "-" if r.ratio is None else f"{r.ratio:.2f}"]
        )
    return out
