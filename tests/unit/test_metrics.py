"""Call metrics through prometheus-client: the names and labels stay, histograms bucket as Prometheus
says, live latency tallies are merged at scrape time, and the text is one a strict parser accepts."""

from __future__ import annotations

import math
import re

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from bridge.session.metrics import (
    LATENCY_BUCKETS_S,
    TRANSIT_BUCKETS_S,
    CallMetrics,
    CallOutcome,
    LiveCalls,
    TransitTally,
    label_reason,
)

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({METRIC_NAME})(?:\{{({LABEL}(?:,{LABEL})*)\}})? (\S+)$")
COMMENT = re.compile(rf"^# (HELP|TYPE) ({METRIC_NAME}) (.+)$")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Every family /metrics had before prometheus-client, and the two per-direction latency histograms.
FAMILIES = {
    "bridge_calls_active": "gauge",
    "bridge_calls_max": "gauge",
    "bridge_draining": "gauge",
    "bridge_calls_finished_total": "counter",
    "bridge_calls_rejected_total": "counter",
    "bridge_media_frames_total": "counter",
    "bridge_media_drops_total": "counter",
    "bridge_media_protocol_errors_total": "counter",
    "bridge_barge_ins_total": "counter",
    "bridge_model_reconnects_total": "counter",
    "bridge_call_duration_seconds": "histogram",
    "bridge_first_audio_seconds": "histogram",
    "bridge_response_latency_seconds": "histogram",
    "bridge_uplink_latency_seconds": "histogram",
    "bridge_downlink_latency_seconds": "histogram",
}


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


def scrape(*collectors: Collector) -> tuple[dict[str, str], Samples]:
    registry = CollectorRegistry(auto_describe=True)
    for collector in collectors:
        registry.register(collector)
    return parse_exposition(generate_latest(registry).decode().splitlines())


def idle() -> LiveCalls:
    return LiveCalls(active=0, max_calls=10, draining=False)


def le(bound: float) -> tuple[tuple[str, str]]:
    return (("le", "+Inf" if math.isinf(bound) else str(bound)),)


def test_empty_metrics_have_every_family_and_nothing_else() -> None:
    types, samples = scrape(CallMetrics(lambda: LiveCalls(active=3, max_calls=50, draining=True)))
    assert types == FAMILIES  # no `_created` series, no family renamed
    assert samples[("bridge_calls_active", ())] == 3
    assert samples[("bridge_calls_max", ())] == 50
    assert samples[("bridge_draining", ())] == 1
    assert samples[("bridge_media_frames_total", (("direction", "in"),))] == 0
    assert samples[("bridge_media_frames_total", (("direction", "out"),))] == 0
    assert samples[("bridge_first_audio_seconds_bucket", le(math.inf))] == 0
    assert samples[("bridge_call_duration_seconds_count", ())] == 0
    assert samples[("bridge_uplink_latency_seconds_count", ())] == 0
    assert not [key for key in samples if key[0] == "bridge_calls_finished_total"]


def test_calls_are_counted_per_status_and_reason_and_media_is_summed() -> None:
    metrics = CallMetrics(idle)
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
    _, samples = scrape(metrics)
    assert samples[("bridge_calls_finished_total", (("reason", "caller"), ("status", "ended")))] == 2
    assert samples[("bridge_calls_finished_total", (("reason", "media_timeout"), ("status", "failed")))] == 1
    assert samples[("bridge_media_frames_total", (("direction", "in"),))] == 110
    assert samples[("bridge_media_frames_total", (("direction", "out"),))] == 85
    assert samples[("bridge_media_drops_total", ())] == 1
    assert samples[("bridge_media_protocol_errors_total", ())] == 3
    assert samples[("bridge_barge_ins_total", ())] == 2
    assert samples[("bridge_model_reconnects_total", ())] == 1
    assert samples[("bridge_call_duration_seconds_count", ())] == 2
    assert samples[("bridge_call_duration_seconds_bucket", le(5.0))] == 1
    assert samples[("bridge_call_duration_seconds_bucket", le(60.0))] == 2
    assert samples[("bridge_first_audio_seconds_count", ())] == 1
    assert samples[("bridge_first_audio_seconds_bucket", le(0.3))] == 0
    assert samples[("bridge_first_audio_seconds_bucket", le(0.5))] == 1
    assert samples[("bridge_response_latency_seconds_count", ())] == 2
    assert samples[("bridge_response_latency_seconds_sum", ())] == pytest.approx(1.8)
    assert samples[("bridge_response_latency_seconds_bucket", le(1.0))] == 1
    buckets = [samples[("bridge_response_latency_seconds_bucket", le(b))] for b in LATENCY_BUCKETS_S]
    assert buckets == sorted(buckets), "buckets are cumulative"


