"""ElevenLabs Agents (Conversational AI WebSocket)."""

from __future__ import annotations

from bridge.providers.base import Provider, ProviderUnavailable
from bridge.providers.elevenlabs.client import ElevenLabsProvider
from bridge.providers.request import ProviderRequest
from bridge.settings_agents import ElevenLabsSettings


def build(request: ProviderRequest) -> Provider:
    """A fresh provider for one call (raises ProviderUnavailable when it cannot be had)."""
    section = request.section()  # a public agent needs no key, so this never refuses for elevenlabs
    if not isinstance(section, ElevenLabsSettings) or not section.model:
        raise ProviderUnavailable(
            "providers.elevenlabs.model (the agent id) is not set",
            code="provider_not_configured",
            provider=request.name,
        )
    return ElevenLabsProvider(settings=section, brief=request.brief, http=request.http)
