"""Call metrics: histogram semantics, label escaping, and exposition text a strict parser accepts."""

from __future__ import annotations

import math
import re

import pytest

from bridge.session.metrics import (
    LATENCY_BUCKETS_S,
    CallMetrics,
    CallOutcome,
    Histogram,
    escape_label_value,
    labelled,
)

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({METRIC_NAME})(?:\{{({LABEL}(?:,{LABEL})*)\}})? (\S+)$")
COMMENT = re.compile(rf"^# (HELP|TYPE) ({METRIC_NAME}) (.+)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def parse_exposition(lines: list[str]) -> tuple[dict[str, str], Samples]:
    """A strict reader of the text format: every sample belongs to a family declared just before it."""
    types: dict[str, str] = {}
    samples: Samples = {}
    current: str | None = None
    for line in lines:
        if comment := COMMENT.match(line):
            kind, name, rest = comment.groups()
            if kind == "TYPE":
                assert rest in TYPES, line
                assert name not in types, f"family {name} declared twice"
                types[name] = rest
                current = name
            continue
        sample = SAMPLE.match(line)
        assert sample is not None, f"not a valid sample line: {line!r}"
        name, label_text, value = sample.groups()
        assert current is not None
        family_names = {current}
        if types[current] == "histogram":
            family_names = {f"{current}_bucket", f"{current}_sum", f"{current}_count"}
        assert name in family_names, f"{name} outside its family {current}"
        labels = tuple(
            (key, unescape(raw))
            for key, raw in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', label_text or "")
        )
        key = (name, labels)
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(value)
    return types, samples


def test_a_value_on_a_bound_falls_in_that_bucket_and_counts_are_cumulative() -> None:
    histogram = Histogram((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 2.0, 2.5, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [(1.0, 2), (2.0, 3), (5.0, 4), (math.inf, 5)]
    assert histogram.count == 5
    assert histogram.sum == pytest.approx(13.0)


def test_histogram_render_has_buckets_sum_and_count() -> None:
    histogram = Histogram((0.5, 1.0))
    histogram.observe(0.25)
    histogram.observe(3.0)
    assert histogram.render("x_seconds", "An example.") == [
        "# HELP x_seconds An example.",
        "# TYPE x_seconds histogram",
        'x_seconds_bucket{le="0.5"} 1',
        'x_seconds_bucket{le="1.0"} 1',
        'x_seconds_bucket{le="+Inf"} 2',
        "x_seconds_sum 3.25",
        "x_seconds_count 2",
    ]


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError, match="increasing"):
        Histogram((1.0, 1.0))


def test_label_values_are_escaped() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    assert labelled("m", {"reason": 'x"y'}) == 'm{reason="x\\"y"}'
    sample = labelled("m", {"r": 'a\\b"c\nd'})
    _, samples = parse_exposition(["# TYPE m counter", f"{sample} 1"])
    assert samples == {("m", (("r", 'a\\b"c\nd'),)): 1.0}


def test_empty_metrics_render_valid_exposition() -> None:
    types, samples = parse_exposition(CallMetrics().render())
    assert types["bridge_calls_finished_total"] == "counter"
    assert types["bridge_first_audio_seconds"] == "histogram"
    assert samples[("bridge_media_frames_total", (("direction", "in"),))] == 0
    assert samples[("bridge_first_audio_seconds_bucket", (("le", "+Inf"),))] == 0
    assert samples[("bridge_call_duration_seconds_count", ())] == 0


def test_calls_are_counted_per_status_and_reason_and_media_is_summed() -> None:
    metrics = CallMetrics()
    metrics.record(
        CallOutcome(
            "ended",
            "caller",
            frames_in=100,
            frames_out=80,
            drops=1,
            barge_ins=2,
            model_reconnects=1,
            duration_s=42.0,
            first_audio_s=0.4,
            response_latencies_s=(0.6, 1.2),
        )
    )
    metrics.record(
        CallOutcome("ended", "caller", frames_in=10, frames_out=5, protocol_errors=3, duration_s=3.0)
    )
    metrics.record(CallOutcome("failed", "media_timeout"))  # a pending call: no media, no duration
    _, samples = parse_exposition(metrics.render())
    assert samples[("bridge_calls_finished_total", (("status", "ended"), ("reason", "caller")))] == 2
    assert samples[("bridge_calls_finished_total", (("status", "failed"), ("reason", "media_timeout")))] == 1
    assert samples[("bridge_media_frames_total", (("direction", "in"),))] == 110
    assert samples[("bridge_media_frames_total", (("direction", "out"),))] == 85
    assert samples[("bridge_media_drops_total", ())] == 1
    assert samples[("bridge_media_protocol_errors_total", ())] == 3
    assert samples[("bridge_barge_ins_total", ())] == 2
    assert samples[("bridge_model_reconnects_total", ())] == 1
    assert samples[("bridge_call_duration_seconds_count", ())] == 2
    assert samples[("bridge_call_duration_seconds_bucket", (("le", "5.0"),))] == 1
    assert samples[("bridge_call_duration_seconds_bucket", (("le", "60.0"),))] == 2
    assert samples[("bridge_first_audio_seconds_count", ())] == 1
    assert samples[("bridge_first_audio_seconds_bucket", (("le", "0.3"),))] == 0
    assert samples[("bridge_first_audio_seconds_bucket", (("le", "0.5"),))] == 1
    assert samples[("bridge_response_latency_seconds_count", ())] == 2
    assert samples[("bridge_response_latency_seconds_sum", ())] == pytest.approx(1.8)
    assert samples[("bridge_response_latency_seconds_bucket", (("le", "1.0"),))] == 1
    buckets = [
        samples[("bridge_response_latency_seconds_bucket", (("le", str(b)),))] for b in LATENCY_BUCKETS_S
    ]
    assert buckets == sorted(buckets), "buckets are cumulative"
