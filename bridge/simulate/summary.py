"""What a simulated call reports: `CallSummary`, plus the audio timeline and arrival statistics."""

from __future__ import annotations

import itertools
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from bridge.audio.formats import AudioFormat
from bridge.simulate.audio_source import decode_from_leg, write_wav
from bridge.simulate.options import PeerRecord

HangupBy = Literal["caller", "bridge", "protocol_error", "timeout", "none"]


@dataclass(frozen=True, slots=True)
class PlayedFrame:
    """One frame of bridge audio as the caller got it: chan_websocket's playout tick, or AudioSocket arrival.

    `t` is call-time seconds; `tick` is the 20 ms slot it occupies on the caller's timeline (for
    chan_websocket exactly the playout tick; for AudioSocket the slot of its arrival, pushed later if
    the previous frame still occupies it); `size` is its length in leg bytes.
    """

    t: float
    tick: int
    size: int


@dataclass(slots=True)
class ArrivalStats:
    """Inter-arrival times of the bridge's audio messages (what a jitter buffer would see).

    bursts: places where 3 messages arrived within one 20 ms window (informative: a stall of our own
    event loop can produce them too). max_lead_ms: the most audio that had arrived ahead of real time,
    playing each message at its arrival or right after the previous one; a paced stream stays near one
    frame (20 ms), a burst shows up as a large lead. Only computed when durations are given.
    grid_p95_ms / grid_max_ms: how far arrivals sit from one drift-free `ptime` grid for the whole call
    (its phase fitted to all arrivals; each arrival's distance to the nearest grid point). Silence and
    whole-frame gaps do not count; a sender that re-anchors its clock or drifts shows up here.
    """

    mean_ms: float | None = None
    stdev_ms: float | None = None
    max_gap_ms: float | None = None
    gaps_over_40ms: int = 0
    bursts: int = 0
    max_lead_ms: float | None = None
    grid_p95_ms: float | None = None
    grid_max_ms: float | None = None

    @classmethod
    def of(
        cls, times: list[float], durations: list[float] | None = None, ptime: float = 0.020
    ) -> ArrivalStats:
        """`times` and `durations` in call-time seconds."""
        lead: float | None = None
        if durations:
            play_end = lead = 0.0
            for t, d in zip(times, durations, strict=True):
                play_end = max(play_end, t) + d
                lead = max(lead, play_end - t)
            lead = round(lead * 1000, 1)
        if len(times) < 2:
            return cls(max_lead_ms=lead)
        deltas = [b - a for a, b in itertools.pairwise(times)]
        off_grid = grid_deviations(times, ptime)
        return cls(
            mean_ms=round(statistics.fmean(deltas) * 1000, 3),
            stdev_ms=round(statistics.pstdev(deltas) * 1000, 3),
            max_gap_ms=round(max(deltas) * 1000, 3),
            gaps_over_40ms=sum(1 for d in deltas if d > 2 * ptime),
            bursts=sum(1 for a, c in zip(times, times[2:], strict=False) if c - a < ptime),
            max_lead_ms=lead,
            grid_p95_ms=round(float(np.percentile(off_grid, 95)) * 1000, 3),
            grid_max_ms=round(float(off_grid.max()) * 1000, 3),
        )


def grid_deviations(times: list[float], ptime: float = 0.020) -> npt.NDArray[np.float64]:
    """|distance| of each time to the nearest point of the `ptime` grid that fits them best (the phase
    is their circular mean, so no single early or late arrival defines it)."""
    t = np.asarray(times, dtype=np.float64)
    angle = 2 * np.pi * (t - t[0]) / ptime
    phase = float(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())) / (2 * np.pi) * ptime
    offset = (t - t[0] - phase) / ptime
    deviation: npt.NDArray[np.float64] = np.abs(offset - np.round(offset)) * ptime
    return deviation


