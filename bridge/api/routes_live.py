"""A call's live events: `GET /api/calls/{call_id}/live` hands out a socket URL and a 5-minute token;
`GET /api/calls/{call_id}/live/socket?token=...` is that WebSocket.

The socket is authenticated by the token alone (a browser cannot set headers on a WebSocket), checked
before the upgrade: a bad, expired or foreign token is refused in the JSON envelope, never upgraded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Final

from aiohttp import WSMsgType, web
from pydantic import BaseModel, Field

from bridge.api.appkeys import CALLS, COMPANY, MANAGER
from bridge.api.envelope import ok
from bridge.api.openapi import Operation, register
from bridge.errors import BadRequest, Conflict, Unauthorized
from bridge.integrations.live import (
    LiveEvent,
    LiveHub,
    LiveTokens,
    Subscriber,
    check_owner,
    line_event,
)
from bridge.logging import get_logger
from bridge.session.admission import valid_call_id
from bridge.session.session import Session

LIVE_HUB = web.AppKey("live_hub", LiveHub)
LIVE_TOKENS = web.AppKey("live_tokens", LiveTokens)

HEARTBEAT_SECONDS: Final = 20.0  # WebSocket ping; a peer that misses the pong is closed by aiohttp
CLOSE_SECONDS: Final = 5.0  # a close that cannot even be written (peer not reading) aborts the socket
MAX_CLIENT_MESSAGE: Final = 4096  # the client only says {"type": "ping"}
SOCKET_PATH: Final = "/api/calls/{call_id}/live/socket"


class LiveAccess(BaseModel):
    websocket_url: str = Field(description="Open this WebSocket (it already carries the token)")
    token: str = Field(description="Valid for 5 minutes, for this call and company only")
    expires_at: str


def _call_id(request: web.Request) -> str:
    call_id = request.match_info["call_id"]
    if not valid_call_id(call_id):
        raise BadRequest("call_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
    return call_id


async def _live_call(request: web.Request, company_id: str, call_id: str) -> Session:
    """The company's live call; 404 for an unknown or foreign one, 409 call_finished once it is over."""
    session = request.app[MANAGER].get(call_id)
    if session is None or session.company_id != company_id or session.state.is_terminal:
        await request.app[CALLS].record(company_id, call_id)  # 404 unless it is theirs
        raise Conflict(f"call {call_id} is already over", code="call_finished")
    return session


async def live_access(request: web.Request) -> web.Response:
    company_id = request[COMPANY].id
    call_id = _call_id(request)
    await _live_call(request, company_id, call_id)
    issued = request.app[LIVE_TOKENS].issue(call_id, company_id)
    scheme = "wss" if request.scheme == "https" else "ws"
    url = request.url.with_scheme(scheme).with_path(SOCKET_PATH.replace("{call_id}", call_id))
    access = LiveAccess(
        websocket_url=str(url.with_query(token=issued.token)),
        token=issued.token,
        expires_at=issued.expires_at_iso,
    )
    return ok(access)


async def live_socket(request: web.Request) -> web.StreamResponse:
    call_id = _call_id(request)
    token = request.query.get("token")
    if not token:
        raise Unauthorized("a live token is required (?token=, from GET /live)", code="unauthorized")
    company_id = request.app[LIVE_TOKENS].verify(token, call_id)
    session = request.app[MANAGER].get(call_id)
    if session is not None:
        check_owner(session, company_id)
    if session is None or session.state.is_terminal:
        raise Conflict(f"call {call_id} is already over", code="call_finished")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_CLIENT_MESSAGE)
    if not ws.can_prepare(request).ok:
        raise BadRequest("this is a WebSocket: send an upgrade request", code="not_websocket")
    hub = request.app[LIVE_HUB]
    # Subscribe and copy the transcript in one step (no await between): no line missed or repeated.
    subscriber = hub.subscribe(session)
    backlog = [line_event(call_id, index, line) for index, line in enumerate(session.transcript)]
    log = get_logger("live")
    log.info("live_socket_opened", call_id=call_id, company_id=company_id)
    reason = "client_closed"
    try:
        await ws.prepare(request)
        await ws.send_json({"type": "connected", "call_id": call_id, "status": session.state.value})
        for event in backlog:
            await ws.send_json(event)
        reason = await _pump(ws, subscriber, request)
    except (ConnectionError, asyncio.CancelledError):
        reason = "connection_lost"
        raise
    finally:
        hub.unsubscribe(subscriber)
        log.info("live_socket_closed", call_id=call_id, reason=reason)
    return ws


