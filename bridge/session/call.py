"""Running one call: the uplink, the downlink and the control lane in one task group.

The first lane to finish decides how the call ends; the others are cancelled and
teardown (hang up after draining when the caller should hear the end, close the
model) runs in `finally`, each step bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.audio.convert import Transcoder
from bridge.errors import Unavailable
from bridge.logging import get_logger
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    HangupRequested,
    Provider,
    ProviderError,
    ProviderUnavailable,
    ResponseAudioDone,
)
from bridge.session.leg import AudioIn, DtmfIn, LegGone, MediaLeg
from bridge.session.session import EndRequest, Session
from bridge.session.state import EndedBy


@dataclass(frozen=True, slots=True)
class CallTimeouts:
    media_start: float = 5.0  # the peer must say its format this soon after the socket opens
    provider_connect: float = 10.0
    hangup: float = 30.0  # drain plus HANGUP; the leg bounds its own drain well inside this
    provider_close: float = 2.0


DRAINED_ENDINGS = frozenset({EndedBy.BOT, EndedBy.API, EndedBy.SHUTDOWN, EndedBy.TIMEOUT})


ProviderFactory = Callable[[Session], Provider]


def provider_or_refuse(session: Session, make_provider: ProviderFactory) -> Provider:
    """The call's provider; if there is none to be had, the call fails and the socket is refused."""
    try:
        return make_provider(session)
    except ProviderUnavailable as exc:
        # Refusing lets the dialplan fail over at once (Dial returns) instead of dead air.
        session.finish(EndedBy.ERROR, exc.code, failed=True)
        raise Unavailable(str(exc), code=exc.code) from exc


class _LaneFinished(Exception):
    """How a lane tells the task group the call is over (it cancels the other lanes)."""

    def __init__(self, outcome: EndRequest) -> None:
        super().__init__(outcome.by.value)
        self.outcome = outcome


async def _lane(work: Coroutine[Any, Any, EndRequest]) -> None:
    raise _LaneFinished(await work)


