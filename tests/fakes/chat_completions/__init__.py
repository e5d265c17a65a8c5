"""A strict fake of an OpenAI-compatible chat completions endpoint (the post-call report's text model)."""

from tests.fakes.chat_completions.server import FakeChatCompletions

__all__ = ["FakeChatCompletions"]
