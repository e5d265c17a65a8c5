"""Setup statistics of a burst against Asterisk's 500 ms line (bench/burst.py) and their table."""

from __future__ import annotations

from typing import Any

import pytest

from bench.burst import burst_stats, failure_kind, is_late
from bench.report import build_step, burst_rows, render_rows


def _call(i: int, webhook: float | None, upgrade: float | None, failure: str | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"index": i, "failure": failure, "launched": 100.0 + i * 0.01}
    if webhook is not None:
        rec["webhook_ms"] = webhook
    if upgrade is not None:
        rec["upgrade_ms"] = upgrade
    return rec


def test_failure_kind_and_lateness() -> None:
    assert failure_kind("upgrade_timeout: media socket upgrade not completed") == "upgrade_timeout"
    assert failure_kind("errors") == "errors"
    assert is_late(_call(0, 5.0, 501.0), 500.0)
    assert not is_late(_call(0, 5.0, 500.0), 500.0)  # on the line is in time
    assert is_late(_call(0, 5.0, 499.0, "upgrade_timeout: x"), 500.0)  # timed out, whatever was measured
    assert not is_late(_call(0, 5.0, None, "webhook: HTTP 503"), 500.0)


def test_burst_stats_counts_late_upgrades_as_failed() -> None:
    records = [
        _call(0, 10.0, 20.0),
        _call(1, 30.0, 40.0),
        _call(2, 12.0, 600.0),  # completed, but after Asterisk gave up
        _call(3, 15.0, 500.2, "upgrade_timeout: not completed within 0.5 s"),
        _call(4, 2000.0, None, "webhook: TimeoutError"),
        _call(5, 11.0, 30.0, "errors: partial_frame_dropped x1"),  # set up fine, failed later
    ]
    b = burst_stats(records, 500.0)
    assert b.placed == 6
    assert b.late == 2
    assert b.failed == 4  # two late, the webhook failure, the call with errors
    assert b.spread_ms == pytest.approx(50.0)
    assert b.webhook_ms.n == 6
    assert b.upgrade_ms.n == 3  # the late ones are not in the percentiles: they are failures
    assert b.upgrade_ms.max == 40.0
    assert b.setup_ms.n == 3
    assert b.setup_ms.p50 == pytest.approx(41.0)  # 10 + 20, 30 + 40, 11 + 30 -> 30, 70, 41
    assert b.to_dict()["upgrade_ms"]["max"] == 40.0


def test_burst_stats_of_nothing() -> None:
    b = burst_stats([], 500.0)
    assert (b.placed, b.failed, b.late, b.spread_ms) == (0, 0, 0, None)
    assert b.setup_ms.p99 is None


def test_burst_table_from_a_step() -> None:
    output = {
        "window": [100.0, 110.0],
        "latencies_ms": [],
        "calls": [_call(0, 10.0, 20.0), _call(1, 12.0, 700.0)],
        "launched_at": 100.0,
        "loop_lag_ms": [],
        "burst_lag_ms": [0.5, 3.0],
        "cpu_percent": None,
    }
    step = build_step(2, [output], [], None, line_ms=500.0)
    assert step.burst is not None
    assert step.burst.late == 1
    assert step.burst_lag_ms.max == 3.0
    rows = burst_rows([step])
    assert rows[0][:3] == ["calls", "fail", "late"]
    assert rows[1][:3] == ["2", "1", "1"]
    assert rows[1][5] == "20.0/20.0"  # upgrade p50/p99 of the one call in time
    table = render_rows(rows)
    assert len(table.splitlines()) == 3
