"""Which provider a call gets, from its company's agent profile and the call's own brief."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp

from bridge.providers.base import Provider, ProviderUnavailable, ToolSpec
from bridge.providers.echo import EchoProvider
from bridge.providers.openai.client import RealtimeProvider
from bridge.providers.openai.dialect import DIALECTS
from bridge.providers.openai.session_config import AgentBrief
from bridge.settings import AgentSettings, Settings


@dataclass(frozen=True, slots=True)
class CallBrief:
    """What this particular call adds to the agent profile (outbound calls bring their own)."""

    call_objective: str = ""
    first_message: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)


def provider_for(
    agent: AgentSettings,
    settings: Settings,
    *,
    call: CallBrief | None = None,
    tools: Sequence[ToolSpec] = (),
    http: aiohttp.ClientSession | None = None,
) -> Provider:
    """A fresh provider for one call; raises ProviderUnavailable when it cannot be had."""
    if agent.provider == "echo":
        return EchoProvider()
    dialect = DIALECTS.get(agent.provider)
    if dialect is None or http is None:
        raise ProviderUnavailable(
            f"provider {agent.provider!r} is not available here",
            code="provider_not_supported",
            provider=agent.provider,
        )
    section = settings.providers.realtime(agent.provider)
    if not section.api_key.get_secret_value():
        raise ProviderUnavailable(
            f"providers.{agent.provider}.api_key is not set",
            code="provider_not_configured",
            provider=agent.provider,
        )
    call = call or CallBrief()
    brief = AgentBrief(
        instructions=agent.instructions,
        greeting=agent.greeting,
        voice=agent.voice,
        language=agent.language,
        turn_detection=agent.turn_detection,
        vad_threshold=agent.vad_threshold,
        silence_duration_ms=agent.silence_duration_ms,
        prefix_padding_ms=agent.prefix_padding_ms,
        noise_reduction=agent.noise_reduction,
        transcription_model=section.transcription_model,
        tools=tuple(tools),
        call_objective=call.call_objective,
        first_message=call.first_message,
        variables=dict(call.variables),
    )
    return RealtimeProvider(dialect=dialect, settings=section, brief=brief, http=http)
