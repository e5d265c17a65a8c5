"""Call and media metrics aggregated as calls end, rendered in the Prometheus text format.

Pure: the caller passes every value in (no clock, no I/O), so it is trivially testable.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

DURATION_BUCKETS_S = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LATENCY_BUCKETS_S = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(value)


def labelled(name: str, labels: dict[str, str]) -> str:
    if not labels:
        return name
    pairs = ",".join(f'{key}="{escape_label_value(value)}"' for key, value in labels.items())
    return f"{name}{{{pairs}}}"


class Histogram:
    """Fixed upper bounds; a value equal to a bound falls in that bound's bucket (Prometheus `le`)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError("bucket bounds must be strictly increasing")
        self.bounds = (*bounds, math.inf)
        self._counts = [0] * len(self.bounds)  # per bucket, not cumulative
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self._counts[index] += 1
                break
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, observations <= bound) for every bucket, ending with +Inf == count."""
        running, out = 0, []
        for bound, count in zip(self.bounds, self._counts, strict=True):
            running += count
            out.append((bound, running))
        return out

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        for bound, count in self.cumulative():
            lines.append(f"{labelled(name + '_bucket', {'le': format_value(bound)})} {count}")
        lines += [f"{name}_sum {format_value(self.sum)}", f"{name}_count {self.count}"]
        return lines


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """What one finished call contributes to the metrics."""

    status: str  # "ended" or "failed"
    reason: str  # who ended it, or the error code of a failed call
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    protocol_errors: int = 0
    barge_ins: int = 0
    model_reconnects: int = 0
    duration_s: float | None = None  # None: the call never had media
    first_audio_s: float | None = None
    response_latencies_s: Sequence[float] = ()


@dataclass
class CallMetrics:
    finished: Counter[tuple[str, str]] = field(default_factory=Counter)  # (status, reason) -> calls
    rejected: Counter[str] = field(default_factory=Counter)  # refusal code -> calls never admitted
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    protocol_errors: int = 0
    barge_ins: int = 0
    model_reconnects: int = 0
    call_duration: Histogram = field(default_factory=lambda: Histogram(DURATION_BUCKETS_S))
    first_audio: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))
    response_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS_S))

    def record(self, call: CallOutcome) -> None:
        self.finished[call.status, call.reason] += 1
        self.frames_in += call.frames_in
        self.frames_out += call.frames_out
        self.drops += call.drops
        self.protocol_errors += call.protocol_errors
        self.barge_ins += call.barge_ins
        self.model_reconnects += call.model_reconnects
        if call.duration_s is not None:
            self.call_duration.observe(call.duration_s)
        if call.first_audio_s is not None:
            self.first_audio.observe(call.first_audio_s)
        for latency in call.response_latencies_s:
            self.response_latency.observe(latency)

    def render(self) -> list[str]:
        lines = _header("bridge_calls_finished_total", "counter", "Calls that ended, by status and reason.")
        for (status, reason), calls in sorted(self.finished.items()):
            sample = labelled("bridge_calls_finished_total", {"status": status, "reason": reason})
            lines.append(f"{sample} {calls}")
        lines += _header(
            "bridge_calls_rejected_total", "counter", "Calls and media sockets refused, by reason."
        )
        for reason, calls in sorted(self.rejected.items()):
            lines.append(f"{labelled('bridge_calls_rejected_total', {'reason': reason})} {calls}")
        lines += _header("bridge_media_frames_total", "counter", "Media frames of finished calls.")
        lines.append(f'bridge_media_frames_total{{direction="in"}} {self.frames_in}')
        lines.append(f'bridge_media_frames_total{{direction="out"}} {self.frames_out}')
        for name, help_text, value in (
            ("bridge_media_drops_total", "Media the legs dropped (full queue, stale, early).", self.drops),
            ("bridge_media_protocol_errors_total", "Media messages refused.", self.protocol_errors),
            ("bridge_barge_ins_total", "Times a caller interrupted the bot.", self.barge_ins),
            ("bridge_model_reconnects_total", "Model connections lost and restored.", self.model_reconnects),
        ):
            lines += [*_header(name, "counter", help_text), f"{name} {value}"]
        for name, help_text, histogram in (
            ("bridge_call_duration_seconds", "Duration of calls that had media.", self.call_duration),
            ("bridge_first_audio_seconds", "Media attached to the bot's first audio.", self.first_audio),
            ("bridge_response_latency_seconds", "Caller stopped to the reply audio.", self.response_latency),
        ):
            lines += histogram.render(name, help_text)
        return lines


def _header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
