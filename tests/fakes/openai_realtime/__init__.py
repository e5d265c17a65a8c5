"""A strict fake OpenAI Realtime (GA) server, with Azure v1 and xAI variants, for tests and the benchmark.

    async with FakeRealtimeServer(script=Script(turns=(Turn(reply_ms=800),))) as server:
        ... connect to server.url_for("gpt-realtime") with server.auth_headers() ...
    server.assert_clean()

Written from ../shared/specs/realtime-openai.md, independently of `bridge.providers.openai`.
"""

from .audio import PCM24, PCMA, PCMU, AudioFactory, AudioFormat, decode, default_audio_factory, encode
from .script import (
    ConnectionRecord,
    FatalError,
    ReceivedEvent,
    ResponseRecord,
    Script,
    ScriptedError,
    ToolCall,
    TruncateRecord,
    Turn,
    Usage,
)
from .server import FakeRealtimeServer, Variant
from .validation import CLIENT_EVENTS, SERVER_EVENTS, parse_client_event

__all__ = [
    "CLIENT_EVENTS",
    "PCM24",
    "PCMA",
    "PCMU",
    "SERVER_EVENTS",
    "AudioFactory",
    "AudioFormat",
    "ConnectionRecord",
    "FakeRealtimeServer",
    "FatalError",
    "ReceivedEvent",
    "ResponseRecord",
    "Script",
    "ScriptedError",
    "ToolCall",
    "TruncateRecord",
    "Turn",
    "Usage",
    "Variant",
    "decode",
    "default_audio_factory",
    "encode",
    "parse_client_event",
]
