"""One call: its identity, its life-cycle state, its counters and its end.

The task that owns the call's media (once a socket attaches) runs it; everyone
else (webhooks, the API, shutdown) only *asks* it to end through `request_end`,
and the owner decides how (drain the goodbye, then hang up). A call without an
owner yet (pending) ends at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from bridge.session.control import ChannelRef
from bridge.session.metrics import TransitTally
from bridge.session.state import CallEvent, CallState, EndedBy, Transition, next_state
from bridge.store.records import CallRecord, ModelSegment, TranscriptLine, Usage

Direction = Literal["inbound", "outbound"]
MAX_RESPONSE_LATENCIES = 1000  # per call: enough for any real conversation, bounded for a stuck one


@dataclass(frozen=True, slots=True)
class CallInfo:
    call_id: str
    company_id: str
    direction: Direction
    caller: str
    called: str
    caller_name: str = ""
    websocket_url: str = ""
    # Outbound calls: what the bot is calling for, what it says first, and template variables.
    call_objective: str = ""
    first_message: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    amd: bool = False  # the outbound request asked for answering-machine detection
    agent_id: str = ""  # the company's agent running the call ("": the company's default agent)
    task_id: str = ""  # the scheduled task that placed this outbound call
    # Where this call's webhook events go besides the company's own (a task's `webhook_url`/`webhook_events`).
    webhook_url: str = ""
    webhook_events: tuple[str, ...] = ()


@dataclass(slots=True)
class CallStats:
    frames_in: int = 0
    frames_out: int = 0
    drops: int = 0
    protocol_errors: int = 0
    played_ms_estimated: bool = False  # playout position guessed from the send clock (no marks)


# Reads a running call's media counters where they live (its leg), at the moment of asking.
CounterReader = Callable[[], CallStats]


@dataclass(slots=True)
class EndRequest:
    by: EndedBy
    error_code: str | None = None
    failed: bool = False
    # The caller leaves for this target instead of being hung up (a transfer; see CallRunner).
    transfer_to: str | None = None
    guard: str | None = None  # the guard that ended the call: max_call_seconds | caller_silence
    cancelled: bool = False  # POST /cancel: hang up at once (no drain) and fail the call, whatever its state


@dataclass(frozen=True, slots=True)
class SayRequest:
    """The API asks the bot to speak `text` now (`interrupt`: cut what it is saying) or after it."""

    text: str
    interrupt: bool = False


SessionListener = Callable[["Session"], None]
# A transcript line was added (or, at the same index, replaced: a barge-in cut it).
LineListener = Callable[["Session", int, TranscriptLine], None]


@dataclass(eq=False)
class Session:
    info: CallInfo
    created_at: float = field(default_factory=time.time)
    state: CallState = CallState.PENDING
    connected_at: float | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    disconnected_by: EndedBy | None = None
    error_code: str | None = None
    stats: CallStats = field(default_factory=CallStats)
    end_request: EndRequest | None = None
    has_owner: bool = False
    barge_ins: int = 0
    dtmf_digits: str = ""  # every key the caller pressed, masked as * when the agent marks them sensitive
    amd_result: str | None = None  # human | machine | unknown (None: no detection on this call)
    ended_by_guard: str | None = None  # max_call_seconds | caller_silence
    speaks_text: bool = False  # the call's model can say a given text (POST /say); set by the runner
    media_channel: str = ""  # Asterisk's name for the media channel (MEDIA_START), for call control
    provider: str = ""
    model: str = ""
    model_segments: list[ModelSegment] = field(default_factory=list)  # one per model that served the call
    transcript: list[TranscriptLine] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    # The same usage per (provider, model) that served the call (a failover adds one): the usage rows.
    usage_by_model: dict[tuple[str, str], tuple[Usage, float | None]] = field(default_factory=dict)
    dial_outcome: str | None = None
    transferred_to: str | None = None
    handed_off: bool = False  # another node of the fleet took this pending call over; nothing more is ours
    model_reconnects: int = 0
    first_audio_s: float | None = None  # media attached -> first model audio handed to the leg
    response_latencies_s: list[float] = field(default_factory=list)  # caller stopped -> reply audio
    # Time frames spend inside the bridge, each way (observed by the runner, exported by the manager).
    uplink_latency: TransitTally = field(default_factory=TransitTally)
    downlink_latency: TransitTally = field(default_factory=TransitTally)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    end_requested: asyncio.Event = field(default_factory=asyncio.Event)
    # Wakes the runner's control lane: an end or a say request (the runner also uses it for its own timers).
    control_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    say_requests: deque[SayRequest] = field(default_factory=deque)
    _listeners: list[SessionListener] = field(default_factory=list)
    _change_listeners: list[SessionListener] = field(default_factory=list)
    _line_listeners: list[LineListener] = field(default_factory=list)
    _line_items: dict[str, int] = field(default_factory=dict)  # provider item id -> transcript index
    _read_counters: CounterReader | None = None  # set while a media leg runs the call

    @property
    def call_id(self) -> str:
        return self.info.call_id

    @property
    def company_id(self) -> str:
        return self.info.company_id

    def on_end(self, listener: SessionListener) -> None:
        self._listeners.append(listener)

    def on_change(self, listener: SessionListener) -> None:
        """Called after every state change (the end included), e.g. to persist the record."""
        self._change_listeners.append(listener)

    def on_line(self, listener: LineListener) -> None:
        """Called for each transcript line as it is added or replaced (the live event stream)."""
        self._line_listeners.append(listener)

    def read_counters_from(self, reader: CounterReader) -> None:
        """While media flows its counters live in the leg: `record()` reads them there, so a live
        call's API view and checkpoints are current. `finish` keeps their final values."""
        if not self.state.is_terminal:
            self._read_counters = reader

    @property
    def live_stats(self) -> CallStats:
        """The media counters now: read from the leg while it runs, `stats` once the call is over."""
        return self._read_counters() if self._read_counters is not None else self.stats

    def channel_ref(self) -> ChannelRef:
        """How call control finds this call's channels in Asterisk."""
        return ChannelRef(self.call_id, self.info.direction == "outbound", self.media_channel)

    def _apply(self, event: CallEvent) -> Transition:
        transition = next_state(self.state, event)
        self.state = transition.after
        if transition.changed and not transition.after.is_terminal:
            self._changed()
        return transition

    def _changed(self) -> None:
        for listener in self._change_listeners:
            listener(self)

    def add_line(
        self, role: Literal["caller", "bot"], text: str, *, item_id: str = "", truncated: bool = False
    ) -> None:
        """A finished transcript line; a later line for the same model item replaces it (barge-in cuts)."""
        index = self._line_items.get(item_id) if item_id else None
        if index is not None:
            at = self.transcript[index].at
            self.transcript[index] = TranscriptLine(role=role, text=text, at=at, truncated=truncated)
        else:
            index = len(self.transcript)
            if item_id:
                self._line_items[item_id] = index
            self.transcript.append(TranscriptLine(role=role, text=text, at=time.time(), truncated=truncated))
        for listener in self._line_listeners:
            listener(self, index, self.transcript[index])

    def ask_to_say(self, text: str, *, interrupt: bool) -> None:
        """Queue a message for the bot to speak (the runner checks it is still running and can)."""
        self.say_requests.append(SayRequest(text, interrupt))
        self.control_waiting.set()

    def add_usage(self, usage: Usage, cost_usd: float | None) -> None:
        self.usage = self.usage + usage
        if cost_usd is not None:
            self.cost_usd = round((self.cost_usd or 0.0) + cost_usd, 6)
        key = (self.provider, self.model)
        so_far, cost = self.usage_by_model.get(key, (Usage(), None))
        if cost_usd is not None:
            cost = round((cost or 0.0) + cost_usd, 6)
        self.usage_by_model[key] = (so_far + usage, cost)

    def add_response_latency(self, seconds: float) -> None:
        if len(self.response_latencies_s) < MAX_RESPONSE_LATENCIES:
            self.response_latencies_s.append(seconds)

    def attach_owner(self) -> None:
        """A media socket now owns the call (raises InvalidTransition if it is not pending)."""
        self._apply(CallEvent.MEDIA_ATTACHED)
        self.has_owner = True
        self.connected_at = time.time()

    def mark_active(self) -> None:
        if self._apply(CallEvent.MODEL_READY).changed:
            self.answered_at = time.time()

    def request_end(
        self,
        by: EndedBy,
        error_code: str | None = None,
        *,
        failed: bool = False,
        transfer_to: str | None = None,
        cancelled: bool = False,
    ) -> None:
        """Ask the call to end (`failed`: it never became a conversation; `cancelled`: at once, and it
        fails whatever it became). The first request wins."""
        if self.state.is_terminal or self.end_request is not None:
            return
        if transfer_to is not None:
            self.transferred_to = transfer_to
        self.end_request = EndRequest(by, error_code, failed, transfer_to, cancelled=cancelled)
        self.end_requested.set()
        self.control_waiting.set()
        if not self.has_owner:
            self.finish(by, error_code, failed=failed or cancelled)

    def finish(self, by: EndedBy, error_code: str | None = None, *, failed: bool = False) -> None:
        """Record the end. Called by the owner once teardown is done (or directly when there is none)."""
        if not self._apply(CallEvent.FAIL if failed else CallEvent.END).changed:
            return
        if self._read_counters is not None:
            self.stats, self._read_counters = self._read_counters(), None
        self.ended_at = time.time()
        self.disconnected_by = by
        self.error_code = error_code
        self.ended.set()
        self.end_requested.set()
        self.control_waiting.set()
        for listener in self._listeners:
            listener(self)
        self._changed()

    def hand_off(self) -> None:
        """Another node of the fleet now runs this pending call: end it here WITHOUT a record, an event
        or a webhook of its own (its listeners of changes and lines are dropped first; those of its end
        see `handed_off` and let go)."""
        if self.state.is_terminal:
            return
        self.handed_off = True
        self._change_listeners.clear()
        self._line_listeners.clear()
        self.finish(EndedBy.ERROR, "handed_off", failed=True)

    def begin_model(self, provider: str, model: str) -> None:
        """`provider` (its `model`) serves the call from now on."""
        self.provider, self.model = provider, model
        self.model_segments.append(ModelSegment(provider, model, started_at=time.time()))

    def end_model(self, because: str | None) -> None:
        """The current model's part ended (`because`: the error code that hands the call on)."""
        if self.model_segments and self.model_segments[-1].ended_at is None:
            last = self.model_segments[-1]
            self.model_segments[-1] = dataclasses.replace(last, ended_at=time.time(), ended_because=because)

    def model_refused(self, provider: str, model: str, code: str) -> None:
        """A fallback that could not even be built (its part is empty; the serving model stays named)."""
        now = time.time()
        self.model_segments.append(ModelSegment(provider, model, now, ended_at=now, ended_because=code))

    def _segments_at(self) -> list[ModelSegment]:
        segments = self.model_segments
        if not segments or segments[-1].ended_at is not None or self.ended_at is None:
            return segments  # a live call's current model has no end yet
        return [*segments[:-1], dataclasses.replace(segments[-1], ended_at=self.ended_at)]

    @property
    def duration_seconds(self) -> float:
        return self._duration_at(time.time())

    def _duration_at(self, now: float) -> float:
        if self.connected_at is None:
            return 0.0
        return round((self.ended_at or now) - self.connected_at, 3)

    def record(self, now: float | None = None) -> CallRecord:
        """The call as stored and as the API shows it (no secrets, no audio), taken at `now`.

        A live call shows its duration so far and its media counters as the leg has them; the record
        carries `now` (epoch seconds, default the current time) as `updated_at`.
        """
        if now is None:
            now = time.time()
        info, stats = self.info, self.live_stats
        return CallRecord(
            call_id=info.call_id,
            company_id=info.company_id,
            direction=info.direction,
            from_number=info.caller,
            to_number=info.called,
            caller_name=info.caller_name or None,
            call_objective=info.call_objective or None,
            status=self.state.value,
            disconnected_by=self.disconnected_by.value if self.disconnected_by else None,
            error_code=self.error_code,
            dial_outcome=self.dial_outcome,
            created_at=self.created_at,
            answered_at=self.answered_at,
            ended_at=self.ended_at,
            updated_at=now,
            duration_seconds=self._duration_at(now),
            transcript=tuple(self.transcript),
            usage=self.usage,
            cost_usd=self.cost_usd,
            provider=self.provider,
            model=self.model,
            frames_in=stats.frames_in,
            frames_out=stats.frames_out,
            drops=stats.drops,
            barge_ins=self.barge_ins,
            played_ms_estimated=stats.played_ms_estimated,
            variables=dict(info.variables),
            transferred_to=self.transferred_to,
            dtmf=self.dtmf_digits,
            amd_result=self.amd_result,
            ended_by_guard=self.ended_by_guard,
            agent_id=info.agent_id or None,
            task_id=info.task_id or None,
            model_segments=tuple(self._segments_at()),
        )
