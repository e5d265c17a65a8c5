"""Call and media metrics, exported through prometheus-client.

`CallMetrics` is one session manager's collector: totals are added as calls end, live values (calls
in progress, the latency tallies of running calls) are read from the manager at scrape time. Register
it in a `CollectorRegistry` of your own (never prometheus-client's global one: several apps may run in
one process) and render that with `generate_latest`. No I/O and no clock reads here.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric

DURATION_BUCKETS_S: Final = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENCY_BUCKETS_S: Final = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
# Time a frame spends inside the bridge, per direction: fine-grained where a healthy bridge lives.
TRANSIT_BUCKETS_S: Final = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25)

_LABEL_REASON: Final = re.compile(r"[a-z][a-z0-9_]{0,39}")


def label_reason(code: str) -> str:
    """A reason as a label value. Error codes can come from a model provider: anything but a short
    snake_case word is "other", which keeps the label's set of values small."""
    return code if _LABEL_REASON.fullmatch(code) else "other"


class TransitTally:
    """One call's latencies in one direction, counted into `TRANSIT_BUCKETS_S` (plus +Inf).

    Observed once per 20 ms frame per direction (10,000 times a second each way at 200 calls), so it is
    a bisect and two additions: 0.22 µs per observation with the runner's clock read, against 0.95 µs
    through prometheus-client's `Histogram.observe`, which takes a lock for the sum and one for the bucket
    (measured on uvloop). The manager's collector merges the tallies of finished calls as they end and
    adds the live calls' tallies at scrape time. Event-loop thread only.
    """

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(TRANSIT_BUCKETS_S) + 1)  # per bucket, not cumulative; the last is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound falls in that bound's bucket (Prometheus `le`).
        self.counts[bisect.bisect_left(TRANSIT_BUCKETS_S, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, other: TransitTally) -> None:
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, other.counts, strict=True)]
        self.total += other.total


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What one finished call contributes to the metrics."""

    status: str  # "ended" or "failed"
    reason: str  # who ended it, or the error code of a failed call (see `label_reason`)
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    protocol_errors: int = 0
    barge_ins: int = 0
    model_reconnects: int = 0
    duration_s: float | None = None  # None: the call never had media
    first_audio_s: float | None = None
    response_latencies_s: Sequence[float] = ()
    uplink: TransitTally | None = None
    downlink: TransitTally | None = None


@dataclass(frozen=True, slots=True)
class LiveCalls:
    """The manager's calls at the moment of a scrape."""

    active: int
    max_calls: int
    draining: bool
    uplink: Sequence[TransitTally] = ()  # the running calls' own tallies (not yet merged)
    downlink: Sequence[TransitTally] = ()


