"""What one load generator's calls saw, reduced to per-call records (run in the generator process at the end).

The steady window, per-frame latency from sequence marks, playout pacing, and dry ticks split into
underruns and silence (bench/underrun.py says how).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench import seqmark
from bench.stats import arrival_pacing, tick_gaps
from bench.underrun import ReplyTracker, classify_by_reply, classify_marked, dry_slots, late_intervals
from bridge.simulate.summary import CallSummary

if TYPE_CHECKING:
    from bench.loadgen import LoadSpec

ECHO_DELAY_FRAMES = 10  # EchoProvider(delay_ms=200): frame k leaves when frame k + 10 has arrived
WINDOW_LEAD_S = 0.5  # the window opens this long after the last call got its first audio
WINDOW_TAIL_S = 0.5  # and closes this long before the first caller hangs up
DROP_CODES = ("queue_full_drop", "partial_frame_dropped", "media_direction_in")
PTIME_S = 0.020
# A frame still in the echo's delay line when a FLUSH_MEDIA came (the echo's barge-in drops that line) is
# counted as flushed, not lost: sent before the flush, and released no earlier than this before it (the
# uplink, downlink and both loops' lag between the echo dropping it and the flush reaching us).
FLUSH_SLACK_S = 0.100


@dataclass(slots=True)
class Probe:
    """Per-call observations, appended in the event loop (one list append per frame)."""

    marks_table: seqmark.MarkTable | None
    sent: list[float] = field(default_factory=list)  # frame k handed to the peer at sent[k]
    rx_times: list[float] = field(default_factory=list)  # every audio message's arrival
    rx_bytes: list[int] = field(default_factory=list)
    marks: list[tuple[int, float]] = field(default_factory=list)  # (sequence, arrival)
    flushes: list[float] = field(default_factory=list)  # each FLUSH_MEDIA's arrival
    replies: ReplyTracker = field(default_factory=ReplyTracker)  # chan_websocket playout only

    def on_audio(self, data: bytes, t: float) -> None:
        self.rx_times.append(t)
        self.rx_bytes.append(len(data))
        if self.marks_table is not None:
            for seq in self.marks_table.find(data):
                self.marks.append((seq, t))


@dataclass(slots=True)
class CallOutcome:
    index: int
    launched: float
    probe: Probe
    offset: int
    webhook_done: float | None = None
    upgrade_ms: float | None = None  # chan_websocket: connect until the 101 is in
    summary: CallSummary | None = None
    failure: str | None = None


def window(outcomes: list[CallOutcome]) -> tuple[float, float]:
    """Steady state: every call has been answered with audio, no caller has hung up yet."""
    live = [o for o in outcomes if o.failure is None and o.probe.rx_times and o.probe.sent]
    if not live:
        return (0.0, 0.0)
    start = max(o.probe.rx_times[0] for o in live) + WINDOW_LEAD_S
    end = min(o.probe.sent[-1] for o in live) - WINDOW_TAIL_S
    return (start, max(start, end))


def frames_total(spec: LoadSpec) -> int:
    return round((spec.seconds + spec.allowance_s + 2.0) / PTIME_S)


def analyse(spec: LoadSpec, outcomes: list[CallOutcome]) -> dict[str, Any]:
    """Everything the orchestrator needs, with raw latencies so several generators can be merged."""
    w0, w1 = window(outcomes)
    latencies: list[float] = []
    calls: list[dict[str, Any]] = []
    for o in outcomes:
        s, p = o.summary, o.probe
        rec: dict[str, Any] = {"index": o.index, "failure": o.failure, "launched": o.launched}
        if o.webhook_done is not None:
            rec["webhook_ms"] = round((o.webhook_done - o.launched) * 1000, 2)
        if o.upgrade_ms is not None:
            rec["upgrade_ms"] = round(o.upgrade_ms, 2)
        if p.sent and o.webhook_done is not None:
            rec["socket_ms"] = round((p.sent[0] - o.webhook_done) * 1000, 2)
        if p.rx_times:
            rec["first_audio_ms"] = round((p.rx_times[0] - o.launched) * 1000, 2)
        arrivals: dict[int, float] | None = None
        if p.marks_table is not None and p.sent:
            arrivals, dup = arrivals_by_frame(p, o.offset, frames_total(spec))
            lat, lost, flushed = match(p, arrivals, w0, w1)
            latencies += lat
            rec.update(matched=len(lat), lost=lost, flushed=flushed, duplicates=dup)
        if s is not None:
            rec.update(
                xoff=s.xoff_count,
                barge_ins=s.barge_ins,
                flushes=s.flushes,
                frames_flushed=s.frames_flushed,
                drops=sum(s.error_counts.get(code, 0) for code in DROP_CODES),
                max_queue=s.max_queue_depth,
                errors=dict(s.error_counts),
                # The whole call's distance from a drift-free 20 ms grid (AudioSocket: what Asterisk plays).
                grid_p95_ms=s.arrival.grid_p95_ms,
                grid_max_ms=s.arrival.grid_max_ms,
            )
            rec.update(pacing(spec, s, p, w0, w1))
            rec.update(dry_ticks(spec, s, p, arrivals, w0, w1))
        calls.append(rec)
    return {"window": [w0, w1], "latencies_ms": [round(x, 3) for x in latencies], "calls": calls}


def arrivals_by_frame(p: Probe, offset: int, n_frames_total: int) -> tuple[dict[int, float], int]:
    """First arrival of each of this call's frames (index k = k-th frame it sent), and duplicates."""
    arrivals: dict[int, float] = {}
    dup = 0
    for seq, t in p.marks:
        k = (seq - offset) % n_frames_total
        if k in arrivals:
            dup += 1
            continue
        arrivals[k] = t
    return arrivals, dup


