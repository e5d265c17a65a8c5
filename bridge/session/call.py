"""Running one call: the uplink, the downlink and the control lane in one task group.

The first lane to finish decides how the call ends; the others are cancelled and
teardown (hang up after draining when the caller should hear the end, close the
model) runs in `finally`, each step bounded by a timeout. Lanes only say who ended
the call and why; `record_outcome` alone turns that into `ended` or `failed`.
The caller's keys, said messages, guards and answering machines are the call's
`CallConduct` (conduct.py), which the lanes feed and the control lane steps; the
uplink lane is `CallerUplink` (uplink.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Coroutine
from typing import Any

import structlog

from bridge.audio.formats import AudioFormat
from bridge.logging import get_logger
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    HangupRequested,
    ModelReconnected,
    ModelReconnecting,
    Provider,
    ProviderError,
    ProviderUnavailable,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
    TranscriptLine,
    Usage,
)
from bridge.session.conduct import CallConduct
from bridge.session.control import ControlError
from bridge.session.costs import record_usage
from bridge.session.leg import LegGone, MediaLeg
from bridge.session.model_line import ModelLine
from bridge.session.plan import (
    DRAINED_ENDINGS,
    CallPlan,
    CallTimeouts,
    ProviderFactory,
    provider_or_refuse,
    record_outcome,
)
from bridge.session.session import CallStats, EndRequest, Session
from bridge.session.state import EndedBy
from bridge.session.tools import ToolBox, ToolOutcome
from bridge.session.uplink import CallerUplink

# The plan and the outcome rule live in plan.py; callers have always imported them from here.
__all__ = [
    "CallPlan",
    "CallRunner",
    "CallTimeouts",
    "ProviderFactory",
    "provider_or_refuse",
    "record_outcome",
]


class _LaneFinished(Exception):
    """How a lane tells the task group the call is over (it cancels the other lanes)."""

    def __init__(self, outcome: EndRequest) -> None:
        super().__init__(outcome.by.value)
        self.outcome = outcome


async def _lane(work: Coroutine[Any, Any, EndRequest]) -> None:
    raise _LaneFinished(await work)


class CallRunner:
    def __init__(
        self,
        session: Session,
        leg: MediaLeg,
        plan: CallPlan | Provider,
        timeouts: CallTimeouts | None = None,
    ) -> None:
        self.session = session
        self.leg = leg
        self.plan = plan if isinstance(plan, CallPlan) else CallPlan(plan)
        self.timeouts = timeouts or CallTimeouts()
        self._log = get_logger("call").bind(call_id=session.call_id)
        self.model = ModelLine(
            session,
            self.plan,
            connect_timeout=self.timeouts.provider_connect,
            close_timeout=self.timeouts.provider_close,
            log=self._log,
        )
        self.model.on_handover = self._handed_over
        self._end_after: dict[str, EndRequest] = {}  # response id -> end once it has been said
        self._lanes: asyncio.TaskGroup | None = None
        self._playing_response: str | None = None
        self._cancelled_response: str | None = None
        # The model is mid-response: its next delta may not have arrived yet, so the leg's queue
        # can be momentarily empty while the bot is still speaking.
        self._response_open = False
        self._awaiting_event = False  # the downlink lane waits for the model's next event (_take_audio)
        # Monotonic loop times for the session's latencies (first audio, caller stop -> reply).
        self._started_at: float | None = None
        self._caller_stopped_at: float | None = None
        self.conduct = CallConduct(
            session, self.provider, self, self.plan.policy, timeouts=self.timeouts.conduct, log=self._log
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        self._observe_transit(loop)
        self.session.read_counters_from(self._leg_counters)
        with structlog.contextvars.bound_contextvars(call_id=self.session.call_id):
            outcome = EndRequest(EndedBy.ERROR, "internal_error")
            try:
                outcome = await self._setup_and_converse()
            except ProviderUnavailable as exc:
                self._log.warning("provider_unavailable", code=exc.code, error=str(exc))
                outcome = EndRequest(EndedBy.ERROR, exc.code)
            except asyncio.CancelledError:
                outcome = EndRequest(EndedBy.SHUTDOWN)
                raise
            except Exception:
                self._log.exception("call_crashed")
            finally:
                await self._teardown(outcome)

    async def _setup_and_converse(self) -> EndRequest:
        # The model connects while Asterisk is still sending MEDIA_START: no added setup latency.
        connecting = asyncio.ensure_future(self.model.connect())
        try:
            try:
                leg_format = await asyncio.wait_for(self.leg.wait_started(), self.timeouts.media_start)
            except LegGone:
                return self.leg.end_reason or EndRequest(EndedBy.CALLER)
            except TimeoutError:
                return EndRequest(EndedBy.ERROR, "media_start_timeout")
            await connecting
        finally:
            connecting.cancel()
        self.session.media_channel = self.leg.channel_name
        greet = self.conduct.start(asyncio.get_running_loop().time(), self.leg.call_variables)
        formats = await self.model.start(leg_format, greet=greet)
        self._log.info(
            "call_started",
            company_id=self.session.company_id,
            provider=self.provider.name,
            leg_format=leg_format.name,
            model_input=formats.input.name,
            model_output=formats.output.name,
            transcoding=formats.input != leg_format or formats.output != leg_format,
        )
        self.session.mark_active()
        return await self._converse(leg_format)

    async def _converse(self, leg_format: AudioFormat) -> EndRequest:
        """Run the three lanes; the first to finish ends the call and cancels the others."""
        outcomes: list[EndRequest] = []
        try:
            async with asyncio.TaskGroup() as lanes:
                self._lanes = lanes  # tool calls run here too: the call's one owner holds them
                caller = CallerUplink(
                    self.leg,
                    self.model,
                    self.conduct,
                    self.plan,
                    barge_in=functools.partial(self._barge_in, cancel_response=True),
                    lanes=lanes,
                )
                lanes.create_task(_lane(caller.run(leg_format)))
                lanes.create_task(_lane(self._downlink()))
                lanes.create_task(_lane(self._control()))
        except* _LaneFinished as finished:
            outcomes += [e.outcome for e in finished.exceptions if isinstance(e, _LaneFinished)]
        return outcomes[0]

    @property
    def provider(self) -> Provider:
        """The model serving the call now (another after a failover)."""
        return self.model.provider

    def _handed_over(self, provider: Provider) -> None:
        self.conduct.provider = provider
        self._observe_transit(asyncio.get_running_loop())

    def _observe_transit(self, loop: asyncio.AbstractEventLoop) -> None:
        """Time each direction inside the bridge: the provider and the leg report when they wrote a frame
        with the loop time it was read (about 50 times a second each way: a clock read and a tally)."""
        clock = loop.time
        uplink, downlink = self.session.uplink_latency, self.session.downlink_latency
        self.provider.on_uplink_sent = lambda received_at: uplink.observe(clock() - received_at)
        self.leg.on_downlink_sent = lambda received_at: downlink.observe(clock() - received_at)

    async def _downlink(self) -> EndRequest:
        """The model's events; a model lost for good is replaced by the next fallback, if any."""
        while True:
            outcome = await self._relay_model()
            if outcome.by is not EndedBy.ERROR or self.leg.end_reason is not None:
                return outcome
            self._response_open = False
            self._end_after.clear()  # goodbyes owed by the lost model's responses are not coming
            if not await self.model.fail_over(outcome.error_code or "provider_disconnected"):
                return outcome

    async def _relay_model(self) -> EndRequest:
        provider = self.provider
        downlink = self.model.downlink
        assert downlink is not None  # set by ModelLine.start before the lanes run
        provider.take_audio = self._take_audio
        self._awaiting_event = True
        try:
            async for event in provider.events():
                self._awaiting_event = False
                if isinstance(event, AudioOut):
                    self._audio_out(event)
                elif isinstance(event, ResponseAudioDone):
                    tail = downlink.flush()
                    if tail:
                        self._play(tail)
                    self.leg.end_response()
                    self._response_open = False
                elif isinstance(event, CallerSpeechStarted):
                    self._caller_stopped_at = None  # still talking: the turn ends at the next stop
                    await self._barge_in(cancel_response=False)
                elif isinstance(event, CallerSpeechStopped):
                    self._caller_stopped_at = asyncio.get_running_loop().time()
                elif isinstance(event, ResponseDone):
                    finished = self._end_after.pop(event.response_id, None)
                    if finished is not None:
                        return finished
                elif isinstance(event, SayFinished):
                    self.conduct.said(event.say_id)
                elif isinstance(event, HangupRequested):
                    return EndRequest(EndedBy.BOT)
                elif (outcome := await self._model_event(event)) is not None:
                    return outcome
                self._awaiting_event = True
        finally:
            provider.take_audio = None
            self._awaiting_event = False
        return EndRequest(EndedBy.ERROR, "provider_disconnected")

    def _take_audio(self, event: AudioOut) -> bool:
        """`Provider.take_audio`: while the downlink lane only waits for the next event, model audio is
        played in the provider's own step (as the lane would play it next); otherwise it is left for
        the lane, behind the event the lane is handling."""
        if not self._awaiting_event:
            return False
        self._audio_out(event)
        return True

    def _audio_out(self, event: AudioOut) -> None:
        # Deltas of a response the caller interrupted may still be in flight: drop them.
        if event.response_id != self._cancelled_response:
            downlink = self.model.downlink
            assert downlink is not None
            self._playing_response = event.response_id
            self._response_open = True
            self._play(downlink.convert(event.data), event.received_at)

    def _play(self, data: bytes, received_at: float | None = None) -> None:
        """Hand model audio to the leg, timing the greeting and the reply to the caller's last turn."""
        # Only the first audio of the call or of a reply is timed: no clock read for every delta.
        if data and (self.session.first_audio_s is None or self._caller_stopped_at is not None):
            now = asyncio.get_running_loop().time()
            if self.session.first_audio_s is None and self._started_at is not None:
                self.session.first_audio_s = now - self._started_at
            if self._caller_stopped_at is not None:
                self.session.add_response_latency(now - self._caller_stopped_at)
                self._caller_stopped_at = None
        self.leg.play(data, received_at)

    async def _model_event(self, event: object) -> EndRequest | None:
        """Everything the model says besides audio and turn-taking."""
        if isinstance(event, TranscriptLine):
            self.session.add_line(event.role, event.text, item_id=event.item_id, truncated=event.truncated)
        elif isinstance(event, Usage):
            prices = self.model.prices
            self.session.add_usage(record_usage(event), prices.cost(event) if prices else None)
        elif isinstance(event, ToolCall):
            return await self._tool_call(event)
        elif isinstance(event, ModelReconnecting):
            self._log.info("model_reconnecting", attempt=event.attempt)
        elif isinstance(event, ModelReconnected):
            if not event.rotated:
                self.session.model_reconnects += 1
        elif isinstance(event, ProviderError):
            self._log.warning("provider_error", code=event.code, message=event.message, fatal=event.fatal)
            if event.fatal:
                return EndRequest(EndedBy.ERROR, event.code)
        return None

    async def _tool_call(self, call: ToolCall) -> EndRequest | None:
        tools = self.plan.tools
        if tools is None:
            await self.provider.send_tool_result(call.call_id, '{"ok":false,"error":"no tools on this call"}')
            return None
        ending = tools.ending(call)
        if ending is not None:  # end_call / transfer_call: decided now, so no ResponseDone slips past
            await self.provider.send_tool_result(call.call_id, ending.output, respond=ending.respond)
            if ending.answering_machine:
                self.conduct.machine_reported()
                return None
            if ending.end_call or ending.transfer_to:
                end = EndRequest(EndedBy.BOT, transfer_to=ending.transfer_to)
                if not call.response_id:
                    return end
                self._end_after[call.response_id] = end  # once the goodbye has been said
            return None
        if self._lanes is not None:
            self._lanes.create_task(self._run_tool(tools, call))
        return None

    async def _run_tool(self, tools: ToolBox, call: ToolCall) -> None:
        try:
            outcome = await tools.run(call, self.session)
        except Exception:  # a tool must never take the call down
            self._log.exception("tool_crashed", tool=call.name)
            outcome = ToolOutcome('{"ok":false,"error":"the tool failed"}')
        with contextlib.suppress(Exception):
            await self.provider.send_tool_result(call.call_id, outcome.output, respond=outcome.respond)

    async def _barge_in(self, *, cancel_response: bool, caller: bool = True) -> None:
        """Stop the bot being heard: the caller talked over it (`caller`), or the bridge cuts it."""
        if not (self._response_open or self.leg.is_playing):
            return
        self._response_open = False
        played_ms = self.leg.interrupt()  # control overtakes audio: the flush goes out first
        self._cancelled_response = self._playing_response
        if self.model.downlink is not None:
            self.model.downlink.reset()
        if caller:
            self.session.barge_ins += 1
        self._log.debug("barge_in", played_ms=round(played_ms), local=cancel_response, caller=caller)
        await self.provider.interrupt(played_ms, cancel_response=cancel_response)

    # -- what the conduct needs (see conduct.Stage) ---------------------------------------------------------

    @property
    def bot_heard(self) -> bool:
        return self._response_open or self.leg.is_playing

    async def cut_playout(self) -> None:
        await self._barge_in(cancel_response=True, caller=False)

    def wake(self) -> None:
        self.session.control_waiting.set()

    async def _control(self) -> EndRequest:
        """Ends asked for (API, webhook, shutdown), and the conduct's steps: on a wake-up or its deadline."""
        session, loop, waiting = self.session, asyncio.get_running_loop(), self.session.control_waiting
        while True:
            waiting.clear()
            if session.end_requested.is_set():
                return session.end_request or EndRequest(EndedBy.API)
            ending = await self.conduct.step(loop.time())
            if ending is not None:
                return ending
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(self.conduct.deadline):
                    await waiting.wait()

    async def _teardown(self, outcome: EndRequest) -> None:
        if outcome.transfer_to is not None and self.leg.end_reason is None:
            await self._transfer(outcome)
        caller_gone = self.leg.end_reason is not None
        if not caller_gone:
            # A cancelled call hangs up at once: no goodbye is owed.
            drain = outcome.by in DRAINED_ENDINGS and not outcome.cancelled
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.leg.hangup(drain=drain), self.timeouts.hangup)
        await self.model.close()
        if self.leg.end_reason is not None and self.session.transferred_to and outcome.transfer_to is None:
            outcome = EndRequest(EndedBy.API, transfer_to=self.session.transferred_to)
        record_outcome(self.session, outcome)  # the leg's final counters are read as it ends

    def _leg_counters(self) -> CallStats:
        stats = self.leg.stats()
        return CallStats(
            frames_in=stats.frames_in,
            frames_out=stats.frames_out,
            drops=stats.drops,
            protocol_errors=stats.protocol_errors,
            played_ms_estimated=stats.played_ms_estimated,
        )

    async def _transfer(self, outcome: EndRequest) -> None:
        """The caller leaves for `transfer_to`: after the bot's last words (tool) or at once (API)."""
        target = outcome.transfer_to or ""
        if outcome.by is EndedBy.BOT:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.timeouts.transfer_playout
            # The leg models Asterisk's queue on the clock: there is no event to wait for.
            while self.leg.is_playing and self.leg.end_reason is None and loop.time() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            controller = self.plan.controller
            if controller is None:
                return
            try:
                await controller.transfer(self.session.channel_ref(), target)
            except ControlError as exc:
                self._log.warning("transfer_failed", code=exc.code, error=str(exc))
                outcome.error_code = "transfer_failed"
                return
            self.session.transferred_to = target
        else:
            self.leg.interrupt()  # the API already redirected the caller: stop talking to them
        self._log.info("call_transferred", by=outcome.by.value)
        # Asterisk closes the media socket once the caller has left; hang up only if it does not.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.leg.wait_gone(), self.timeouts.transfer_leave)