@dataclass(slots=True)
class CallSummary:
    """The outcome of one simulated call.

    first_audio_latency_ms: call time from the first caller frame sent (tick 0, right after MEDIA_START or
      the AudioSocket UUID) to the first bridge frame played to the caller (chan_websocket: the playout
      tick that dequeued it, so it includes Asterisk's queueing; AudioSocket: its arrival). None if the
      bridge sent no audio. first_audio_arrival_ms is the same up to the first binary message received.
    frames_received: frames played to the caller (chan_websocket: dequeued by the playout timer;
      AudioSocket: audio messages received). bytes_received counts every binary byte the bridge sent.
    errors: one line per event Asterisk would punish (dropped audio, ignored or rejected commands, 1009
      close...), capped at 200 lines; error_counts has the exact totals by code.
    received_stream: the same audio back to back, without the silence of ticks where nothing played (the
      content the bridge sent, whatever its timing; compare it with what the caller said).
    received_audio: what the caller heard, s16le mono at `sample_rate`, laid on the call timeline (tick k
      starts at sample k * samples-per-20ms; silence where nothing played).
    """

    transport: str
    format: str
    control: str
    call_id: str
    channel_id: str = ""
    sample_rate: int = 8000
    duration_s: float = 0.0
    frames_sent: int = 0
    bytes_sent: int = 0
    frames_received: int = 0
    bytes_received: int = 0
    messages_received: int = 0
    message_sizes: dict[int, int] = field(default_factory=dict)
    first_audio_latency_ms: float | None = None
    first_audio_arrival_ms: float | None = None
    barge_ins: int = 0
    flushes: int = 0
    frames_flushed: int = 0
    commands: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    max_queue_depth: int = 0
    xoff_count: int = 0
    xon_count: int = 0
    marks_processed: list[str] = field(default_factory=list)
    marks_flushed: list[str] = field(default_factory=list)
    buffering_completed: list[str] = field(default_factory=list)
    frames_queued_at_hangup: int = 0
    dtmf_sent: str = ""
    hangup_by: HangupBy = "none"
    close_code: int | None = None
    close_reason: str = ""
    arrival: ArrivalStats = field(default_factory=ArrivalStats)
    played: list[PlayedFrame] = field(default_factory=list)
    records: list[PeerRecord] = field(default_factory=list)
    received_audio: bytes = b""
    received_stream: bytes = b""

    @property
    def ok(self) -> bool:
        return not self.error_counts

    def write_wav(self, path: str | Path) -> None:
        write_wav(path, self.received_audio, self.sample_rate)

    def to_dict(self) -> dict[str, object]:
        """Everything except the audio, the per-frame list and the journal (those can be large)."""
        data = asdict(self)
        for key in ("received_audio", "received_stream", "played", "records"):
            data.pop(key)
        data["message_sizes"] = {str(k): v for k, v in self.message_sizes.items()}
        data["ok"] = self.ok
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=False)

    def to_text(self) -> str:
        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f} ms"

        lines = [
            f"call {self.call_id} via {self.transport} ({self.format}, {self.control}), "
            f"{self.duration_s:.1f} s, hung up by {self.hangup_by}"
            + (
                f" (close {self.close_code}{' ' + self.close_reason if self.close_reason else ''})"
                if self.close_code is not None
                else ""
            ),
            f"  sent      {self.frames_sent} frames ({self.bytes_sent} bytes)"
            + (f", DTMF {self.dtmf_sent}" if self.dtmf_sent else ""),
            f"  received  {self.frames_received} frames played, {self.messages_received} messages, "
            f"{self.bytes_received} bytes",
            f"  latency   first audio played {ms(self.first_audio_latency_ms)}, "
            f"first arrival {ms(self.first_audio_arrival_ms)}",
            f"  arrival   mean {ms(self.arrival.mean_ms)}, jitter {ms(self.arrival.stdev_ms)}, "
            f"max gap {ms(self.arrival.max_gap_ms)}, gaps>40ms {self.arrival.gaps_over_40ms}, "
            f"bursts {self.arrival.bursts}"
            + (f", max lead {ms(self.arrival.max_lead_ms)}" if self.arrival.max_lead_ms is not None else "")
            + (
                f", off the 20 ms grid p95 {self.arrival.grid_p95_ms:.1f} ms"
                if self.arrival.grid_p95_ms is not None
                else ""
            ),
        ]
        if self.transport == "chan_websocket":
            lines.append(
                f"  queue     max {self.max_queue_depth} frames, "
                f"XOFF {self.xoff_count}, XON {self.xon_count}, "
                f"flushes {self.flushes} (barge-ins {self.barge_ins}, {self.frames_flushed} frames cut), "
                f"marks {len(self.marks_processed)} processed / {len(self.marks_flushed)} flushed"
            )
            cmds = ", ".join(f"{k} {v}" for k, v in sorted(self.commands.items())) or "none"
            lines.append(f"  commands  {cmds}")
        verdict = "OK: no errors" if self.ok else f"ERRORS: {sum(self.error_counts.values())}"
        lines.append(f"  result    {verdict}")
        for code, count in sorted(self.error_counts.items()):
            lines.append(f"    {code} x{count}")
        lines.extend(f"    {line}" for line in self.errors[:10])
        if len(self.errors) > 10:
            lines.append(f"    ... {len(self.errors) - 10} more")
        lines.extend(f"  warning   {w}" for w in self.warnings)
        return "\n".join(lines)


class Timeline:
    """Lays frames the caller hears onto 20 ms slots of the call timeline, as s16 PCM."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.fmt = fmt
        self.samples_per_frame = fmt.frame_bytes // fmt.bytes_per_sample
        self._chunks: list[tuple[int, bytes]] = []
        self._next_free = 0
        self.played: list[PlayedFrame] = []

    def at_tick(self, tick: int, t: float, data: bytes) -> None:
        self._chunks.append((tick * self.samples_per_frame, data))
        self.played.append(PlayedFrame(round(t, 4), tick, len(data)))

    def arriving(self, t_ticks: float, t: float, data: bytes) -> None:
        """A frame with no playout clock (AudioSocket): right after the previous one when it arrives
        within half a frame of that (a phone's jitter buffer absorbs that much), else at its own slot."""
        slot = round(t_ticks * self.samples_per_frame)
        on_time = abs(slot - self._next_free) < self.samples_per_frame // 2
        start = self._next_free if on_time else max(slot, self._next_free)
        nsamples = len(data) // self.fmt.bytes_per_sample
        self._next_free = start + nsamples
        self._chunks.append((start, data))
        self.played.append(PlayedFrame(round(t, 4), start // self.samples_per_frame, len(data)))

    def stream(self) -> bytes:
        """Every frame heard, in order, back to back (s16le)."""
        return b"".join(decode_from_leg(data, self.fmt).tobytes() for _, data in self._chunks)

    def pcm(self) -> bytes:
        if not self._chunks:
            return b""
        decoded = [(start, decode_from_leg(data, self.fmt)) for start, data in self._chunks]
        total = max(start + len(s) for start, s in decoded)
        out = np.zeros(total, dtype="<i2")
        for start, samples in decoded:
            out[start : start + len(samples)] = samples
        return out.tobytes()
