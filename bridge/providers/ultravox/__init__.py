"""Ultravox (REST create-call, then its server WebSocket)."""

from __future__ import annotations

from bridge.providers.base import Provider
from bridge.providers.request import ProviderRequest
from bridge.providers.ultravox.client import UltravoxProvider


def build(request: ProviderRequest) -> Provider:
    """A fresh provider for one call (raises ProviderUnavailable when it cannot be had)."""
    request.section()  # refuses a missing key
    return UltravoxProvider(
        settings=request.settings.providers.ultravox, brief=request.brief, http=request.http
    )
