"""What building one call's provider takes: which, the agent, the settings, the brief, the HTTP client.

Each provider package exposes `build(request) -> Provider`; `factory.py` picks the builder by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp

from bridge.providers.base import ProviderUnavailable
from bridge.providers.brief import AgentBrief
from bridge.settings import AgentSettings, Settings
from bridge.settings_agents import ModelServiceSettings


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    name: str  # the provider to build: the agent's own, or one of its fallback_providers
    agent: AgentSettings
    settings: Settings
    brief: AgentBrief  # instructions, greeting, tools, the call's variables and, on failover, its history
    http: aiohttp.ClientSession

    def section(self) -> ModelServiceSettings:
        """`[providers.<name>]`, refused when its key is missing (a call cannot use it)."""
        section = self.settings.providers.section(self.name)
        if not section.api_key.get_secret_value() and self.name != "elevenlabs":
            raise ProviderUnavailable(
                f"providers.{self.name}.api_key is not set",
                code="provider_not_configured",
                provider=self.name,
            )
        return section
