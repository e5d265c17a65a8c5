"""A strict fake of Meta's Graph API (WhatsApp Cloud API messages)."""

from tests.fakes.graph_api.server import FakeGraphApi

__all__ = ["FakeGraphApi"]
