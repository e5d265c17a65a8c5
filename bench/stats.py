"""Pure arithmetic of the benchmark: percentiles, CPU and memory readings from /proc text, pacing counts."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, interpolating linearly between ranks."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError("q must be within 0..100")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = pos - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


@dataclass(frozen=True, slots=True)
class Dist:
    """p50 / p99 / max of a sample, plus its size (None fields when empty)."""

    n: int
    p50: float | None
    p99: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Dist:
        if not values:
            return cls(0, None, None, None)
        ordered = sorted(values)
        return cls(len(ordered), percentile(ordered, 50), percentile(ordered, 99), ordered[-1])

    def to_dict(self, digits: int = 2) -> dict[str, float | int | None]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, digits)

        return {"n": self.n, "p50": r(self.p50), "p99": r(self.p99), "max": r(self.max)}


# ----- /proc readings -------------------------------------------------------------------------------


def cpu_ticks_from_stat(text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may contain spaces, so fields are counted from the
    last ')'; utime and stime are fields 14 and 15 of the whole line.
    """
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): field k is rest[k - 3].
    return int(rest[11]) + int(rest[12])


def rss_kb_from_status(text: str) -> int:
    """VmRSS in kB from the text of /proc/<pid>/status."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise ValueError("no VmRSS line (a zombie or kernel thread?)")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One reading of a process: monotonic time, CPU seconds used so far, resident set in kB."""

    t: float
    cpu_s: float
    rss_kb: int


def cpu_percent(samples: Sequence[ProcSample], start: float, end: float) -> float | None:
    """Average CPU (% of one core) between the first sample at or after `start` and the last at or
    before `end`; None if fewer than two samples fall in the window."""
    inside = [s for s in samples if start <= s.t <= end]
    if len(inside) < 2 or inside[-1].t <= inside[0].t:
        return None
    first, last = inside[0], inside[-1]
    return (last.cpu_s - first.cpu_s) / (last.t - first.t) * 100.0


def max_rss_kb(samples: Sequence[ProcSample], start: float, end: float) -> int | None:
    inside = [s.rss_kb for s in samples if start <= s.t <= end]
    return max(inside) if inside else None


# ----- pacing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TickGaps:
    """Holes in a playout clock: `gaps` runs of missing 20 ms ticks, `missing` ticks in all."""

    gaps: int
    missing: int


def tick_gaps(ticks: Sequence[int]) -> TickGaps:
    """Missing ticks between consecutive played ticks (chan_websocket plays a frame per tick if it can)."""
    gaps = missing = 0
    for a, b in itertools.pairwise(ticks):
        if b - a > 1:
            gaps += 1
            missing += b - a - 1
    return TickGaps(gaps, missing)


@dataclass(frozen=True, slots=True)
class ArrivalPacing:
    """What a receiver without a playout queue (AudioSocket) sees of a stream's timing.

    gaps: inter-arrival intervals longer than two frames (the caller hears a hole unless a jitter buffer
    covers it); bursts: three messages within one frame time; max_lead_ms: the most audio that arrived
    ahead of real time when each message plays at its arrival or right after the previous one.
    """

    gaps: int
    bursts: int
    max_lead_ms: float


def arrival_pacing(times: Sequence[float], durations: Sequence[float], ptime: float = 0.020) -> ArrivalPacing:
    """`times` (seconds) and `durations` (seconds of audio) per message, in arrival order."""
    gaps = sum(1 for a, b in itertools.pairwise(times) if b - a > 2 * ptime)
    bursts = sum(1 for a, c in zip(times, times[2:], strict=False) if c - a < ptime)
    play_end = lead = 0.0
    for t, d in zip(times, durations, strict=True):
        play_end = max(play_end, t) + d
        lead = max(lead, play_end - t)
    return ArrivalPacing(gaps, bursts, round(lead * 1000, 1))


@dataclass(frozen=True, slots=True)
class MachineSample:
    """The aggregate `cpu` line of /proc/stat: busy, stolen (by the hypervisor) and total ticks."""

    t: float
    busy: int
    steal: int
    total: int


def machine_ticks_from_proc_stat(text: str) -> tuple[int, int, int]:
    """(busy, steal, total) ticks over all cores; busy excludes idle, iowait and steal."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [int(x) for x in line.split()[1:]]
            v += [0] * (8 - len(v))
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            busy = user + nice + system + irq + softirq
            return busy, steal, busy + idle + iowait + steal
    raise ValueError("no aggregate cpu line in /proc/stat")


def machine_load(
    samples: Sequence[MachineSample], start: float, end: float, cores: int
) -> tuple[float, float] | None:
    """(busy in % of one core, summed over cores; steal in % of the machine) over the window."""
    inside = [s for s in samples if start <= s.t <= end]
    if len(inside) < 2 or inside[-1].total <= inside[0].total:
        return None
    a, b = inside[0], inside[-1]
    total = b.total - a.total
    return (b.busy - a.busy) / total * 100.0 * cores, (b.steal - a.steal) / total * 100.0
