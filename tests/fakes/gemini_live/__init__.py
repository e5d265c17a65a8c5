"""A strict fake Gemini Live (BidiGenerateContent) server, for tests and the benchmark.

    async with FakeGeminiLive(api_key="k", script=Script(turns=(Turn(reply_ms=800),))) as fake:
        ... connect to fake.url with the header x-goog-api-key: k ...
    fake.assert_clean()

Written from ../shared/specs/realtime-others.md section 1, independently of `bridge.providers.gemini`;
client messages are validated with google-genai's own models (see validation.py).
"""

from .script import ConnectionRecord, ModelTurnRecord, ReceivedMessage, Script, ToolCall, Turn
from .server import DEFAULT_PATH, FakeGeminiLive
from .validation import ClientMessage, ClientMessageError, parse_client_message

__all__ = [
    "DEFAULT_PATH",
    "ClientMessage",
    "ClientMessageError",
    "ConnectionRecord",
    "FakeGeminiLive",
    "ModelTurnRecord",
    "ReceivedMessage",
    "Script",
    "ToolCall",
    "Turn",
    "parse_client_message",
]
