"""Deepgram Voice Agent (v1)."""

from __future__ import annotations

from bridge.providers.base import Provider, ProviderUnavailable
from bridge.providers.deepgram.client import DeepgramProvider
from bridge.providers.request import ProviderRequest
from bridge.settings_agents import DeepgramSettings


def build(request: ProviderRequest) -> Provider:
    """A fresh provider for one call (raises ProviderUnavailable when it cannot be had)."""
    section = request.section()  # refuses a missing key
    if not isinstance(section, DeepgramSettings):
        raise ProviderUnavailable(
            f"providers.{request.name} is not a Deepgram section",
            code="provider_not_supported",
            provider=request.name,
        )
    return DeepgramProvider(settings=section, brief=request.brief, http=request.http)
