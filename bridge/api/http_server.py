"""The HTTP listener's connection guard: a request's headers must arrive within `header_timeout_seconds`.

aiohttp (3.14) has no header-read timeout, only a keep-alive timer, so a client that trickles a
request head one byte at a time (slowloris) holds a connection for as long as it likes. Its server
offers no hook for this, so the runner builds a `Server` whose protocol is a `RequestHandler`
subclass; the overridden methods (`connection_made`, `data_received`, `connection_lost`,
`_handle_request`) keep aiohttp's behaviour and only add a timer. The tests in
tests/integration/test_http_timeouts.py pin what this relies on.

The clock runs from the connection opening until its first request head is parsed, and on a
keep-alive connection from the first byte of the next request until that head is parsed. An idle
keep-alive connection is aiohttp's keep-alive timer's business, and once a head is parsed the
request belongs to its handler: a slow handler or a long-lived WebSocket (the media socket) is never
cut. Bytes of a next request that arrive while the previous one is still being handled count as
idle until more arrive (aiohttp's parser does not say whether it holds part of a head).

On expiry the connection is closed without a response, as nginx does for `client_header_timeout`:
the client may still be sending, so a 408 would often be lost to a reset anyway, and on a connection
that never sent a byte an unsolicited 408 would only confuse it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from bridge.logging import get_logger

_log = get_logger("http")

# What a request aiohttp could not parse gets instead of aiohttp's page (which quotes the bad bytes).
_PROTOCOL_ERRORS = {
    400: ("bad_http_request", "the HTTP request could not be parsed"),
    413: ("payload_too_large", "request too large"),
    431: ("headers_too_large", "request headers too large"),
}  # anything else under 500: bad_request


class HeaderTimeoutRequestHandler(RequestHandler):
    """aiohttp's HTTP/1 protocol plus a deadline for each request head."""

    __slots__ = ("_awaiting_head", "_header_deadline", "_header_timeout", "_last_body")

    def __init__(self, manager: Server, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._header_timeout = header_timeout
        self._header_deadline: asyncio.TimerHandle | None = None
        # True from the connection opening, and again once a response is done with no request queued.
        self._awaiting_head = True
        # The previous request's body: bytes that arrive before it ends are body, not a next head.
        self._last_body: StreamReader | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A connection that never sends a byte is held to the deadline too.
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        if self._upgraded:  # a WebSocket now (caller audio, 50 messages a second): no more heads
            super().data_received(data)
            return
        if data and self._header_deadline is None and self._waiting_for_next_head():
            self._arm_header_deadline()
        heads_before = self._request_count
        super().data_received(data)
        if self._request_count != heads_before:
            # A whole head arrived (or a bad one, which aiohttp answers with 400 and closes).
            self._awaiting_head = False
            self._last_body = None
            self._cancel_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    async def _handle_request(
        self,
        request: BaseRequest,
        start_time: float | None,
        request_handler: Callable[[BaseRequest], Awaitable[web.StreamResponse]],
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super()._handle_request(request, start_time, request_handler)
        finally:
            # The response is written; a head already queued (pipelining) is handled next, else the
            # connection waits for one. Its clock starts at the next byte, not now: idling is keep-alive.
            if not self._messages:
                self._awaiting_head = True
                self._last_body = request.content

    def _waiting_for_next_head(self) -> bool:
        return (
            self._awaiting_head
            and self._payload_parser is None
            and not self._upgraded
            and (self._last_body is None or self._last_body.is_eof())
        )

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self._loop.call_later(self._header_timeout, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if not self._awaiting_head or self.transport is None or self._request_in_progress or self._messages:
            return
        # Only while aiohttp waits for a request (as its keep-alive timer checks): never mid-response.
        if self._waiter is None or self._waiter.done():
            return
        peer = self.transport.get_extra_info("peername")
        _log.info(
            "http_header_timeout",
            peer=peer[0] if isinstance(peer, tuple) else None,
            timeout_seconds=self._header_timeout,
        )
        self.force_close()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse (or our bug, for a 500). aiohttp's own page quotes the
        offending line or header, which may carry a key, and it logs a traceback for what is only a
        client's mistake: answer in the envelope and log one line (scrubbed like every log line)."""
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        _log.info(
            "bad_http_request",
            status=status,
            error=type(exc).__name__ if exc is not None else None,
            detail=" ".join(str(exc if exc is not None else message).split())[:300],
        )
        if request.writer.output_size > 0:  # as aiohttp: nothing more can be said on this connection
            raise ConnectionError("a response was already started; cannot send the error")
        code, text = _PROTOCOL_ERRORS.get(status, ("bad_request", "bad request"))
        response = web.json_response({"success": False, "error": text, "code": code}, status=status)
        response.force_close()
        return response


class HeaderTimeoutServer(Server):
    """aiohttp's `Server` (the protocol factory) making `HeaderTimeoutRequestHandler`s."""

    def __init__(self, built: Server, header_timeout: float) -> None:
        # Rebuilt from the server aiohttp's AppRunner made, so the app's handler, request factory and
        # handler arguments (debug, access log, ...) are exactly what aiohttp chose.
        super().__init__(
            built.request_handler,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=built._loop,
            **built._kwargs,
        )
        self.header_timeout = header_timeout

    def __call__(self) -> HeaderTimeoutRequestHandler:
        return HeaderTimeoutRequestHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )


class HeaderTimeoutAppRunner(web.AppRunner):
    """`web.AppRunner` whose connections must send each request head within `header_timeout_seconds`."""

    __slots__ = ("_header_timeout",)

    def __init__(self, app: web.Application, *, header_timeout_seconds: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout_seconds

    async def _make_server(self) -> Server:
        # aiohttp's own set-up (startup signals, freezing the app) runs unchanged.
        return HeaderTimeoutServer(await super()._make_server(), self._header_timeout)
