"""Call setup under a burst: how long the webhook and the media-socket upgrade took, against the line
Asterisk draws (chan_websocket's `connection_timeout`, 500 ms: an upgrade not done by then is abandoned).

Pure: per-call records from the load generator in, statistics out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.stats import Dist

# Failure kinds of a call whose upgrade did not finish in time (bench.loadgen writes them).
LATE_KINDS = frozenset({"upgrade_timeout", "upgrade_late"})


def failure_kind(failure: object) -> str:
    """`kind: detail` -> `kind`."""
    return str(failure).split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class BurstStats:
    """webhook: POST sent to status line received; upgrade: TCP connect + HTTP upgrade until the 101 is
    in; setup: both (per call, over the calls that completed both). `late` calls missed the line (or
    timed out at it) and are among `failed`; `spread_ms` is how long placing them all took."""

    placed: int
    failed: int
    late: int
    spread_ms: float | None
    webhook_ms: Dist
    upgrade_ms: Dist
    setup_ms: Dist
    line_ms: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "placed": self.placed,
            "failed": self.failed,
            "late": self.late,
            "spread_ms": self.spread_ms,
            "webhook_ms": self.webhook_ms.to_dict(),
            "upgrade_ms": self.upgrade_ms.to_dict(),
            "setup_ms": self.setup_ms.to_dict(),
            "line_ms": self.line_ms,
        }


def is_late(record: Mapping[str, Any], line_ms: float) -> bool:
    if record.get("failure") and failure_kind(record["failure"]) in LATE_KINDS:
        return True
    upgrade = record.get("upgrade_ms")
    return upgrade is not None and float(upgrade) > line_ms


def burst_stats(records: Sequence[Mapping[str, Any]], line_ms: float) -> BurstStats:
    launched = [float(r["launched"]) for r in records if r.get("launched") is not None]
    webhook = [float(r["webhook_ms"]) for r in records if r.get("webhook_ms") is not None]
    upgrade = [
        float(r["upgrade_ms"]) for r in records if r.get("upgrade_ms") is not None and not is_late(r, line_ms)
    ]
    setup = [
        float(r["webhook_ms"]) + float(r["upgrade_ms"])
        for r in records
        if r.get("webhook_ms") is not None and r.get("upgrade_ms") is not None and not is_late(r, line_ms)
    ]
    late = sum(1 for r in records if is_late(r, line_ms))
    failed = sum(1 for r in records if r.get("failure") or is_late(r, line_ms))
    spread = (max(launched) - min(launched)) * 1000 if launched else None
    return BurstStats(
        placed=len(records),
        failed=failed,
        late=late,
        spread_ms=None if spread is None else round(spread, 1),
        webhook_ms=Dist.of(webhook),
        upgrade_ms=Dist.of(upgrade),
        setup_ms=Dist.of(setup),
        line_ms=line_ms,
    )
