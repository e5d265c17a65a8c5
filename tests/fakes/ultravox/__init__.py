"""A strict fake Ultravox (REST create-call + the call's server WebSocket) for tests and the benchmark.

    async with FakeUltravoxServer(api_key="uv-key", script=Script(turns=(Turn(reply_ms=800),))) as fake:
        ... [providers.ultravox] url = fake.url ...
    fake.assert_clean()

Written from Ultravox's OpenAPI document and its data-message docs, independently of
`bridge.providers.ultravox`.
"""

from .script import BargeIn, CallRecord, ConnectionRecord, Script, ToolCall, Turn
from .server import FakeUltravoxServer
from .validation import CLIENT_MESSAGES, Invalid, check_start_call, parse_client_message

__all__ = [
    "CLIENT_MESSAGES",
    "BargeIn",
    "CallRecord",
    "ConnectionRecord",
    "FakeUltravoxServer",
    "Invalid",
    "Script",
    "ToolCall",
    "Turn",
    "check_start_call",
    "parse_client_message",
]
