"""Model audio made in-process (the echo model) played in the provider's own step while the downlink lane
only waits, left for the lane, in order, while it is busy with an earlier event; and the echo model itself
through a runner, its audio never waiting in its queue."""

from __future__ import annotations

import asyncio

from bridge.audio.formats import ULAW
from bridge.providers.base import AudioOut, CallerSpeechStarted, ModelFormats, ProviderEvent
from bridge.providers.echo import EchoProvider
from bridge.session.call import CallRunner
from bridge.session.leg import AudioIn
from bridge.session.session import Session
from bridge.session.state import CallState, EndedBy
from tests.unit.test_call_runner import MemoryLeg, ScriptedProvider, session
from tests.unit.test_call_uplink import until

CHUNK = b"\x01\x00" * 320


class InProcessProvider(ScriptedProvider):
    """A model whose audio is made here: offered to the runner first, as the echo model does, and queued
    when the runner declines. `interrupt` waits for `gate`, so a barge-in keeps the lane busy."""

    def __init__(self, leg: MemoryLeg) -> None:
        super().__init__([])
        self.leg = leg
        self.taken: list[bool] = []  # per emitted chunk: played in this step
        self.played_in_step: list[int] = []  # len(leg.played) right after each taken chunk
        self.gate = asyncio.Event()
        self.gate.set()

    def emit(self, event: ProviderEvent) -> None:
        take = self.take_audio
        if take is not None and isinstance(event, AudioOut) and self.events_to_send.empty() and take(event):
            self.taken.append(True)
            self.played_in_step.append(len(self.leg.played))
            return
        if isinstance(event, AudioOut):
            self.taken.append(False)
        self.events_to_send.put_nowait(event)

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        await self.gate.wait()
        await super().interrupt(played_ms, cancel_response=cancel_response)


async def running() -> tuple[MemoryLeg, Session, InProcessProvider, asyncio.Task[None]]:
    """A call whose runner is up, its downlink lane waiting for the model's first event."""
    leg, call = MemoryLeg(), session()
    provider = InProcessProvider(leg)
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    await until(lambda: provider.take_audio is not None, "the downlink lane to wait for events")
    return leg, call, provider, task


async def test_audio_made_while_the_lane_waits_is_played_in_the_providers_step() -> None:
    leg, call, provider, task = await running()
    for n in range(3):
        provider.emit(AudioOut(bytes([n + 1, 0]) * 320, "r1"))
    assert provider.taken == [True, True, True]
    assert provider.played_in_step == [1, 2, 3]  # each played before `emit` returned
    assert leg.played == [bytes([n + 1, 0]) * 320 for n in range(3)]
    assert provider.events_to_send.empty()
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.take_audio is None  # the lane is gone: nothing may be played for it


async def test_audio_made_while_the_lane_is_busy_waits_behind_the_event_it_handles() -> None:
    leg, call, provider, task = await running()
    provider.emit(AudioOut(CHUNK, "r1"))
    provider.gate.clear()  # the barge-in below keeps the lane in the model's interrupt
    provider.emit(CallerSpeechStarted())
    await until(lambda: leg.interrupts == 1, "the barge-in to reach the leg")
    provider.emit(AudioOut(b"\x02\x00" * 320, "r2"))  # the lane is busy: queued, not played
    provider.emit(AudioOut(b"\x03\x00" * 320, "r2"))  # something is queued: queued behind it
    assert provider.taken == [True, False, False]
    assert leg.played == []  # the barge-in flushed r1, and r2 waits for the lane
    provider.gate.set()
    await until(lambda: len(leg.played) == 2, "the lane to play the queued audio")
    assert leg.played == [b"\x02\x00" * 320, b"\x03\x00" * 320]
    provider.emit(AudioOut(b"\x04\x00" * 320, "r2"))  # waiting again, nothing queued: played at once
    assert provider.taken[-1] is True
    assert leg.played[-1] == b"\x04\x00" * 320
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.truncated_at == [120.0]


async def test_audio_of_a_cut_response_is_dropped_when_taken_at_once_too() -> None:
    leg, call, provider, task = await running()
    provider.emit(AudioOut(CHUNK, "r1"))
    provider.emit(CallerSpeechStarted())
    await until(lambda: leg.interrupts == 1 and provider.events_to_send.empty(), "the barge-in")
    await until(lambda: provider.truncated_at == [120.0], "the model to be told")
    provider.emit(AudioOut(b"\x05\x00" * 320, "r1"))  # a late delta of the response the caller cut
    provider.emit(AudioOut(b"\x06\x00" * 320, "r2"))
    assert leg.played == [b"\x06\x00" * 320]
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)


async def test_the_echo_model_plays_the_caller_back_without_queueing_a_chunk() -> None:
    leg, call = MemoryLeg(), session()
    echo = EchoProvider(delay_ms=40.0)
    task = asyncio.create_task(CallRunner(call, leg, echo).run())
    await until(lambda: echo.take_audio is not None, "the downlink lane to wait for events")
    frames = [bytes([n + 1, 0]) * 320 for n in range(6)]  # quiet SLIN16: never speech, never a barge-in
    for frame in frames:
        leg.inbound_items.put_nowait(AudioIn(frame))
    await until(lambda: len(leg.played) == 4, "the echo to play all but its 40 ms delay line")
    assert leg.played == frames[:4]
    assert echo._events.empty()  # every chunk went straight to the leg
    leg.inbound_items.put_nowait(None)  # the caller hangs up
    await asyncio.wait_for(task, 5)
    assert call.state is CallState.ENDED
    assert echo.take_audio is None


async def test_the_echo_model_queues_its_audio_when_nobody_takes_it() -> None:
    echo = EchoProvider(delay_ms=20.0)
    await echo.start(ModelFormats(ULAW, ULAW))
    offered: list[AudioOut] = []

    def decline(event: AudioOut) -> bool:  # a lane busy with an earlier event
        offered.append(event)
        return False

    echo.take_audio = decline
    for _ in range(3):
        await echo.send_audio(b"\xff" * 160)  # µ-law silence, 20 ms
    assert len(offered) == 1  # offered while nothing was queued; after that, queued behind it
    queued = [echo._events.get_nowait() for _ in range(echo._events.qsize())]
    assert [type(event) for event in queued] == [AudioOut, AudioOut]
    assert queued[0] == offered[0]
