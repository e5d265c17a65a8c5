"""Benchmark results: merging generator outputs, table/JSON/Markdown rendering, profile summaries."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench.promtext import DOWNLINK, LOOP_LAG, UPLINK, Scrape
from bench.report import (
    build_step,
    hot_functions,
    parse_collapsed,
    render_hot,
    render_markdown_table,
    render_table,
    summary_json,
    table_rows,
    verdicts,
)
from bench.stats import ProcSample


def _output(latencies: list[float], window: tuple[float, float]) -> dict[str, Any]:
    call = {
        "index": 0,
        "failure": None,
        "webhook_ms": 10.0,
        "socket_ms": 5.0,
        "first_audio_ms": 250.0,
        "xoff": 0,
        "drops": 0,
        "playout_gaps": 1,
        "matched": len(latencies),
        "lost": 0,
        "max_lead_ms": 40.0,
    }
    return {
        "window": list(window),
        "latencies_ms": latencies,
        "calls": [call, {**call, "index": 1, "failure": "setup: refused"}],
        "launched_at": 100.0,
        "loop_lag_ms": [0.1, 0.2],
        "cpu_percent": 30.0,
    }


def _step() -> Any:
    samples = [ProcSample(100.0, 10.0, 80 * 1024), ProcSample(110.0, 12.0, 90 * 1024)]
    baseline = ProcSample(99.0, 9.0, 70 * 1024)
    outputs = [_output([1.0, 2.0, 3.0], (100.0, 110.0)), _output([4.0], (99.0, 111.0))]
    return build_step(4, outputs, samples, baseline)


def test_build_step_merges_generators() -> None:
    step = _step()
    assert step.calls == 4
    assert step.failed == 2
    assert step.failure_kinds == {"setup": 2}
    assert step.window_s == 10.0  # the intersection of the generators' windows
    assert step.bridge_cpu_percent == 20.0
    assert step.cpu_per_call == 10.0  # 20 % over the 2 calls that ran
    assert step.mb_per_call == 10.0  # (90 - 70) MB / 2 calls
    assert step.latency.n == 4
    assert step.latency.max == 4.0
    assert step.playout_gaps == 4
    assert step.generator_cpu_percent == 60.0
    assert step.setup_ms.p50 == 15.0


def test_table_json_and_markdown_render() -> None:
    step = _step()
    table = render_table([step])
    assert table.splitlines()[0].split()[0] == "calls"
    assert len(table.splitlines()) == 3
    md = render_markdown_table([step])
    assert md.count("\n") == 2
    assert md.startswith("| calls |")
    line = summary_json({"transport": "chan_websocket"}, [step])
    assert "\n" not in line
    data = json.loads(line)
    assert data["steps"][0]["latency"]["max"] == 4.0
    assert any("CPU 10.000%/call >" in v for v in verdicts(step))


def test_collapsed_stacks_to_hot_functions() -> None:
    text = "main;loop;send 30\nmain;loop;recv 50\nmain;loop 20\n\nbad line\n"
    stacks = parse_collapsed(text.splitlines())
    assert len(stacks) == 3
    hot = hot_functions(stacks)
    assert [f.name for f in hot[:3]] == ["recv", "send", "loop"]
    assert hot[0].self_share == 0.5
    assert next(f for f in hot if f.name == "loop").total_share == 1.0
    assert "| 50.0 | 50.0 | `recv` |" in render_hot(hot)
    assert hot_functions([]) == []


def _histogram(name: str, counts: tuple[int, int, int]) -> str:
    bounds = ("0.001", "0.005", "+Inf")
    lines = [f'{name}_bucket{{le="{b}"}} {c}.0' for b, c in zip(bounds, counts, strict=True)]
    return "\n".join([*lines, f"{name}_count {counts[-1]}.0", f"{name}_sum 0.1"]) + "\n"


def test_build_step_with_underruns_and_bridge_histograms() -> None:
    out = _output([1.0], (100.0, 110.0))
    out["calls"][0].update(underruns=2, silence=7, underruns_in_reply=3)
    # the second call (failed) reports none: sums are over the calls that report them
    scrapes = [
        Scrape(99.0, 99.1, _histogram(UPLINK, (0, 0, 0))),  # before the window
        Scrape(
            101.0,
            101.1,
            _histogram(UPLINK, (10, 10, 10))
            + _histogram(DOWNLINK, (0, 0, 0))
            + _histogram(LOOP_LAG, (1, 1, 1)),
        ),
        Scrape(
            109.0,
            109.1,
            _histogram(UPLINK, (110, 210, 210))
            + _histogram(DOWNLINK, (0, 50, 100))
            + _histogram(LOOP_LAG, (100, 100, 100)),
        ),
    ]
    step = build_step(2, [out], [], None, scrapes=scrapes)
    assert (step.underruns, step.silence, step.underruns_in_reply) == (2, 7, 3)
    assert step.uplink_ms.n == 200
    assert step.uplink_ms.p50 == pytest.approx(1.0)  # rank 100 of 200: the top of the first bucket
    assert step.downlink_ms.p99 == pytest.approx(5.0)  # in the +Inf bucket: the highest finite bound
    header, row = table_rows([step])
    cells = dict(zip(header, row, strict=True))
    assert (cells["underruns"], cells["silence"]) == ("2", "7")
    assert cells["up p50/p99"] == "1.00/4.92"  # rank 198: 98 of the 100 in (1, 5] ms
    assert cells["down p50/p99"] == "5.00/5.00"  # rank 50 tops (1, 5] ms; rank 99 is in +Inf
    assert step.loop_lag_ms.n == 99
    assert cells["loop lag p99"] == "0.99"  # rank 98.01 of the 99 in (0, 1] ms
    assert any(v.startswith("2 underrun ticks, 7 silent ticks") for v in verdicts(step))
    assert any(v.startswith("downlink p99 5.00 ms") for v in verdicts(step))
    data = json.loads(summary_json({}, [step]))
    assert data["steps"][0]["uplink_ms"]["n"] == 200
    assert data["steps"][0]["burst"]["placed"] == 2


def test_missing_underruns_and_histograms_show_a_dash() -> None:
    step = _step()  # generator outputs without underruns; no scrapes (an older bridge, or none taken)
    header, row = table_rows([step])
    cells = dict(zip(header, row, strict=True))
    assert step.underruns is None
    assert (cells["underruns"], cells["silence"], cells["up p50/p99"], cells["down p50/p99"]) == ("-",) * 4
