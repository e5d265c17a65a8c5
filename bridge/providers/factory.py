"""Which provider a call gets, from its company's agent profile."""

from __future__ import annotations

from bridge.providers.base import Provider, ProviderUnavailable
from bridge.providers.echo import EchoProvider
from bridge.settings import AgentSettings, Settings


def provider_for(agent: AgentSettings, settings: Settings) -> Provider:
    """A fresh provider for one call; raises ProviderUnavailable when this build lacks its client."""
    if agent.provider == "echo":
        return EchoProvider()
    raise ProviderUnavailable(
        f"provider {agent.provider!r} is not available in this build", code="provider_not_supported"
    )
