"""Call records as plain values: what a call was, said and cost. Pure: no I/O, no clocks.

Records are frozen; the session layer builds a new one with `dataclasses.replace` (or
`with_line`) at each change and hands it to the store, which keeps the latest version.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, cast

Role = Literal["caller", "bot"]
Direction = Literal["inbound", "outbound"]

ROLES: frozenset[str] = frozenset({"caller", "bot"})
DIRECTIONS: frozenset[str] = frozenset({"inbound", "outbound"})
STATUSES: frozenset[str] = frozenset({"pending", "dialing", "connecting", "active", "ended", "failed"})
AMD_RESULTS: frozenset[str] = frozenset({"human", "machine", "unknown"})
GUARDS: frozenset[str] = frozenset({"max_call_seconds", "caller_silence"})
TERMINAL_STATUSES: frozenset[str] = frozenset({"ended", "failed"})

# Timestamps must be representable as ISO-8601 strings (years 1970..9999).
_MAX_EPOCH = 253_402_300_799.0  # 9999-12-31T23:59:59Z; stays in range after rounding


def iso_utc(epoch: float | None) -> str | None:
    """Epoch seconds as `2024-05-01T12:00:00.250Z`, or None."""
    if epoch is None:
        return None
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _check_epoch(name: str, value: float | None) -> None:
    if value is not None and not (0.0 <= value < _MAX_EPOCH):
        raise ValueError(f"{name} must be epoch seconds between 1970 and 9999, got {value!r}")


def _check_finite(name: str, value: float | None) -> None:
    # SQLite stores NaN as NULL and JSON cannot carry it: refuse it at the source.
    if value is not None and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


def _plain(value: str) -> str:
    # StrEnum members (session.state.CallState, EndedBy) become their plain string value.
    return str(value) if isinstance(value, str) and type(value) is not str else value


@dataclass(frozen=True, slots=True, kw_only=True)
class TranscriptLine:
    role: Role
    text: str
    at: float  # epoch seconds
    truncated: bool = False  # the caller barged in; `text` is what was heard (or generated) until then

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"transcript role must be 'caller' or 'bot', got {self.role!r}")
        _check_epoch("at", self.at)

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "at": self.at, "truncated": self.truncated}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TranscriptLine:
        return cls(
            role=cast(Role, data["role"]),
            text=str(data["text"]),
            at=float(data["at"]),
            truncated=bool(data.get("truncated", False)),
        )

    def to_api(self) -> dict[str, Any]:
        return {"role": self.role, "text": self.text, "at": iso_utc(self.at), "truncated": self.truncated}


@dataclass(frozen=True, slots=True)
class ModelSegment:
    """One model's part of a call: a failover ends one segment and starts the next."""

    provider: str
    model: str
    started_at: float  # epoch seconds
    ended_at: float | None = None
    ended_because: str | None = None  # the error code that handed the call on (None: the call ended)

    def __post_init__(self) -> None:
        _check_epoch("started_at", self.started_at)
        _check_epoch("ended_at", self.ended_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "ended_because": self.ended_because,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSegment:
        ended_at = data.get("ended_at")
        because = data.get("ended_because")
        return cls(
            provider=str(data["provider"]),
            model=str(data.get("model", "")),
            started_at=float(data["started_at"]),
            ended_at=float(ended_at) if ended_at is not None else None,
            ended_because=str(because) if because is not None else None,
        )

    def to_api(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "started_at": iso_utc(self.started_at),
            "ended_at": iso_utc(self.ended_at),
            "ended_because": self.ended_because,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Token and transcription usage of one call (or one response; they add up)."""

    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    transcription_input_tokens: int = 0
    transcription_output_tokens: int = 0
    transcription_seconds: float = 0.0
    responses: int = 0
    model_seconds: float = 0.0  # time connected to a model that bills by the minute

    def __post_init__(self) -> None:
        _check_finite("transcription_seconds", self.transcription_seconds)
        _check_finite("model_seconds", self.model_seconds)

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(Usage)}
        )

    def add(self, other: Usage) -> Usage:
        """`self + other`, spelled out for call sites that read better with a verb."""
        return self + other

    def to_dict(self) -> dict[str, int | float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Usage)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Missing keys count as zero and unknown keys are ignored, so stored rows survive field changes."""
        return cls(
            input_text_tokens=int(data.get("input_text_tokens", 0)),
            input_audio_tokens=int(data.get("input_audio_tokens", 0)),
            input_cached_tokens=int(data.get("input_cached_tokens", 0)),
            output_text_tokens=int(data.get("output_text_tokens", 0)),
            output_audio_tokens=int(data.get("output_audio_tokens", 0)),
            transcription_input_tokens=int(data.get("transcription_input_tokens", 0)),
            transcription_output_tokens=int(data.get("transcription_output_tokens", 0)),
            transcription_seconds=float(data.get("transcription_seconds", 0.0)),
            responses=int(data.get("responses", 0)),
            model_seconds=float(data.get("model_seconds", 0.0)),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    call_id: str
    company_id: str
    direction: Direction
    from_number: str
    to_number: str
    created_at: float  # epoch seconds; the store orders and filters on it
    caller_name: str | None = None
    call_objective: str | None = None
    status: str = "pending"  # one of STATUSES; plain str so session.state.CallState members fit
    disconnected_by: str | None = None
    error_code: str | None = None
    dial_outcome: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    # When this version of the record was taken: a call a crash interrupted ends here on restart.
    updated_at: float | None = None
    duration_seconds: float = 0.0
    transcript: tuple[TranscriptLine, ...] = ()
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    provider: str = ""
    model: str = ""
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    barge_ins: int = 0
    played_ms_estimated: bool = False
    variables: Mapping[str, str] = field(default_factory=dict)
    transferred_to: str | None = None
    dtmf: str = ""  # the caller's keys, as pressed (masked as * when the agent marks them sensitive)
    amd_result: str | None = None  # human | machine | unknown; None: no answering-machine detection
    ended_by_guard: str | None = None  # max_call_seconds | caller_silence
    agent_id: str | None = None  # None: the company's default agent
    task_id: str | None = None  # the scheduled task that placed the call
    # Which model served which part of the call (more than one after a failover), in order.
    model_segments: tuple[ModelSegment, ...] = ()

    def __post_init__(self) -> None:
        # Slots + frozen: normalise through object.__setattr__ (runs once per record).
        object.__setattr__(self, "status", _plain(self.status))
        if self.disconnected_by is not None:
            object.__setattr__(self, "disconnected_by", _plain(self.disconnected_by))
        if not isinstance(self.transcript, tuple):
            object.__setattr__(self, "transcript", tuple(self.transcript))
        if not isinstance(self.model_segments, tuple):
            object.__setattr__(self, "model_segments", tuple(self.model_segments))
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'inbound' or 'outbound', got {self.direction!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {sorted(STATUSES)}, got {self.status!r}")
        if not self.call_id or not self.company_id:
            raise ValueError("call_id and company_id must not be empty")
        for name in ("created_at", "answered_at", "ended_at", "updated_at"):
            _check_epoch(name, getattr(self, name))
        _check_finite("duration_seconds", self.duration_seconds)
        _check_finite("cost_usd", self.cost_usd)
        if self.amd_result is not None and self.amd_result not in AMD_RESULTS:
            raise ValueError(f"amd_result must be one of {sorted(AMD_RESULTS)}, got {self.amd_result!r}")
        if self.ended_by_guard is not None and self.ended_by_guard not in GUARDS:
            raise ValueError(f"ended_by_guard must be one of {sorted(GUARDS)}, got {self.ended_by_guard!r}")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def with_line(self, line: TranscriptLine) -> CallRecord:
        return dataclasses.replace(self, transcript=(*self.transcript, line))

    def to_api(self) -> dict[str, Any]:
        """The call as the HTTP API shows it (the transcript has its own endpoint)."""
        return {
            "call_id": self.call_id,
            "company_id": self.company_id,
            "direction": self.direction,
            "from": self.from_number,
            "to": self.to_number,
            "caller_name": self.caller_name,
            "call_objective": self.call_objective,
            "status": self.status,
            "disconnected_by": self.disconnected_by,
            "error_code": self.error_code,
            "dial_outcome": self.dial_outcome,
            "created_at": iso_utc(self.created_at),
            "answered_at": iso_utc(self.answered_at),
            "ended_at": iso_utc(self.ended_at),
            "duration_seconds": self.duration_seconds,
            "usage": self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "provider": self.provider,
            "model": self.model,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "drops": self.drops,
            "barge_ins": self.barge_ins,
            "played_ms_estimated": self.played_ms_estimated,
            "transcript_lines": len(self.transcript),
            "transferred_to": self.transferred_to,
            "dtmf": self.dtmf,
            "amd_result": self.amd_result,
            "ended_by_guard": self.ended_by_guard,
            "agent_id": self.agent_id,
            "task_id": self.task_id,
            "models": [segment.to_api() for segment in self.model_segments],
        }

    def transcript_api(self) -> list[dict[str, Any]]:
        return [line.to_api() for line in self.transcript]


MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class CallQuery:
    """One page of a company's calls, newest first. `since` is inclusive, `until` exclusive."""

    company_id: str
    status: str | None = None
    direction: str | None = None
    amd_result: str | None = None
    agent_id: str | None = None
    task_id: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.status is not None:
            object.__setattr__(self, "status", _plain(self.status))
            if self.status not in STATUSES:
                raise ValueError(f"status must be one of {sorted(STATUSES)}, got {self.status!r}")
        if self.direction is not None and self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'inbound' or 'outbound', got {self.direction!r}")
        if self.amd_result is not None and self.amd_result not in AMD_RESULTS:
            raise ValueError(f"amd_result must be one of {sorted(AMD_RESULTS)}, got {self.amd_result!r}")
        if not 0 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 0 and {MAX_LIMIT}, got {self.limit}")
        if self.offset < 0:
            raise ValueError(f"offset must not be negative, got {self.offset}")
        _check_finite("since", self.since)
        _check_finite("until", self.until)


# Run on the store's writer thread with its connection, inside the transaction that saves a record:
# rows that must commit with the record (the webhook outbox's events) or not at all.
StoreWrite = Callable[[Any], None]


class CallStore(Protocol):
    """What the session layer needs from a store (`store.base.Store` is the whole interface)."""

    async def save(self, record: CallRecord, *, also: StoreWrite | None = None) -> None: ...

    async def get(self, company_id: str, call_id: str) -> CallRecord | None: ...

    async def list(self, query: CallQuery) -> tuple[list[CallRecord], int]: ...

    async def call_exists(self, call_id: str) -> bool:
        """Whether any company has a record with this call id, in any state."""
        ...

    async def mark_interrupted(self, now: float) -> int: ...

    async def close(self) -> None: ...
