"""GET /api/real-time-voice-stream: Asterisk's chan_websocket media socket, as the API documents it.

The handler is the transport's (`asterisk/media_ws.py`, wired in by the composition root); it checks
its own credentials through `session.admission` and refuses before the upgrade.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bridge.api.openapi import Handler, Operation
from bridge.keys import DIALLED_PATTERN, PHONE_PATTERN
from bridge.session.admission import CALL_ID_PATTERN

MEDIA_PATH = "/api/real-time-voice-stream"


class MediaQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    callId: str | None = Field(
        None,
        pattern=CALL_ID_PATTERN,
        description="The call's id: the `connect` webhook's callId, if one came",
    )
    aNumberE164: str | None = Field(
        None, pattern=PHONE_PATTERN, description="The caller, E.164 digits without '+'"
    )
    bNumberE164: str | None = Field(
        None,
        pattern=DIALLED_PATTERN,
        description="The called number, E.164 digits without '+': decides the company",
    )


# The WebSocket opening handshake (RFC 6455 4.1) as Asterisk sends it.
HANDSHAKE_HEADERS: dict[str, dict[str, Any]] = {
    "Upgrade": {"type": "string", "enum": ["websocket"]},
    "Connection": {"type": "string", "enum": ["Upgrade"]},
    "Sec-WebSocket-Version": {"type": "string", "enum": ["13"]},
    "Sec-WebSocket-Key": {"type": "string", "pattern": "^[A-Za-z0-9+/]{21}[AQgw]==$"},
    "Sec-WebSocket-Protocol": {"type": "string", "enum": ["media"]},
}


def media_operation(handler: Handler) -> Operation:
    return Operation(
        "GET",
        MEDIA_PATH,
        handler,
        "Asterisk's chan_websocket media (WebSocket, subprotocol `media`)",
        "pbx",
        auth="media",
        query=MediaQuery,
        headers=HANDSHAKE_HEADERS,
        success_status=101,
        errors=(402, 403, 404, 409, 429, 503),  # 429: the company's max_live_calls
        description="Asterisk dials out to this WebSocket (websocket_client.conf). The upgrade needs "
        "connector credentials (HTTP Basic password, Bearer or x-connector-api-key) unless "
        "`[connector] allow_unauthenticated_media` lets a pending call's socket attach without them. "
        "A request that is not a WebSocket upgrade gets 400 and never touches a call.",
    )