def test_refusal_reasons_are_counted_and_kept_to_plain_words() -> None:
    metrics = CallMetrics(idle)
    metrics.reject("at_capacity")
    metrics.reject("at_capacity")
    metrics.reject('bad"code\nfrom a provider')
    _, samples = scrape(metrics)
    assert samples[("bridge_calls_rejected_total", (("reason", "at_capacity"),))] == 2
    assert samples[("bridge_calls_rejected_total", (("reason", "other"),))] == 1
    assert label_reason("Upper") == label_reason("x" * 41) == "other"


def test_a_transit_value_on_a_bound_falls_in_that_bucket() -> None:
    tally = TransitTally()
    for seconds in (0.0001, 0.0005, 0.001, 0.0011, 0.3):
        tally.observe(seconds)
    assert tally.count == 5
    assert tally.total == pytest.approx(0.3027)
    assert tally.counts[:3] == [2, 1, 1]  # <= 0.5 ms, <= 1 ms, <= 2 ms
    assert tally.counts[-1] == 1  # above the last bound: +Inf
    assert len(tally.counts) == len(TRANSIT_BUCKETS_S) + 1


def test_live_tallies_are_merged_at_scrape_time_and_counted_once_when_the_call_ends() -> None:
    finished_up, live_up, live_down = TransitTally(), TransitTally(), TransitTally()
    finished_up.observe(0.0004)
    live_up.observe(0.0015)
    live_up.observe(0.004)
    live_down.observe(0.03)
    running_up, running_down = [live_up], [live_down]
    metrics = CallMetrics(lambda: LiveCalls(1, 10, False, uplink=running_up, downlink=running_down))
    metrics.record(CallOutcome("ended", "caller", uplink=finished_up))
    _, samples = scrape(metrics)
    assert samples[("bridge_uplink_latency_seconds_count", ())] == 3
    assert samples[("bridge_uplink_latency_seconds_sum", ())] == pytest.approx(0.0059)
    assert samples[("bridge_uplink_latency_seconds_bucket", le(0.0005))] == 1
    assert samples[("bridge_uplink_latency_seconds_bucket", le(0.002))] == 2
    assert samples[("bridge_uplink_latency_seconds_bucket", le(0.005))] == 3
    assert samples[("bridge_uplink_latency_seconds_bucket", le(math.inf))] == 3
    assert samples[("bridge_downlink_latency_seconds_bucket", le(0.02))] == 0
    assert samples[("bridge_downlink_latency_seconds_bucket", le(0.05))] == 1
    # The live call ends: the manager stops listing it as it records it, so nothing is counted twice.
    running_up.clear()
    running_down.clear()
    metrics.record(CallOutcome("ended", "caller", uplink=live_up, downlink=live_down))
    _, samples = scrape(metrics)
    assert samples[("bridge_uplink_latency_seconds_count", ())] == 3
    assert samples[("bridge_downlink_latency_seconds_count", ())] == 1


def test_each_manager_has_its_own_metrics_and_a_registry_refuses_a_second_set() -> None:
    first, second = CallMetrics(idle), CallMetrics(idle)
    first.reject("at_capacity")
    _, samples = scrape(second)  # another registry, another manager: nothing shared
    assert ("bridge_calls_rejected_total", (("reason", "at_capacity"),)) not in samples
    registry = CollectorRegistry(auto_describe=True)
    registry.register(first)
    with pytest.raises(ValueError, match="Duplicated"):
        registry.register(second)
