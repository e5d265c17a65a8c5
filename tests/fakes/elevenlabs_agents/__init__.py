"""A strict fake ElevenLabs Agents (Conversational AI) server, for tests and the benchmark.

    async with FakeElevenLabsServer(script=Script(turns=(Turn(reply_ms=800),))) as server:
        ... GET signed URL with xi-api-key, connect, send conversation_initiation_client_data ...
    server.assert_clean()

Written from ../shared/specs/realtime-others.md section 2 and the `elevenlabs` SDK, independently of
`bridge.providers.elevenlabs`.
"""

from .script import AGENT_FORMATS, ConnectionRecord, ResponseRecord, Script, ToolCall, Turn, wire_format
from .server import SIGNED_URL_PATH, WS_PATH, FakeElevenLabsServer
from .validation import POLICY_VIOLATION, Violation, audio_bytes, check_client_message, unknown_fields

__all__ = [
    "AGENT_FORMATS",
    "POLICY_VIOLATION",
    "SIGNED_URL_PATH",
    "WS_PATH",
    "ConnectionRecord",
    "FakeElevenLabsServer",
    "ResponseRecord",
    "Script",
    "ToolCall",
    "Turn",
    "Violation",
    "audio_bytes",
    "check_client_message",
    "unknown_fields",
    "wire_format",
]
