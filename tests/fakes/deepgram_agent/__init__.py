"""A strict fake Deepgram Voice Agent (v1) server, for tests and the benchmark.

Written from ../shared/specs/realtime-others.md section 3 and deepgram-sdk's AgentV1* types,
independently of `bridge.providers.deepgram`.
"""

from .connection import ERROR_CLOSE_CODE, wire_format
from .script import ConnectionRecord, ReceivedMessage, Reply, Script, ToolCall, Turn
from .server import PATH, FakeDeepgramAgent
from .validation import ClientMessageError, validate_client_message

__all__ = [
    "ERROR_CLOSE_CODE",
    "PATH",
    "ClientMessageError",
    "ConnectionRecord",
    "FakeDeepgramAgent",
    "ReceivedMessage",
    "Reply",
    "Script",
    "ToolCall",
    "Turn",
    "validate_client_message",
    "wire_format",
]
