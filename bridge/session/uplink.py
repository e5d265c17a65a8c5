"""The caller's side of a running call: each frame to the model, then to our view of the caller's voice.

A frame is taken as the leg's reader reads it (`MediaLeg.on_caller_audio`) and handled there and then,
in the reader's own step: 50 frames a second per call, each of which would otherwise wake this lane's
task. What cannot be handled at once (an earlier frame still waits on the model's socket, or the lane is
handling a key) the leg queues, and the lane handles it in order. Keys always come through the queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bridge.audio.formats import AudioFormat
from bridge.session.barge_in import CallerVoice, LocalBargeIn
from bridge.session.conduct import CallConduct
from bridge.session.eager import start_eagerly
from bridge.session.leg import AudioIn, DtmfIn, MediaLeg
from bridge.session.model_line import ModelLine
from bridge.session.plan import CallPlan
from bridge.session.session import EndRequest
from bridge.session.state import EndedBy


class CallerUplink:
    """`run` is the call's uplink lane; `barge_in` cuts the bot when our VAD hears the caller start
    talking over it (local barge-in); work that has to wait runs as a task of `lanes`, the call's group."""

    def __init__(
        self,
        leg: MediaLeg,
        model: ModelLine,
        conduct: CallConduct,
        plan: CallPlan,
        *,
        barge_in: Callable[[], Awaitable[None]],
        lanes: asyncio.TaskGroup,
    ) -> None:
        self._leg = leg
        self._model = model
        self._conduct = conduct
        self._plan = plan
        self._barge_in = barge_in
        self._lanes = lanes
        self._voice: CallerVoice | None = None
        self._local_barge_in: LocalBargeIn | None = None
        self._hearing: asyncio.Task[None] | None = None  # a frame's work that had to wait
        self._lane_busy = False  # the lane is handling a queued item (a key, or a frame)

    async def run(self, leg_format: AudioFormat) -> EndRequest:
        self._voice = voice = self._caller_voice(leg_format)
        if self._plan.local_barge_in_ms and voice is not None:
            self._local_barge_in = LocalBargeIn(self._plan.local_barge_in_ms, voice.latency_ms)
        conduct, loop = self._conduct, asyncio.get_running_loop()
        self._leg.on_caller_audio = self._take
        try:
            async for item in self._leg.inbound():
                self._lane_busy = True  # what arrives meanwhile queues behind this item
                if self._hearing is not None:
                    await self._hearing  # an earlier frame still waits on the model's socket
                if isinstance(item, AudioIn):
                    await self._hear(item.data, item.received_at)
                elif isinstance(item, DtmfIn):
                    await conduct.key(item.digit, loop.time())
                self._lane_busy = False
        finally:
            self._leg.on_caller_audio = None
        return self._leg.end_reason or EndRequest(EndedBy.CALLER)

    def _caller_voice(self, leg_format: AudioFormat) -> CallerVoice | None:
        """Our view of the caller's voice, when anything listens to it (one VAD pass per frame at most)."""
        policy, provider = self._plan.policy, self._model.provider
        voicemail = bool(policy.voicemail_message) and provider.speaks_text
        if self._plan.local_barge_in_ms or policy.caller_silence_seconds > 0 or voicemail:
            return CallerVoice(provider, leg_format)
        return None

    def _take(self, data: bytes, received_at: float | None) -> bool:
        """A frame the leg's reader just read: handled now, or False (the leg queues it for the lane)
        while an earlier frame's work still waits or the lane handles a queued item: input keeps its order."""
        if self._hearing is not None or self._lane_busy:
            return False
        try:
            hearing = start_eagerly(self._hear(data, received_at), self._spawn)
        except Exception as exc:  # as if the lane had raised it: the task group ends the call
            hearing = self._spawn(_raise(exc))
        if hearing is not None:
            self._hearing = hearing
            hearing.add_done_callback(self._heard)
        return True

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task of the call's group; once the group is ending (it takes none), one cancelled now."""
        try:
            return self._lanes.create_task(work)
        except RuntimeError:
            task = asyncio.ensure_future(work)
            task.cancel()
            return task

    def _heard(self, hearing: asyncio.Task[None]) -> None:
        if hearing is self._hearing:
            self._hearing = None

    async def _hear(self, data: bytes, received_at: float | None) -> None:
        conduct, model = self._conduct, self._model
        feeding = conduct.feeding_model
        if feeding and (uplink := model.uplink) is not None:
            await model.provider.send_audio(uplink.convert(data), received_at)
        voice = self._voice
        if voice is None:
            return
        voiced = voice.hear(data)
        if voiced:
            # Only while the bot is heard (see CallRunner._barge_in): the onset is the echo guard's debounce.
            barge_in = self._local_barge_in
            if barge_in is not None and barge_in.heard(voiced) and feeding:
                await self._barge_in()
            conduct.voice(voiced)


async def _raise(exc: Exception) -> None:
    raise exc