class CallMetrics:
    """A prometheus-client collector over one manager's calls (`live` reads the manager at scrape time)."""

    def __init__(self, live: Callable[[], LiveCalls]) -> None:
        self._live = live
        # registry=None: these objects are exported only through `collect`, never registered globally.
        self._finished = Counter(
            "bridge_calls_finished_total",
            "Calls that ended, by status and reason.",
            ["status", "reason"],
            registry=None,
        )
        self._rejected = Counter(
            "bridge_calls_rejected_total",
            "Calls and media sockets refused, by reason.",
            ["reason"],
            registry=None,
        )
        frames = Counter(
            "bridge_media_frames_total", "Media frames of finished calls.", ["direction"], registry=None
        )
        self._frames_in, self._frames_out = frames.labels("in"), frames.labels("out")
        self._drops = Counter(
            "bridge_media_drops_total", "Media the legs dropped (full queue, stale, early).", registry=None
        )
        self._protocol_errors = Counter(
            "bridge_media_protocol_errors_total", "Media messages refused.", registry=None
        )
        self._barge_ins = Counter(
            "bridge_barge_ins_total", "Times a caller interrupted the bot.", registry=None
        )
        self._model_reconnects = Counter(
            "bridge_model_reconnects_total", "Model connections lost and restored.", registry=None
        )
        self._call_duration = Histogram(
            "bridge_call_duration_seconds",
            "Duration of calls that had media.",
            buckets=DURATION_BUCKETS_S,
            registry=None,
        )
        self._first_audio = Histogram(
            "bridge_first_audio_seconds",
            "Media attached to the bot's first audio.",
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self._response_latency = Histogram(
            "bridge_response_latency_seconds",
            "Caller stopped to the reply audio.",
            buckets=LATENCY_BUCKETS_S,
            registry=None,
        )
        self._exported = (
            self._finished,
            self._rejected,
            frames,
            self._drops,
            self._protocol_errors,
            self._barge_ins,
            self._model_reconnects,
            self._call_duration,
            self._first_audio,
            self._response_latency,
        )
        self._uplink = TransitTally()  # finished calls
        self._downlink = TransitTally()

    def reject(self, code: str) -> None:
        """A call or media socket refused before it was admitted, with its error code."""
        self._rejected.labels(label_reason(code)).inc()

    def record(self, call: CallOutcome) -> None:
        self._finished.labels(call.status, call.reason).inc()
        self._frames_in.inc(call.frames_in)
        self._frames_out.inc(call.frames_out)
        self._drops.inc(call.drops)
        self._protocol_errors.inc(call.protocol_errors)
        self._barge_ins.inc(call.barge_ins)
        self._model_reconnects.inc(call.model_reconnects)
        if call.duration_s is not None:
            self._call_duration.observe(call.duration_s)
        if call.first_audio_s is not None:
            self._first_audio.observe(call.first_audio_s)
        for latency in call.response_latencies_s:
            self._response_latency.observe(latency)
        if call.uplink is not None:
            self._uplink.add(call.uplink)
        if call.downlink is not None:
            self._downlink.add(call.downlink)

    def collect(self) -> Iterator[Metric]:
        live = self._live()
        yield GaugeMetricFamily(
            "bridge_calls_active", "Calls pending, connecting or active.", value=live.active
        )
        yield GaugeMetricFamily("bridge_calls_max", "Admission limit (max_calls).", value=live.max_calls)
        yield GaugeMetricFamily("bridge_draining", "1 while shutting down.", value=int(live.draining))
        for metric in self._exported:
            for family in metric.collect():
                # prometheus-client adds a `_created` timestamp series per counter and histogram; the
                # bridge's metrics never had them and nothing here needs them.
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family
        yield _transit_family(
            "bridge_uplink_latency_seconds",
            "Caller frame read from Asterisk to its bytes written to the model.",
            self._uplink,
            live.uplink,
        )
        yield _transit_family(
            "bridge_downlink_latency_seconds",
            "Model audio read to its first frame written to Asterisk (audio with nothing queued ahead).",
            self._downlink,
            live.downlink,
        )


class LoopLagMetrics:
    """`bridge_event_loop_lag_seconds`: how much later than due the event loop ran a timer (the probe in
    session/loop_lag.py observes it a few times a second). The per-direction latencies start when a frame
    is read, so they cannot see this: a loop busy for 8 ms leaves every frame that arrives meanwhile up
    to 8 ms in its socket first. A collector: register it in a `CollectorRegistry` of your own."""

    def __init__(self) -> None:
        self.tally = TransitTally()

    def collect(self) -> Iterator[Metric]:
        yield _transit_family(
            "bridge_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due (what a socket's data waits on top).",
            self.tally,
            (),
        )


def _transit_family(
    name: str, help_text: str, finished: TransitTally, running: Sequence[TransitTally]
) -> HistogramMetricFamily:
    merged = TransitTally()
    for tally in (finished, *running):
        merged.add(tally)
    bounds = [*(str(bound) for bound in TRANSIT_BUCKETS_S), "+Inf"]  # as prometheus-client writes `le`
    buckets = list(zip(bounds, accumulate(merged.counts), strict=True))
    return HistogramMetricFamily(name, help_text, buckets=buckets, sum_value=merged.total)
