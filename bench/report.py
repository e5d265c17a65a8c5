"""Turning raw observations into one result per ramp step, and rendering it (table, JSON, Markdown)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.burst import BurstStats, burst_stats, failure_kind
from bench.promtext import DOWNLINK, LOOP_LAG, UPLINK, Scrape, window_latency
from bench.stats import Dist, MachineSample, ProcSample, cpu_percent, machine_load, max_rss_kb

# Goals from the issue (reported against, never asserted).
TARGET_CPU_PER_CALL = 0.5  # % of one core
TARGET_MB_PER_CALL = 1.0
TARGET_P99_MS = 5.0  # per direction; we measure up + down, so the combined goal is twice this


@dataclass(slots=True)
class StepResult:
    calls: int
    failed: int
    failure_kinds: dict[str, int]
    window_s: float
    bridge_cpu_percent: float | None  # of one core, whole process
    cpu_per_call: float | None
    baseline_rss_mb: float | None
    peak_rss_mb: float | None
    mb_per_call: float | None
    latency: Dist  # bridge-added, uplink + downlink, ms
    matched: int
    lost: int
    playout_gaps: int
    playout_missing: int
    arrival_gaps: int
    arrival_bursts: int
    max_lead_ms: float | None
    drops: int
    xoff: int
    barge_ins: int
    setup_ms: Dist  # webhook + socket, ms
    first_audio_ms: Dist  # launch to first bridge audio (includes the echo's 200 ms)
    setup_rate: float | None  # calls per second, all placed at once
    generator_cpu_percent: float | None
    generator_lag_ms: Dist
    generators: int = 1
    machine_busy_percent: float | None = None  # all processes, % of one core summed over cores
    steal_percent: float | None = None  # of the machine: the hypervisor ran someone else
    # Dry playout ticks (20 ms each) in the window: the bot had audio due that had not arrived, or not
    # (bench/underrun.py); None where the generator cannot tell (openai-fake over AudioSocket).
    underruns: int | None = None
    silence: int | None = None
    underruns_in_reply: int | None = None  # by reply brackets, even where marks decide (a cross-check)
    uplink_ms: Dist = field(default_factory=lambda: Dist.of([]))  # the bridge's own histograms
    downlink_ms: Dist = field(default_factory=lambda: Dist.of([]))
    loop_lag_ms: Dist = field(default_factory=lambda: Dist.of([]))  # how late the bridge's loop ran timers
    burst: BurstStats | None = None
    burst_lag_ms: Dist = field(default_factory=lambda: Dist.of([]))  # generator lag while placing calls
    notes: list[str] = field(default_factory=list)
    flushed: int = 0  # echoed frames never heard because a barge-in dropped them (not in `lost`)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in (
            "latency",
            "setup_ms",
            "first_audio_ms",
            "generator_lag_ms",
            "uplink_ms",
            "downlink_ms",
            "loop_lag_ms",
            "burst_lag_ms",
        ):
            data[key] = getattr(self, key).to_dict()
        data["burst"] = None if self.burst is None else self.burst.to_dict()
        return data


def _sum(calls: Iterable[Mapping[str, Any]], key: str) -> int:
    return sum(int(c.get(key) or 0) for c in calls)


def _sum_known(calls: Iterable[Mapping[str, Any]], key: str) -> int | None:
    """The sum over the calls that report `key`; None if none does."""
    values = [int(c[key]) for c in calls if c.get(key) is not None]
    return sum(values) if values else None


def build_step(
    calls: int,
    outputs: Sequence[Mapping[str, Any]],
    samples: Sequence[ProcSample],
    baseline: ProcSample | None,
    machine: Sequence[MachineSample] = (),
    cores: int = 1,
    scrapes: Sequence[Scrape] = (),
    line_ms: float = 500.0,
) -> StepResult:
    """Merge the generator processes' outputs, the bridge's /proc samples and its /metrics scrapes into
    one step. `line_ms`: Asterisk's connection timeout, the line for a burst's upgrades."""
    records = [c for out in outputs for c in out["calls"]]
    starts = [out["window"][0] for out in outputs]
    ends = [out["window"][1] for out in outputs]
    w0, w1 = (max(starts), min(ends)) if outputs else (0.0, 0.0)
    cpu = cpu_percent(samples, w0, w1) if w1 > w0 else None
    peak_kb = max_rss_kb(samples, w0, w1) if w1 > w0 else None
    base_mb = baseline.rss_kb / 1024 if baseline else None
    peak_mb = peak_kb / 1024 if peak_kb is not None else None
    failed = [c for c in records if c.get("failure")]
    kinds = Counter(failure_kind(c["failure"]) for c in failed)
    latencies = [x for out in outputs for x in out["latencies_ms"]]
    setup = [c["webhook_ms"] + c["socket_ms"] for c in records if "webhook_ms" in c and "socket_ms" in c]
    first = [c["first_audio_ms"] for c in records if "first_audio_ms" in c]
    launched = min((out["launched_at"] for out in outputs), default=0.0)
    answered = [
        c.get("launched", launched) + c["first_audio_ms"] / 1000 for c in records if "first_audio_ms" in c
    ]
    rate = None
    if len(answered) > 1 and max(answered) > launched:
        rate = len(answered) / (max(answered) - launched)
    leads = [c["max_lead_ms"] for c in records if c.get("max_lead_ms") is not None]
    gen_cpu = [out["cpu_percent"] for out in outputs if out.get("cpu_percent") is not None]
    lags = [x for out in outputs for x in out["loop_lag_ms"]]
    live = calls - len(failed)  # per-call figures are over the calls that actually ran
    load = machine_load(machine, w0, w1, cores) if w1 > w0 else None
    return StepResult(
        calls=calls,
        failed=len(failed),
        failure_kinds=dict(kinds),
        window_s=round(max(0.0, w1 - w0), 2),
        bridge_cpu_percent=_r(cpu),
        cpu_per_call=_r(cpu / live if cpu is not None and live > 0 else None, 3),
        baseline_rss_mb=_r(base_mb),
        peak_rss_mb=_r(peak_mb),
        mb_per_call=_r(
            (peak_mb - base_mb) / live if peak_mb is not None and base_mb is not None and live > 0 else None,
            3,
        ),
        latency=Dist.of(latencies),
        matched=_sum(records, "matched"),
        lost=_sum(records, "lost"),
        flushed=_sum(records, "flushed"),
        playout_gaps=_sum(records, "playout_gaps"),
        playout_missing=_sum(records, "playout_missing"),
        arrival_gaps=_sum(records, "arrival_gaps"),
        arrival_bursts=_sum(records, "arrival_bursts"),
        max_lead_ms=max(leads) if leads else None,
        drops=_sum(records, "drops"),
        xoff=_sum(records, "xoff"),
        barge_ins=_sum(records, "barge_ins"),
        setup_ms=Dist.of(setup),
        first_audio_ms=Dist.of(first),
        setup_rate=_r(rate, 1),
        generator_cpu_percent=_r(sum(gen_cpu) if gen_cpu else None),
        generator_lag_ms=Dist.of(lags),
        generators=len(outputs),
        machine_busy_percent=_r(load[0]) if load else None,
        steal_percent=_r(load[1]) if load else None,
        underruns=_sum_known(records, "underruns"),
        silence=_sum_known(records, "silence"),
        underruns_in_reply=_sum_known(records, "underruns_in_reply"),
        uplink_ms=window_latency(scrapes, w0, w1, UPLINK),
        downlink_ms=window_latency(scrapes, w0, w1, DOWNLINK),
        loop_lag_ms=window_latency(scrapes, w0, w1, LOOP_LAG),
        burst=burst_stats(records, line_ms),
        burst_lag_ms=Dist.of([x for out in outputs for x in out.get("burst_lag_ms", [])]),
    )


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def _f(value: float | None, fmt: str = ".2f") -> str:
    return "-" if value is None else format(value, fmt)


def _i(value: int | None) -> str:
    return "-" if value is None else str(value)


def _pair(dist: Dist, fmt: str = ".2f") -> str:
    """`p50/p99`, or `-` when there is nothing (e.g. a bridge without that metric)."""
    if dist.p50 is None and dist.p99 is None:
        return "-"
    return f"{_f(dist.p50, fmt)}/{_f(dist.p99, fmt)}"


COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls", "calls"),
    ("fail", "failed calls"),
    ("cpu%", "bridge CPU, % of one core"),
    ("cpu%/call", "bridge CPU per call"),
    ("MB/call", "RSS above idle baseline, per call"),
    ("lat p50", "bridge-added latency, up+down, ms"),
    ("p99", ""),
    ("max", ""),
    ("lost", "echoed frames never heard (those a barge-in dropped are `flushed` in the JSON)"),
    ("gaps", "playout gaps (runs of missing ticks)"),
    ("underruns", "dry ticks while the bot had audio due"),
    ("silence", "dry ticks between replies"),
    ("up p50/p99", "bridge uplink latency, its histogram, ms"),
    ("down p50/p99", "bridge downlink latency, its histogram, ms"),
    ("loop lag p99", "how late the bridge's event loop ran a due timer, its histogram, ms"),
    ("drops", "frames dropped by Asterisk"),
    ("xoff", "MEDIA_XOFF"),
    ("bursts", "3 messages within 20 ms"),
    ("setup p50/p99", "webhook + socket, ms"),
    ("cps", "setup rate, calls/s"),
    ("gen cpu%", "load generator CPU"),
    ("gen lag p99", "generator loop lag, ms"),
    ("other cpu%", "machine busy minus bridge and generator"),
    ("steal%", "CPU stolen by the hypervisor"),
)


def table_rows(steps: Sequence[StepResult]) -> list[list[str]]:
    rows = [[name for name, _ in COLUMNS]]
    for s in steps:
        rows.append(
            [
                str(s.calls),
                str(s.failed),
                _f(s.bridge_cpu_percent, ".1f"),
                _f(s.cpu_per_call, ".3f"),
                _f(s.mb_per_call, ".3f"),
                _f(s.latency.p50),
                _f(s.latency.p99),
                _f(s.latency.max),
                str(s.lost),
                str(s.playout_gaps),
                _i(s.underruns),
                _i(s.silence),
                _pair(s.uplink_ms),
                _pair(s.downlink_ms),
                _f(s.loop_lag_ms.p99),
                str(s.drops),
                str(s.xoff),
                str(s.arrival_bursts),
                f"{_f(s.setup_ms.p50, '.0f')}/{_f(s.setup_ms.p99, '.0f')}",
                _f(s.setup_rate, ".0f"),
                _f(s.generator_cpu_percent, ".0f"),
                _f(s.generator_lag_ms.p99, ".1f"),
                _f(_other(s), ".0f"),
                _f(s.steal_percent, ".0f"),
            ]
        )
    return rows


def _other(s: StepResult) -> float | None:
    if s.machine_busy_percent is None or s.bridge_cpu_percent is None:
        return None
    return max(0.0, s.machine_busy_percent - s.bridge_cpu_percent - (s.generator_cpu_percent or 0.0))


BURST_COLUMNS: tuple[tuple[str, str], ...] = (
    ("calls", "calls placed"),
    ("fail", "failed calls (late ones included)"),
    ("late", "upgrade over the line or timed out (Asterisk abandons them)"),
    ("spread ms", "first to last call placed"),
    ("webhook p50/p99", "POST to status line, ms"),
    ("upgrade p50/p99", "connect to 101, ms"),
    ("setup p50/p99", "webhook + upgrade, ms"),
    ("first audio p50", "launch to first bridge audio, ms"),
    ("gen lag p99", "generator loop lag while placing, ms"),
    ("cpu%/call", "bridge CPU per call in the steady window"),
    ("other cpu%", "machine busy minus bridge and generator"),
    ("steal%", "CPU stolen by the hypervisor"),
)


def burst_rows(steps: Sequence[StepResult]) -> list[list[str]]:
    rows = [[name for name, _ in BURST_COLUMNS]]
    for s in steps:
        b = s.burst
        if b is None:
            continue
        rows.append(
            [
                str(b.placed),
                str(b.failed),
                str(b.late),
                _f(b.spread_ms, ".0f"),
                _pair(b.webhook_ms, ".1f"),
                _pair(b.upgrade_ms, ".1f"),
                _pair(b.setup_ms, ".1f"),
                _f(s.first_audio_ms.p50, ".0f"),
                _f(s.burst_lag_ms.p99, ".1f"),
                _f(s.cpu_per_call, ".3f"),
                _f(_other(s), ".0f"),
                _f(s.steal_percent, ".0f"),
            ]
        )
    return rows


def render_table(steps: Sequence[StepResult]) -> str:
    return render_rows(table_rows(steps))


def render_rows(rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns with a dashed rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown_table(steps: Sequence[StepResult]) -> str:
    return render_markdown_rows(table_rows(steps))


def render_markdown_rows(rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---:|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out)


def verdicts(step: StepResult) -> list[str]:
    """How a step compares with the goals (text, for humans)."""
    out: list[str] = []
    if step.cpu_per_call is not None:
        ok = step.cpu_per_call <= TARGET_CPU_PER_CALL
        out.append(f"CPU {step.cpu_per_call:.3f}%/call {'<=' if ok else '>'} {TARGET_CPU_PER_CALL}%")
    if step.mb_per_call is not None:
        ok = step.mb_per_call <= TARGET_MB_PER_CALL
        out.append(f"RSS {step.mb_per_call:.3f} MB/call {'<=' if ok else '>'} {TARGET_MB_PER_CALL} MB")
    if step.latency.p99 is not None:
        ok = step.latency.p99 <= 2 * TARGET_P99_MS
        out.append(
            f"latency p99 up+down {step.latency.p99:.2f} ms {'<=' if ok else '>'} {2 * TARGET_P99_MS:g} ms"
        )
    for label, dist in (("uplink", step.uplink_ms), ("downlink", step.downlink_ms)):
        if dist.p99 is not None:
            ok = dist.p99 <= TARGET_P99_MS
            out.append(f"{label} p99 {dist.p99:.2f} ms {'<=' if ok else '>'} {TARGET_P99_MS:g} ms")
    clean = step.drops == 0 and step.playout_gaps == 0
    out.append("no drops, no gaps" if clean else f"{step.drops} drops, {step.playout_gaps} gaps")
    if step.underruns is not None:
        out.append(f"{step.underruns} underrun ticks, {step.silence} silent ticks")
    return out


def summary_json(meta: Mapping[str, Any], steps: Sequence[StepResult]) -> str:
    """One line: the run's parameters and every step."""
    return json.dumps({**meta, "steps": [s.to_dict() for s in steps]}, separators=(",", ":"))


# ----- profiles -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HotFunction:
    name: str
    self_share: float  # share of samples with this function on top of the stack
    total_share: float  # share of samples with it anywhere on the stack


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """py-spy `--format raw` (Brendan Gregg's collapsed stacks): `frame;frame;... COUNT` per line."""
    out: list[tuple[list[str], int]] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        out.append((stack.split(";"), int(count)))
    return out


def hot_functions(stacks: Sequence[tuple[list[str], int]], top: int = 15) -> list[HotFunction]:
    """The functions with the most self samples (ties broken by inclusive samples)."""
    total = sum(count for _, count in stacks)
    if not total:
        return []
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, count in stacks:
        own[frames[-1]] += count
        for name in set(frames):
            incl[name] += count
    ranked = sorted(own, key=lambda n: (own[n], incl[n]), reverse=True)[:top]
    return [HotFunction(n, own[n] / total, incl[n] / total) for n in ranked]


def render_hot(functions: Sequence[HotFunction]) -> str:
    lines = ["| self % | total % | function |", "|---:|---:|---|"]
    lines += [f"| {f.self_share * 100:.1f} | {f.total_share * 100:.1f} | `{f.name}` |" for f in functions]
    return "\n".join(lines)