async def _pump(ws: web.WebSocketResponse, subscriber: Subscriber, request: web.Request) -> str:
    """Send the call's events until it ends, the client leaves, or it falls too far behind."""
    sender = asyncio.ensure_future(_send_events(ws, subscriber))
    reader = asyncio.ensure_future(_read_client(ws))
    dropped = asyncio.ensure_future(subscriber.dropped.wait())
    try:
        done, _ = await asyncio.wait({sender, reader, dropped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sender, reader, dropped):
            task.cancel()
        await asyncio.gather(sender, reader, dropped, return_exceptions=True)
    if dropped in done and not (sender in done and sender.exception() is None):
        await _close(request, ws, 1008, b"too slow")
        return "too_slow"
    if sender in done and sender.exception() is None:
        await _close(request, ws, 1000, b"call ended")
        return "call_ended"
    await _close(request, ws, 1000, b"")
    return "client_closed"


async def _send_events(ws: web.WebSocketResponse, subscriber: Subscriber) -> None:
    while True:
        event = await subscriber.queue.get()
        if event is None:
            return
        await ws.send_json(event)


async def _read_client(ws: web.WebSocketResponse) -> None:
    """Answer the client's JSON pings; a close (or anything that ends the socket) returns."""
    async for message in ws:
        if message.type is WSMsgType.TEXT and _is_ping(message.data):
            await ws.send_json({"type": "pong"})
        elif message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
            error: LiveEvent = {
                "type": "error",
                "code": "unexpected_message",
                "message": 'this socket only sends; the client may send {"type": "ping"}',
            }
            await ws.send_json(error)


def _is_ping(text: str) -> bool:
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("type") == "ping"


async def _close(request: web.Request, ws: web.WebSocketResponse, code: int, message: bytes) -> None:
    try:
        async with asyncio.timeout(CLOSE_SECONDS):
            await ws.close(code=code, message=message)
    except TimeoutError:
        # The peer reads nothing: our close frame sits in a full buffer. Let the socket go.
        transport = request.transport
        if transport is not None:
            transport.abort()
    except ConnectionError:
        pass


OPERATIONS = (
    Operation(
        "GET",
        "/api/calls/{call_id}/live",
        live_access,
        "A WebSocket URL and a 5-minute token for the call's live events",
        "calls",
        response=LiveAccess,
        errors=(404, 409),
    ),
    Operation(
        "GET",
        SOCKET_PATH,
        live_socket,
        "The call's live events (WebSocket)",
        "calls",
        auth="live_token",
        success_status=101,
        errors=(403, 409),
        description="Streams JSON events: `connected`, `transcript_update` (role, text, at, truncated, "
        "index: a later event with the same index replaces the line), `call_status_update` (status, "
        "disconnected_by, error_code) and `error`; closes after the final status. WebSocket pings keep "
        'it alive; the client may also send {"type": "ping"} and gets {"type": "pong"}. A client that '
        'falls behind is closed with 1008 "too slow". The token is checked before the upgrade.',
    ),
)


def setup_routes(app: web.Application, hub: LiveHub, tokens: LiveTokens) -> None:
    app[LIVE_HUB] = hub
    app[LIVE_TOKENS] = tokens
    register(app, OPERATIONS)
