"""What each call gets: its agent, model and fallbacks, tools, prices and recording, decided when its
media arrives (part of the composition root, bridge/app.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial

import aiohttp

from bridge.agents.catalog import AgentCatalog
from bridge.agents.templating import call_facts, template_variables
from bridge.directory import Directory
from bridge.errors import BridgeError
from bridge.providers.base import Provider, ProviderUnavailable
from bridge.providers.factory import CallBrief, provider_for
from bridge.recording.service import Recordings
from bridge.session.control import CallController
from bridge.session.costs import PriceTable
from bridge.session.plan import CallPlan, Fallback, ModelBuilder
from bridge.session.policy import call_policy
from bridge.session.session import CallInfo, Session
from bridge.session.tools import ToolBox
from bridge.settings import Settings
from bridge.settings_agents import MODEL_PROVIDERS, REALTIME_PROVIDERS


def model_of(provider: str, settings: Settings) -> str:
    return settings.providers.section(provider).model if provider in MODEL_PROVIDERS else ""


def prices_for(provider: str, settings: Settings) -> PriceTable | None:
    """What `provider`'s configured model costs (None: echo, which costs nothing)."""
    if provider not in MODEL_PROVIDERS:
        return None
    section = settings.providers.section(provider)
    transcription = None
    if provider in REALTIME_PROVIDERS:
        realtime = settings.providers.realtime(provider)
        transcription = realtime.transcription_prices.get(realtime.transcription_model)
    return PriceTable(section.price(), transcription)


def make_call_planner(
    directory: Callable[[], Directory],
    settings: Settings,
    http: aiohttp.ClientSession,
    controller: CallController | None = None,
    recordings: Recordings | None = None,
    *,
    agents: AgentCatalog | None = None,
) -> Callable[[Session], CallPlan]:
    """What each call gets: its agent (read at call time, so an edit or a SIGHUP applies to new calls)."""
    catalog = agents or AgentCatalog(directory)

    def plan_call(session: Session) -> CallPlan:
        info = session.info
        if not info.agent_id and info.direction == "inbound":
            # A call no webhook chose an agent for (ARI, a credentialed media socket): the number's own.
            chosen = catalog.for_number(info.company_id, info.called)
            if chosen:
                info = session.info = dataclasses.replace(info, agent_id=chosen)
        try:
            agent = catalog.resolve(info.company_id, info.agent_id)
        except BridgeError as exc:  # deleted or disabled since the call was requested
            raise ProviderUnavailable(exc.message, code=exc.code) from exc
        tools = ToolBox(agent, controller=controller, http=http, outbound=info.direction == "outbound")
        variables = call_variables(info, directory())
        brief = CallBrief(info.call_objective, info.first_message, variables)
        specs = tools.specs()

        def builder(name: str) -> ModelBuilder:
            def build(history: Sequence[tuple[str, str]]) -> Provider:
                call = dataclasses.replace(brief, history=tuple(history))
                return provider_for(agent, settings, name=name, call=call, tools=specs, http=http)

            return build

        fallbacks = [
            Fallback(name, model_of(name, settings), builder(name), prices_for(name, settings))
            for name in agent.fallback_providers
        ]
        name: str = agent.provider
        while True:  # a provider that cannot even be built (e.g. no key) hands over at once
            try:
                provider = builder(name)(())
                break
            except ProviderUnavailable as exc:
                if not fallbacks:
                    raise
                session.model_refused(name, model_of(name, settings), exc.code)
                name = fallbacks.pop(0).name
        session.model = model_of(name, settings)
        return CallPlan(
            provider,
            tools=tools,
            prices=prices_for(name, settings),
            fallbacks=tuple(fallbacks),
            controller=controller,
            local_barge_in_ms=agent.local_barge_in_ms if agent.local_barge_in else None,
            policy=call_policy(agent, dataclasses.replace(info, variables=variables)),
            tap=partial(recordings.open, session.company_id, session.call_id)
            if recordings is not None and agent.recording
            else None,
        )

    return plan_call


def call_variables(info: CallInfo, directory: Directory) -> dict[str, str]:
    """Every name the call's placeholders may use: its variables as `x` and `crm.x`, facts as `call.y`."""
    company = directory.companies.get(info.company_id)
    facts = call_facts(
        call_id=info.call_id,
        caller=info.caller,
        called=info.called,
        direction=info.direction,
        caller_name=info.caller_name,
        company=(company.settings.name or company.id) if company is not None else info.company_id,
    )
    return template_variables(info.variables, facts)