class CallRunner:
    def __init__(
        self, session: Session, leg: MediaLeg, provider: Provider, timeouts: CallTimeouts | None = None
    ) -> None:
        self.session = session
        self.leg = leg
        self.provider = provider
        self.timeouts = timeouts or CallTimeouts()
        self.barge_ins = 0
        self._playing_response: str | None = None
        self._cancelled_response: str | None = None
        # The model is mid-response: its next delta may not have arrived yet, so the leg's queue
        # can be momentarily empty while the bot is still speaking.
        self._response_open = False
        self._log = get_logger("call").bind(call_id=session.call_id)

    async def run(self) -> None:
        with structlog.contextvars.bound_contextvars(call_id=self.session.call_id):
            outcome = EndRequest(EndedBy.ERROR, "internal_error", failed=True)
            try:
                outcome = await self._setup_and_converse()
            except ProviderUnavailable as exc:
                self._log.warning("provider_unavailable", code=exc.code, error=str(exc))
                outcome = EndRequest(EndedBy.ERROR, exc.code, failed=True)
            except asyncio.CancelledError:
                outcome = EndRequest(EndedBy.SHUTDOWN)
                raise
            except Exception:
                self._log.exception("call_crashed")
            finally:
                await self._teardown(outcome)

    async def _setup_and_converse(self) -> EndRequest:
        # The model connects while Asterisk is still sending MEDIA_START: no added setup latency.
        connecting = asyncio.ensure_future(self._connect_provider())
        try:
            try:
                leg_format = await asyncio.wait_for(self.leg.wait_started(), self.timeouts.media_start)
            except LegGone:
                return self.leg.end_reason or EndRequest(EndedBy.CALLER)
            except TimeoutError:
                return EndRequest(EndedBy.ERROR, "media_start_timeout", failed=True)
            await connecting
        finally:
            connecting.cancel()
        formats = self.provider.negotiate(leg_format)
        uplink = Transcoder(leg_format, formats.input)
        downlink = Transcoder(formats.output, leg_format)
        self._log.info(
            "call_started",
            company_id=self.session.company_id,
            provider=self.provider.name,
            leg_format=leg_format.name,
            model_input=formats.input.name,
            model_output=formats.output.name,
            transcoding=not (uplink.is_passthrough and downlink.is_passthrough),
        )
        await self.provider.start(formats)
        self.session.mark_active()
        return await self._converse(uplink, downlink)

    async def _connect_provider(self) -> None:
        try:
            await asyncio.wait_for(self.provider.connect(), self.timeouts.provider_connect)
        except TimeoutError as exc:
            raise ProviderUnavailable("the model did not answer in time", code="provider_timeout") from exc

    async def _converse(self, uplink: Transcoder, downlink: Transcoder) -> EndRequest:
        """Run the three lanes; the first to finish ends the call and cancels the others."""
        outcomes: list[EndRequest] = []
        try:
            async with asyncio.TaskGroup() as lanes:
                lanes.create_task(_lane(self._uplink(uplink)))
                lanes.create_task(_lane(self._downlink(downlink)))
                lanes.create_task(_lane(self._control()))
        except* _LaneFinished as finished:
            outcomes += [e.outcome for e in finished.exceptions if isinstance(e, _LaneFinished)]
        return outcomes[0]

    async def _uplink(self, uplink: Transcoder) -> EndRequest:
        async for item in self.leg.inbound():
            if isinstance(item, AudioIn):
                await self.provider.send_audio(uplink.convert(item.data))
            elif isinstance(item, DtmfIn):
                self.session.dtmf_digits += item.digit
                self._log.info("dtmf", digit=item.digit)
                await self.provider.send_dtmf(item.digit)
        return self.leg.end_reason or EndRequest(EndedBy.CALLER)

    async def _downlink(self, downlink: Transcoder) -> EndRequest:
        async for event in self.provider.events():
            if isinstance(event, AudioOut):
                # Deltas of a response the caller interrupted may still be in flight: drop them.
                if event.response_id != self._cancelled_response:
                    self._playing_response = event.response_id
                    self._response_open = True
                    self.leg.play(downlink.convert(event.data))
            elif isinstance(event, ResponseAudioDone):
                tail = downlink.flush()
                if tail:
                    self.leg.play(tail)
                self.leg.end_response()
                self._response_open = False
            elif isinstance(event, CallerSpeechStarted):
                await self._barge_in(downlink)
            elif isinstance(event, HangupRequested):
                return EndRequest(EndedBy.BOT)
            elif isinstance(event, ProviderError):
                self._log.warning("provider_error", code=event.code, message=event.message, fatal=event.fatal)
                if event.fatal:
                    return EndRequest(EndedBy.ERROR, event.code, failed=True)
        return EndRequest(EndedBy.ERROR, "provider_disconnected")

    async def _barge_in(self, downlink: Transcoder) -> None:
        if not (self._response_open or self.leg.is_playing):
            return
        self._response_open = False
        played_ms = self.leg.interrupt()  # control overtakes audio: the flush goes out first
        self._cancelled_response = self._playing_response
        downlink.reset()
        self.barge_ins += 1
        self._log.debug("barge_in", played_ms=round(played_ms))
        await self.provider.interrupt(played_ms)

    async def _control(self) -> EndRequest:
        await self.session.end_requested.wait()
        return self.session.end_request or EndRequest(EndedBy.API)

    async def _teardown(self, outcome: EndRequest) -> None:
        caller_gone = self.leg.end_reason is not None
        if not caller_gone:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self.leg.hangup(drain=outcome.by in DRAINED_ENDINGS), self.timeouts.hangup
                )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.provider.close(), self.timeouts.provider_close)
        stats = self.leg.stats()
        self.session.stats.frames_in = stats.frames_in
        self.session.stats.frames_out = stats.frames_out
        self.session.stats.drops = stats.drops
        self.session.stats.protocol_errors = stats.protocol_errors
        self.session.played_ms_estimated = stats.played_ms_estimated
        self.session.barge_ins = self.barge_ins
        self.session.finish(outcome.by, outcome.error_code, failed=outcome.failed)
