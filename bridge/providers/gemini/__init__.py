"""Gemini Live (BidiGenerateContent)."""

from __future__ import annotations

from bridge.providers.base import Provider
from bridge.providers.gemini.client import GeminiProvider
from bridge.providers.request import ProviderRequest
from bridge.settings_agents import GeminiSettings


def build(request: ProviderRequest) -> Provider:
    """A fresh provider for one call (raises ProviderUnavailable when it cannot be had)."""
    section = request.section()  # refuses a missing key
    assert isinstance(section, GeminiSettings)
    return GeminiProvider(settings=section, brief=request.brief, http=request.http)
