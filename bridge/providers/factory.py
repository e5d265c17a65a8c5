"""Which provider a call gets, from its company's agent profile and the call's own brief."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import aiohttp

from bridge.providers import deepgram, elevenlabs, gemini, ultravox
from bridge.providers.base import Provider, ProviderUnavailable, ToolSpec
from bridge.providers.brief import AgentBrief
from bridge.providers.echo import EchoProvider
from bridge.providers.openai.client import RealtimeProvider
from bridge.providers.openai.dialect import DIALECTS
from bridge.providers.request import ProviderRequest
from bridge.settings import AgentSettings, Settings


@dataclass(frozen=True, slots=True)
class CallBrief:
    """What this particular call adds to the agent profile (outbound calls bring their own)."""

    call_objective: str = ""
    first_message: str = ""
    variables: Mapping[str, str] = field(default_factory=dict)
    history: Sequence[tuple[str, str]] = ()  # failover: the conversation so far, (role, text)


def _openai_family(request: ProviderRequest) -> Provider:
    section = request.settings.providers.realtime(request.name)
    request.section()  # refuses a missing key
    return RealtimeProvider(
        dialect=DIALECTS[request.name], settings=section, brief=request.brief, http=request.http
    )


Builder = Callable[[ProviderRequest], Provider]
BUILDERS: Mapping[str, Builder] = MappingProxyType(
    {
        **{name: _openai_family for name in DIALECTS},
        "gemini": gemini.build,
        "elevenlabs": elevenlabs.build,
        "deepgram": deepgram.build,
        "ultravox": ultravox.build,
    }
)


def provider_for(
    agent: AgentSettings,
    settings: Settings,
    *,
    name: str | None = None,
    call: CallBrief | None = None,
    tools: Sequence[ToolSpec] = (),
    http: aiohttp.ClientSession | None = None,
) -> Provider:
    """A fresh provider for one call (`name`: a fallback instead of the agent's own provider); raises
    ProviderUnavailable when it cannot be had."""
    name = name or agent.provider
    if name == "echo":
        return EchoProvider()
    builder = BUILDERS.get(name)
    if builder is None or http is None:
        raise ProviderUnavailable(
            f"provider {name!r} is not available here", code="provider_not_supported", provider=name
        )
    call = call or CallBrief()
    transcription_model = settings.providers.realtime(name).transcription_model if name in DIALECTS else ""
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
        vad_eagerness=agent.vad_eagerness,
        idle_timeout_ms=agent.idle_timeout_ms,
        truncation=agent.truncation,
        retention_ratio=agent.retention_ratio,
        truncation_token_limit=agent.truncation_token_limit,
        transcription_model=transcription_model,
        tools=tuple(tools),
        call_objective=call.call_objective,
        first_message=call.first_message,
        variables=dict(call.variables),
        history=tuple(call.history),
    )
    return builder(ProviderRequest(name=name, agent=agent, settings=settings, brief=brief, http=http))
