"""The call runner against in-memory stand-ins: lane endings, barge-in fencing, teardown."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from bridge.audio.formats import SLIN16, AudioFormat
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    HangupRequested,
    ModelFormats,
    Provider,
    ProviderError,
    ProviderEvent,
)
from bridge.session.call import CallRunner, CallTimeouts
from bridge.session.leg import AudioIn, LegInput, LegStats
from bridge.session.session import CallInfo, EndRequest, Session
from bridge.session.state import CallState, EndedBy


class MemoryLeg:
    def __init__(self) -> None:
        self.inbound_items: asyncio.Queue[LegInput | None] = asyncio.Queue()
        self.played: list[bytes] = []
        self.interrupts = 0
        self.hangups: list[bool] = []
        self._gone: EndRequest | None = None
        self.gone = asyncio.Event()

    async def wait_started(self) -> AudioFormat:
        return SLIN16

    async def inbound(self) -> AsyncIterator[LegInput]:
        while (item := await self.inbound_items.get()) is not None:
            yield item
        self._gone = EndRequest(EndedBy.CALLER)
        self.gone.set()

    async def wait_gone(self) -> None:
        await self.gone.wait()

    @property
    def channel_name(self) -> str:
        return "WebSocket/test-0001"

    @property
    def end_reason(self) -> EndRequest | None:
        return self._gone

    def play(self, data: bytes) -> None:
        self.played.append(data)

    def end_response(self) -> None:
        pass

    @property
    def is_playing(self) -> bool:
        return bool(self.played)

    def interrupt(self) -> float:
        self.interrupts += 1
        self.played.clear()
        return 120.0

    async def hangup(self, *, drain: bool) -> None:
        self.hangups.append(drain)

    def stats(self) -> LegStats:
        return LegStats(frames_in=1, frames_out=2, drops=0, protocol_errors=0, played_ms_estimated=False)


class ScriptedProvider(Provider):
    name = "scripted"

    def __init__(self, script: list[ProviderEvent]) -> None:
        self.events_to_send: asyncio.Queue[ProviderEvent | None] = asyncio.Queue()
        for event in script:
            self.events_to_send.put_nowait(event)
        self.heard: list[bytes] = []
        self.truncated_at: list[float] = []
        self.closed = False

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        return ModelFormats(leg, leg)

    async def start(self, formats: ModelFormats) -> None:
        return None

    async def send_audio(self, data: bytes) -> None:
        self.heard.append(data)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while (event := await self.events_to_send.get()) is not None:
            yield event

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        self.truncated_at.append(played_ms)

    async def close(self) -> None:
        self.closed = True


def session() -> Session:
    s = Session(CallInfo("c1", "acme", "inbound", "+34600", "+34987"))
    s.attach_owner()
    return s


async def test_model_hangup_ends_the_call_by_bot_with_a_drained_hangup() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([AudioOut(b"\x01\x00" * 320, "r1"), HangupRequested("done")])
    await asyncio.wait_for(CallRunner(call, leg, provider).run(), 5)
    assert call.state is CallState.ENDED
    assert call.disconnected_by is EndedBy.BOT
    assert leg.hangups == [True]
    assert provider.closed
    assert call.stats.frames_out == 2


async def test_barge_in_flushes_truncates_and_fences_stale_audio() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([AudioOut(b"\x01\x00" * 320, "r1"), CallerSpeechStarted()])
    runner = CallRunner(call, leg, provider)
    task = asyncio.create_task(runner.run())
    for _ in range(100):
        if leg.interrupts:
            break
        await asyncio.sleep(0.01)
    provider.events_to_send.put_nowait(AudioOut(b"\x02\x00" * 320, "r1"))  # late delta of the cut response
    provider.events_to_send.put_nowait(AudioOut(b"\x03\x00" * 320, "r2"))
    await asyncio.sleep(0.05)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert leg.interrupts == 1
    assert provider.truncated_at == [120.0]
    assert leg.played == [b"\x03\x00" * 320]
    assert call.barge_ins == 1
    assert call.disconnected_by is EndedBy.API
    assert leg.hangups == [True]


async def test_caller_hangup_ends_without_hanging_up_again() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([])
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    leg.inbound_items.put_nowait(AudioIn(b"\x00\x00" * 320))
    leg.inbound_items.put_nowait(None)
    await asyncio.wait_for(task, 5)
    assert provider.heard == [b"\x00\x00" * 320]
    assert call.disconnected_by is EndedBy.CALLER
    assert leg.hangups == []


async def test_fatal_provider_error_fails_the_call() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([ProviderError("invalid_api_key", "bad key", fatal=True)])
    await asyncio.wait_for(CallRunner(call, leg, provider, CallTimeouts(hangup=1)).run(), 5)
    assert call.state is CallState.FAILED
    assert call.error_code == "invalid_api_key"
    assert leg.hangups == [False]
