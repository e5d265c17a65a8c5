"""A listener on a call's media leg: what the caller sent and what the caller was played.

`TappedLeg` wraps any `MediaLeg` (chan_websocket or AudioSocket) and tells a `LegTap` about caller
audio as it arrives, model audio as it is handed to the leg, the end of each response and barge-ins
(with how much of the response the caller heard). The recorder (bridge/recording) is one; the tap
sees every event on the loop, so it must only do arithmetic and buffer appends there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

from bridge.audio.formats import AudioFormat
from bridge.session.leg import AudioIn, CallerAudioTaker, LegInput, LegStats, MediaLeg
from bridge.session.session import EndRequest


class LegTap(Protocol):
    def started(self, fmt: AudioFormat) -> None:
        """The leg's format is known: the call's clock starts now."""
        ...

    def caller(self, data: bytes, received_at: float | None) -> None:
        """A caller frame (leg format) read from Asterisk at loop time `received_at`."""
        ...

    def bot(self, data: bytes) -> None:
        """Model audio (leg format) handed to the leg now; it plays after what is already queued."""
        ...

    def end_response(self) -> None: ...

    def interrupted(self, played_ms: float) -> None:
        """Barge-in: the leg flushed everything past `played_ms` of the latest response."""
        ...

    async def aclose(self) -> None:
        """The call is over: finish what was tapped (bounded in time)."""
        ...


class TappedLeg:
    """`MediaLeg` that forwards everything to `inner` and reports the audio to `tap`."""

    def __init__(self, inner: MediaLeg, tap: LegTap) -> None:
        self._inner = inner
        self._tap = tap
        self._take: CallerAudioTaker | None = None

    async def wait_started(self) -> AudioFormat:
        fmt = await self._inner.wait_started()
        self._tap.started(fmt)
        return fmt

    def inbound(self) -> AsyncIterator[LegInput]:
        return self._tapped(self._inner.inbound())

    async def _tapped(self, items: AsyncIterator[LegInput]) -> AsyncIterator[LegInput]:
        tap = self._tap
        async for item in items:
            if isinstance(item, AudioIn):
                tap.caller(item.data, item.received_at)
            yield item

    @property
    def end_reason(self) -> EndRequest | None:
        return self._inner.end_reason

    async def wait_gone(self) -> None:
        await self._inner.wait_gone()

    @property
    def channel_name(self) -> str:
        return self._inner.channel_name

    @property
    def call_variables(self) -> Mapping[str, str]:
        return self._inner.call_variables

    @property
    def on_caller_audio(self) -> CallerAudioTaker | None:
        return self._take

    @on_caller_audio.setter
    def on_caller_audio(self, take: CallerAudioTaker | None) -> None:
        self._take = take
        self._inner.on_caller_audio = None if take is None else self._take_tapped

    def _take_tapped(self, data: bytes, received_at: float | None) -> bool:
        # What the taker declines is queued, and tapped when `inbound` yields it: never twice.
        if self._take is None or not self._take(data, received_at):
            return False
        self._tap.caller(data, received_at)
        return True

    @property
    def on_downlink_sent(self) -> Callable[[float], None] | None:
        return self._inner.on_downlink_sent

    @on_downlink_sent.setter
    def on_downlink_sent(self, callback: Callable[[float], None] | None) -> None:
        self._inner.on_downlink_sent = callback

    def play(self, data: bytes, received_at: float | None = None) -> None:
        self._tap.bot(data)
        self._inner.play(data, received_at)

    def end_response(self) -> None:
        self._tap.end_response()
        self._inner.end_response()

    @property
    def is_playing(self) -> bool:
        return self._inner.is_playing

    def interrupt(self) -> float:
        played_ms = self._inner.interrupt()
        self._tap.interrupted(played_ms)
        return played_ms

    async def hangup(self, *, drain: bool) -> None:
        await self._inner.hangup(drain=drain)

    def stats(self) -> LegStats:
        return self._inner.stats()
