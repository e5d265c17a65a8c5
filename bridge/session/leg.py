"""The Asterisk side of a call as the session sees it, whatever the transport.

chan_websocket and AudioSocket drivers implement `MediaLeg`; the session never
touches sockets or wire formats, only this surface.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from bridge.audio.formats import AudioFormat
from bridge.session.session import EndRequest


@dataclass(frozen=True, slots=True)
class AudioIn:
    """Caller audio in the leg's format; `received_at`: event-loop time it was read from Asterisk."""

    data: bytes
    received_at: float | None = None


@dataclass(frozen=True, slots=True)
class DtmfIn:
    digit: str


LegInput: TypeAlias = AudioIn | DtmfIn

# The session's taker of caller audio as it is read: (data, received_at) -> taken (else it is queued).
CallerAudioTaker: TypeAlias = Callable[[bytes, float | None], bool]


class LegGone(Exception):
    """The peer went away before the leg started (no format was ever announced)."""


@dataclass(frozen=True, slots=True)
class LegStats:
    frames_in: int
    frames_out: int
    drops: int
    protocol_errors: int
    played_ms_estimated: bool


class LegInbox:
    """The receiving half every transport driver shares: start, caller input (bounded), and the end.

    Drivers feed it from their read loop; the session reads it through the `MediaLeg` methods.
    """

    def __init__(self, limit: int) -> None:
        self._items: asyncio.Queue[LegInput | None] = asyncio.Queue(limit)
        self._started = asyncio.Event()
        self._gone = asyncio.Event()
        self.format: AudioFormat | None = None
        self.closing_reason: EndRequest | None = None  # why reading stopped (set by the driver)
        self.drops = 0
        self.take: CallerAudioTaker | None = None
        # What the dialplan passed with the call: the media URI's query (`v()` parameters) and MEDIA_START
        # `channel_variables`. The driver adds them; the session reads e.g. `amd` (see MediaLeg).
        self.variables: dict[str, str] = {}

    def start(self, fmt: AudioFormat, variables: Mapping[str, str] | None = None) -> None:
        """The peer announced its format (and, with chan_websocket JSON, its channel variables)."""
        self.format = fmt
        if variables:
            self.variables.update(variables)
        self._started.set()

    def deliver_audio(self, data: bytes, received_at: float | None) -> None:
        """Caller audio: offered to the session's `take` first (see `MediaLeg.on_caller_audio`), queued
        if it declines or anything is queued already (order is kept)."""
        take = self.take
        if take is None or not self._items.empty() or not take(data, received_at):
            self.deliver(AudioIn(data, received_at))

    def deliver(self, item: LegInput) -> None:
        """Hand caller input to the session; a stalled session loses input, memory does not grow."""
        try:
            self._items.put_nowait(item)
        except asyncio.QueueFull:
            self.drops += 1

    def close(self, default: EndRequest) -> None:
        """The peer is gone: wake every waiter and end the input stream."""
        if self.closing_reason is None:
            self.closing_reason = default
        self._gone.set()
        self._started.set()
        with contextlib.suppress(asyncio.QueueFull):
            self._items.put_nowait(None)

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def wait_gone(self) -> None:
        await self._gone.wait()

    async def wait_started(self) -> AudioFormat:
        await self._started.wait()
        if self.format is None:
            raise LegGone("the peer left before announcing its audio format")
        return self.format

    async def items(self) -> AsyncIterator[LegInput]:
        while (item := await self._items.get()) is not None:
            yield item

    @property
    def end_reason(self) -> EndRequest | None:
        return self.closing_reason if self._gone.is_set() else None


class InboxLeg:
    """The `MediaLeg` reading methods, for a driver that keeps its input in `self._inbox`."""

    _inbox: LegInbox
    on_downlink_sent: Callable[[float], None] | None = None

    async def wait_started(self) -> AudioFormat:
        return await self._inbox.wait_started()

    def inbound(self) -> AsyncIterator[LegInput]:
        return self._inbox.items()

    @property
    def end_reason(self) -> EndRequest | None:
        return self._inbox.end_reason

    async def wait_gone(self) -> None:
        await self._inbox.wait_gone()

    @property
    def on_caller_audio(self) -> CallerAudioTaker | None:
        return self._inbox.take

    @on_caller_audio.setter
    def on_caller_audio(self, take: CallerAudioTaker | None) -> None:
        self._inbox.take = take

    @property
    def call_variables(self) -> Mapping[str, str]:
        return self._inbox.variables


class MediaLeg(Protocol):
    async def wait_started(self) -> AudioFormat:
        """The leg's audio format, once the peer has said it (raises TimeoutError if it never does)."""
        ...

    def inbound(self) -> AsyncIterator[LegInput]:
        """Caller audio and keys; ends when the peer is gone (see `end_reason`)."""
        ...

    @property
    def end_reason(self) -> EndRequest | None:
        """Why `inbound` ended: the caller hung up, or the peer broke the protocol."""
        ...

    async def wait_gone(self) -> None:
        """Returns once the peer has gone (socket closed)."""
        ...

    @property
    def channel_name(self) -> str:
        """Asterisk's name for the media channel, when the peer said it ("" otherwise)."""
        ...

    @property
    def call_variables(self) -> Mapping[str, str]:
        """What the dialplan passed with the call, read once the leg started: the media URI's query
        parameters (chan_websocket `v()`) and MEDIA_START `channel_variables` (later ones win). The
        session reads `amd` there: Asterisk's AMDSTATUS (HUMAN, MACHINE, NOTSURE, HANGUP)."""
        ...

    # Set by the call's runner: offered each caller frame as the driver reads it, before it is queued for
    # `inbound` (True: taken). Drivers may ignore it; everything then arrives through `inbound`.
    on_caller_audio: CallerAudioTaker | None

    # Set by the call's runner: called with a `play` chunk's `received_at` when the chunk's first frame
    # is written to Asterisk (the downlink latency).
    on_downlink_sent: Callable[[float], None] | None

    def play(self, data: bytes, received_at: float | None = None) -> None:
        """Queue model audio (leg format) for the caller; opens a response if none is open.
        `received_at`: event-loop time the model's message carrying it was read (None: unknown)."""
        ...

    def end_response(self) -> None:
        """The model finished this response: play its tail now."""
        ...

    @property
    def is_playing(self) -> bool:
        """Model audio is queued or still playing, i.e. the caller would hear the bot now."""
        ...

    def interrupt(self) -> float:
        """Barge-in: drop all queued playout at once; returns ms of the response the caller heard."""
        ...

    async def hangup(self, *, drain: bool) -> None:
        """End the call from our side, after the queued audio played out if `drain` (bounded)."""
        ...

    def stats(self) -> LegStats: ...
