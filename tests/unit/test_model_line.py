"""ModelLine: which model serves a call, and the handover to `fallback_providers` when one fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from bridge.audio.formats import SLIN16, SLIN24, ULAW, AudioFormat
from bridge.logging import get_logger
from bridge.providers.base import ModelFormats, Provider, ProviderEvent, ProviderUnavailable, Usage
from bridge.session.costs import PriceTable
from bridge.session.model_line import ModelLine
from bridge.session.plan import CallPlan, Fallback
from bridge.session.session import CallInfo, Session
from bridge.settings_agents import ModelPrice


class Model(Provider):
    """A model that fails where told: at connect, at start, or never; it speaks `output`."""

    def __init__(
        self, name: str, *, fail_at: str = "", output: AudioFormat = ULAW, hang: bool = False
    ) -> None:
        self.name = name
        self.fail_at = fail_at
        self.output = output
        self.hang = hang
        self.connected = self.closed = False
        self.started_with: tuple[ModelFormats, bool] | None = None

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        return ModelFormats(input=leg, output=self.output)

    async def connect(self) -> None:
        if self.hang:
            await asyncio.sleep(3600)
        if self.fail_at == "connect":
            raise ProviderUnavailable(f"{self.name} refused", code=f"{self.name}_refused")
        self.connected = True

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        if self.fail_at == "start":
            raise ProviderUnavailable(f"{self.name} refused the session", code=f"{self.name}_setup")
        self.started_with = (formats, greet)

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        pass

    async def events(self) -> AsyncIterator[ProviderEvent]:
        return
        yield

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        pass

    async def close(self) -> None:
        self.closed = True

    def final_usage(self) -> Usage | None:
        return Usage(model_seconds=30.0) if self.closed else None


class Builds:
    """Fallback builders that remember the history each was given."""

    def __init__(self) -> None:
        self.histories: dict[str, list[tuple[str, str]]] = {}
        self.models: dict[str, Model] = {}

    def fallback(self, name: str, *, refuse_build: bool = False, **model: object) -> Fallback:
        def build(history: Sequence[tuple[str, str]]) -> Provider:
            self.histories[name] = list(history)
            if refuse_build:
                raise ProviderUnavailable("no key", code="provider_not_configured", provider=name)
            built = Model(name, **model)  # type: ignore[arg-type]
            self.models[name] = built
            return built

        return Fallback(name, f"{name}-model", build, PriceTable(ModelPrice(per_minute=0.1), None))


def line_for(primary: Model, *fallbacks: Fallback, connect_timeout: float = 5.0) -> tuple[ModelLine, Session]:
    session = Session(CallInfo("c1", "acme", "inbound", "+34600", "+34987"))
    session.model = "primary-model"
    line = ModelLine(
        session,
        CallPlan(primary, fallbacks=fallbacks),
        connect_timeout=connect_timeout,
        close_timeout=1.0,
        log=get_logger("test"),
    )
    return line, session


def parts(session: Session) -> list[tuple[str, str, str | None]]:
    return [(s.provider, s.model, s.ended_because) for s in session.model_segments]


async def test_a_refusal_at_connect_hands_over_with_no_history() -> None:
    builds = Builds()
    primary = Model("a", fail_at="connect")
    line, session = line_for(primary, builds.fallback("b"))
    handed: list[Provider] = []
    line.on_handover = handed.append
    await line.connect()
    assert primary.closed
    assert line.provider is builds.models["b"]
    assert handed == [builds.models["b"]]
    assert builds.models["b"].connected
    assert builds.histories["b"] == []
    assert (session.provider, session.model) == ("b", "b-model")
    assert parts(session) == [("a", "primary-model", "a_refused"), ("b", "b-model", None)]
    assert line.prices is not None
    assert line.prices.model == ModelPrice(per_minute=0.1)


async def test_a_model_that_does_not_answer_in_time_is_a_timeout() -> None:
    builds = Builds()
    line, session = line_for(Model("a", hang=True), builds.fallback("b"), connect_timeout=0.05)
    await line.connect()
    assert parts(session)[0] == ("a", "primary-model", "provider_timeout")


async def test_a_refusal_at_start_hands_over_and_the_next_model_is_started_for_the_leg() -> None:
    builds = Builds()
    line, session = line_for(Model("a", fail_at="start"), builds.fallback("b", output=SLIN24))
    await line.connect()
    formats = await line.start(SLIN16, greet=True)
    b = builds.models["b"]
    assert b.connected
    assert b.started_with == (ModelFormats(SLIN16, SLIN24), True)
    assert formats.output == SLIN24
    assert line.uplink is not None
    assert line.downlink is not None
    assert not line.downlink.is_passthrough  # 24 kHz model audio to a 16 kHz leg
    assert parts(session) == [("a", "primary-model", "a_setup"), ("b", "b-model", None)]


async def test_a_fallback_that_cannot_be_built_is_skipped_and_recorded() -> None:
    builds = Builds()
    line, session = line_for(
        Model("a", fail_at="connect"), builds.fallback("b", refuse_build=True), builds.fallback("c")
    )
    await line.connect()
    assert line.provider is builds.models["c"]
    assert parts(session) == [
        ("a", "primary-model", "a_refused"),
        ("b", "b-model", "provider_not_configured"),
        ("c", "c-model", None),
    ]
    assert session.provider == "c"


async def test_with_every_model_refusing_the_last_failure_is_raised() -> None:
    builds = Builds()
    line, session = line_for(Model("a", fail_at="connect"), builds.fallback("b", fail_at="connect"))
    with pytest.raises(ProviderUnavailable) as caught:
        await line.connect()
    assert caught.value.code == "b_refused"
    assert parts(session) == [("a", "primary-model", "a_refused"), ("b", "b-model", "b_refused")]


async def test_mid_call_the_next_model_gets_the_conversation_and_does_not_greet() -> None:
    builds = Builds()
    line, session = line_for(Model("a"), builds.fallback("b"))
    await line.connect()
    await line.start(ULAW, greet=True)
    session.add_line("bot", "Hello, Acme here.")
    session.add_line("caller", "I need a plumber.")
    session.add_line("caller", "")
    assert await line.fail_over("provider_disconnected")
    b = builds.models["b"]
    assert builds.histories["b"] == [("bot", "Hello, Acme here."), ("caller", "I need a plumber.")]
    assert b.started_with == (ModelFormats(ULAW, ULAW), False)
    assert line.uplink is not None
    assert parts(session) == [("a", "primary-model", "provider_disconnected"), ("b", "b-model", None)]


async def test_mid_call_with_no_fallback_the_part_ends_with_the_failure() -> None:
    line, session = line_for(Model("a"))
    await line.connect()
    await line.start(ULAW, greet=True)
    assert not await line.fail_over("provider_disconnected")
    assert parts(session) == [("a", "primary-model", "provider_disconnected")]


async def test_closing_a_model_bills_what_it_owes_at_its_own_price() -> None:
    builds = Builds()
    line, session = line_for(Model("a"), builds.fallback("b"))
    await line.connect()
    await line.start(ULAW, greet=True)
    assert await line.fail_over("provider_disconnected")  # "a" is closed: it had no price, so no cost
    assert session.usage.model_seconds == 30.0
    assert session.cost_usd is None
    await line.close()  # "b" bills at its per_minute of 0.1
    assert session.usage.model_seconds == 60.0
    assert session.cost_usd == 0.05
