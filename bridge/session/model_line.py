"""The call's model and the ones waiting to take over: connect, start, and hand over on failure.

The runner (call.py) talks to `line.provider` and converts audio with `line.uplink` / `line.downlink`;
this module decides which model that is. A model that refuses or does not answer at call start, or is
lost for good mid-call, is closed and the agent's next `fallback_providers` entry takes over with the
conversation so far (the caller keeps talking to someone who knows what was said). Each model's part
is kept on the session (`model_segments`) for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog

from bridge.audio.convert import Transcoder
from bridge.audio.formats import AudioFormat
from bridge.providers.base import ModelFormats, Provider, ProviderUnavailable
from bridge.session.costs import PriceTable, record_usage
from bridge.session.plan import CallPlan
from bridge.session.session import Session

# Called when another model takes over (the runner re-points its hooks and the conduct at it).
OnHandover = Callable[[Provider], None]


class ModelLine:
    def __init__(
        self,
        session: Session,
        plan: CallPlan,
        *,
        connect_timeout: float,
        close_timeout: float,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.session = session
        self.provider = plan.provider
        self.prices: PriceTable | None = plan.prices
        # Caller audio reaches the model through `uplink`; None while no model is started (setup, handover).
        self.uplink: Transcoder | None = None
        self.downlink: Transcoder | None = None
        self.on_handover: OnHandover | None = None
        self._fallbacks = list(plan.fallbacks)
        self._leg_format: AudioFormat | None = None
        self._connect_timeout = connect_timeout
        self._close_timeout = close_timeout
        self._log = log
        # Before connecting: a model that never answers is named on the record.
        session.begin_model(self.provider.name, session.model)
        session.speaks_text = self.provider.speaks_text

    async def connect(self) -> None:
        """Connect the call's model; one that refuses or does not answer hands over to the next fallback."""
        while True:
            try:
                await asyncio.wait_for(self.provider.connect(), self._connect_timeout)
                return
            except TimeoutError:
                failure = ProviderUnavailable("the model did not answer in time", code="provider_timeout")
            except ProviderUnavailable as exc:
                failure = exc
            if not await self._hand_over(failure.code):
                raise failure

    async def start(self, leg_format: AudioFormat, *, greet: bool) -> ModelFormats:
        """Configure the connected model for the leg; a refusal here also hands over to a fallback."""
        self._leg_format = leg_format
        while True:
            formats = self.provider.negotiate(leg_format)
            downlink = Transcoder(formats.output, leg_format)
            try:
                await self.provider.start(formats, greet=greet)
            except ProviderUnavailable as exc:
                if not await self._hand_over(exc.code):
                    raise
                await self.connect()
                continue
            self.downlink = downlink
            self.uplink = Transcoder(leg_format, formats.input)
            return formats

    async def fail_over(self, because: str) -> bool:
        """Mid-call: the model is lost for good; the next fallback takes over (False: none could)."""
        if self._leg_format is None or not self._fallbacks:
            self.session.end_model(because)
            return False
        self.uplink = None  # the caller's audio goes nowhere until the next model is started
        try:
            if not await self._hand_over(because):
                return False
            await self.connect()
            await self.start(self._leg_format, greet=False)  # it continues; it does not greet again
        except ProviderUnavailable as exc:
            self._log.warning("model_failover_failed", code=exc.code, error=str(exc))
            return False
        return True

    async def close(self) -> None:
        """Close the current model and bill what it consumed since its last report."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.provider.close(), self._close_timeout)
        usage = self.provider.final_usage()
        if usage is not None:
            prices = self.prices
            self.session.add_usage(record_usage(usage), prices.cost(usage) if prices else None)

    async def _hand_over(self, because: str) -> bool:
        """Close the current model and build the next fallback that can be built (False: none is left)."""
        while self._fallbacks:
            fallback = self._fallbacks.pop(0)
            await self.close()
            self.session.end_model(because)
            history = [(line.role, line.text) for line in self.session.transcript if line.text]
            try:
                provider = fallback.build(history)
            except ProviderUnavailable as exc:
                self.session.model_refused(fallback.name, fallback.model, exc.code)
                because = exc.code
                continue
            self._log.info(
                "model_failover", from_provider=self.provider.name, to_provider=fallback.name, reason=because
            )
            self.provider = provider
            self.prices = fallback.prices
            self.session.begin_model(fallback.name, fallback.model)
            self.session.speaks_text = provider.speaks_text
            if self.on_handover is not None:
                self.on_handover(provider)
            return True
        self.session.end_model(because)  # the last model's part ends with the failure that ends the call
        return False
