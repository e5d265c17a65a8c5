"""Caller audio taken as the leg reads it: sent to the model in the reader's own step, in order when a
send has to wait, a failure still ending the call, and a tapped leg tapping each frame once."""

from __future__ import annotations

import asyncio

from bridge.audio.formats import SLIN16, AudioFormat
from bridge.session.call import CallRunner
from bridge.session.leg import DtmfIn, InboxLeg, LegInbox
from bridge.session.leg_tap import TappedLeg
from bridge.session.session import EndRequest
from bridge.session.state import CallState, EndedBy
from tests.unit.test_call_runner import MemoryLeg, ScriptedProvider, session

FRAME = b"\x00\x00" * 320


class ReadingLeg(InboxLeg, MemoryLeg):
    """A leg whose reader feeds a real `LegInbox`, as the chan_websocket and AudioSocket drivers do (the
    reading side is theirs, `InboxLeg`; the rest is the memory leg's)."""

    def __init__(self) -> None:
        super().__init__()
        self._inbox = self.inbox = LegInbox(250)
        self.inbox.start(SLIN16)

    def read(self, data: bytes) -> None:
        """What a driver's read loop does with a caller frame."""
        self.inbox.deliver_audio(data, None)

    def hang_up(self) -> None:
        self.inbox.close(EndRequest(EndedBy.CALLER))


class GatedProvider(ScriptedProvider):
    """A model whose socket takes frames at once, except `hold`'s, which waits for `gate`."""

    def __init__(self, hold: bytes | None = None) -> None:
        super().__init__([])
        self.hold = hold
        self.gate = asyncio.Event()

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        if data == self.hold:
            await self.gate.wait()
        self.heard.append(data)


async def until(condition: object, what: str) -> None:
    for _ in range(200):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def started(leg: ReadingLeg, provider: ScriptedProvider) -> asyncio.Task[None]:
    task = asyncio.create_task(CallRunner(session(), leg, provider).run())
    await until(lambda: leg.inbox.take is not None, "the runner to take caller audio")
    return task


async def test_a_frame_reaches_the_model_within_the_readers_step() -> None:
    leg, provider = ReadingLeg(), GatedProvider()
    task = await started(leg, provider)
    leg.read(b"\x01\x00" * 320)
    assert provider.heard == [b"\x01\x00" * 320]  # no await in between: nothing was queued
    leg.read(b"\x02\x00" * 320)
    assert len(provider.heard) == 2
    leg.hang_up()
    await asyncio.wait_for(task, 5)
    assert leg.inbox.take is None  # the runner lets go when its uplink ends


async def test_frames_behind_a_send_that_waits_keep_their_order() -> None:
    frames = [bytes([n, 0]) * 320 for n in range(1, 7)]
    leg, provider = ReadingLeg(), GatedProvider(hold=frames[1])
    task = await started(leg, provider)
    for frame in frames[:4]:
        leg.read(frame)
    assert provider.heard == frames[:1]  # the second waits on the socket; the rest queue behind it
    leg.inbox.deliver(DtmfIn("5"))
    leg.read(frames[4])
    await asyncio.sleep(0.02)
    assert provider.heard == frames[:1]
    provider.gate.set()
    await until(lambda: len(provider.heard) == 5, "the queued frames")
    assert provider.heard == frames[:5]
    leg.read(frames[5])  # the queue is empty again: taken at once
    assert provider.heard == frames
    leg.hang_up()
    await asyncio.wait_for(task, 5)


async def test_a_send_that_fails_ends_the_call_without_breaking_the_reader() -> None:
    class FailingProvider(ScriptedProvider):
        async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
            raise KeyError("a bug in the provider")

    leg, provider = ReadingLeg(), FailingProvider([])
    runner_session = session()
    task = asyncio.create_task(CallRunner(runner_session, leg, provider).run())
    await until(lambda: leg.inbox.take is not None, "the runner to take caller audio")
    leg.read(FRAME)  # raises nothing here: the reader is the leg's, the failure is the call's
    await asyncio.wait_for(task, 5)
    # As when the uplink lane itself raises: the call ends as the bridge's error.
    assert runner_session.state is CallState.ENDED
    assert (runner_session.disconnected_by, runner_session.error_code) == (EndedBy.ERROR, "internal_error")
    assert provider.closed


async def test_a_tapped_leg_taps_each_frame_once_whichever_way_it_went() -> None:
    class CallerTap:
        def __init__(self) -> None:
            self.caller_frames: list[bytes] = []

        def started(self, fmt: AudioFormat) -> None: ...

        def caller(self, data: bytes, received_at: float | None) -> None:
            self.caller_frames.append(data)

        def bot(self, data: bytes) -> None: ...

        def end_response(self) -> None: ...

        def interrupted(self, played_ms: float) -> None: ...

        async def aclose(self) -> None: ...

    frames = [bytes([n, 0]) * 320 for n in range(1, 5)]
    inner, tap, provider = ReadingLeg(), CallerTap(), GatedProvider(hold=frames[1])
    task = asyncio.create_task(CallRunner(session(), TappedLeg(inner, tap), provider).run())
    await until(lambda: inner.inbox.take is not None, "the runner to take caller audio")
    for frame in frames:  # the first is taken, the second waits, the last two are queued
        inner.read(frame)
    provider.gate.set()
    await until(lambda: len(provider.heard) == 4, "every frame")
    inner.hang_up()
    await asyncio.wait_for(task, 5)
    assert sorted(tap.caller_frames) == frames
    assert provider.heard == frames