def match(p: Probe, arrivals: dict[int, float], w0: float, w1: float) -> tuple[list[float], int, int]:
    """Bridge-added latency (up + down) of each echoed frame whose release lies in the window.

    The echo provider releases frame k when frame k + 10 reaches it, so the time from sending frame
    k + 10 to receiving frame k is the bridge's uplink plus downlink time, whatever the echo delay is.
    Returns (latencies ms, frames expected but never heard, frames never heard that a barge-in dropped:
    still in the echo's delay line when a FLUSH_MEDIA came, see FLUSH_SLACK_S).
    """
    lat: list[float] = []
    lost = flushed = 0
    flushes = p.flushes
    for k in range(len(p.sent) - ECHO_DELAY_FRAMES):
        release = p.sent[k + ECHO_DELAY_FRAMES]
        if not w0 <= release <= w1:
            continue
        heard = arrivals.get(k)
        if heard is not None:
            lat.append((heard - release) * 1000)
            continue
        # The first flush after the frame was sent: did it come while the frame was still held?
        after = bisect.bisect_left(flushes, p.sent[k])
        if after < len(flushes) and flushes[after] <= release + FLUSH_SLACK_S:
            flushed += 1
        else:
            lost += 1
    return lat, lost, flushed


def pacing(spec: LoadSpec, s: CallSummary, p: Probe, w0: float, w1: float) -> dict[str, Any]:
    """Playout as the Asterisk side saw it, inside the window."""
    t0 = p.sent[0] if p.sent else 0.0  # call time 0 = first caller frame
    idx = [i for i, t in enumerate(p.rx_times) if w0 <= t <= w1]
    times = [p.rx_times[i] for i in idx]
    fmt_bytes_per_s = s.sample_rate * (1 if s.format == "ulaw" else 2)
    durations = [p.rx_bytes[i] / fmt_bytes_per_s for i in idx]
    arrival = arrival_pacing(times, durations)
    out: dict[str, Any] = {
        "arrival_gaps": arrival.gaps,
        "arrival_bursts": arrival.bursts,
        "max_lead_ms": arrival.max_lead_ms,
    }
    if spec.transport == "chan_websocket":
        ticks = [f.tick for f in s.played if w0 <= t0 + f.t <= w1]
        gaps = tick_gaps(ticks)
        out.update(playout_gaps=gaps.gaps, playout_missing=gaps.missing)
    else:
        # AudioSocket has no playout queue: what arrives is what plays.
        out.update(playout_gaps=arrival.gaps, playout_missing=0)
    return out


def dry_ticks(
    spec: LoadSpec, s: CallSummary, p: Probe, arrivals: dict[int, float] | None, w0: float, w1: float
) -> dict[str, Any]:
    """Dry playout ticks in the window as underruns and silence (None where the generator cannot tell)."""
    if spec.transport == "chan_websocket":
        dry = [(t, inside) for t, inside in p.replies.dry if w0 <= t <= w1]
        by_reply = classify_by_reply(dry)
        if arrivals is not None:
            split = classify_marked([t for t, _ in dry], late_intervals(p.sent, arrivals, ECHO_DELAY_FRAMES))
        else:
            split = by_reply
        return {
            "underruns": split.underruns,
            "silence": split.silence,
            "underruns_in_reply": by_reply.underruns,
        }
    if arrivals is None:
        return {}  # AudioSocket has no reply brackets: only marks can tell
    frame_bytes = max(1, round(s.sample_rate * PTIME_S) * (1 if s.format == "ulaw" else 2))
    slots = dry_slots([(f.tick, math.ceil(f.size / frame_bytes)) for f in s.played])
    # Slot k starts when the caller's frame k went out (one clock for both directions); a frame arriving
    # within half a frame of that still fills it (simulate.summary.Timeline), so the slot is judged then.
    times = [p.sent[k] + PTIME_S / 2 for k in slots if k < len(p.sent) and w0 <= p.sent[k] <= w1]
    split = classify_marked(times, late_intervals(p.sent, arrivals, ECHO_DELAY_FRAMES))
    return {"underruns": split.underruns, "silence": split.silence}
