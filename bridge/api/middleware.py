"""Request middleware: errors to the envelope, authentication, one log line per request."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from bridge.api.appkeys import COMPANY, DIRECTORY
from bridge.api.envelope import failure
from bridge.errors import BridgeError, PayloadTooLarge, Unauthorized
from bridge.logging import get_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC_PATHS: Final = frozenset({"/health", "/health/fleet", "/metrics"})
# The media socket checks credentials itself: a pending call may attach without them.
CONNECTOR_PATHS: Final = frozenset({"/api/voip/webhook"})
SELF_AUTHENTICATED_PATHS: Final = frozenset({"/api/real-time-voice-stream"})

_HTTP_ERRORS: Final = {
    400: ("bad_request", "bad request"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "method not allowed"),
    413: ("payload_too_large", "request body too large"),
}


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def company_key_of(request: web.Request) -> str | None:
    """The three ways to pass a company key: ?api_key=, Authorization: Bearer, X-API-Key."""
    return request.query.get("api_key") or _bearer(request) or request.headers.get("X-API-Key")


def connector_key_of(request: web.Request) -> str | None:
    """The two ways to pass a connector key: x-connector-api-key, Authorization: Bearer."""
    return request.headers.get("x-connector-api-key") or _bearer(request)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BridgeError as error:
        return failure(error)
    except web.HTTPRequestEntityTooLarge:
        return failure(PayloadTooLarge("request body too large"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_ERRORS.get(exc.status, ("http_error", exc.reason))
        http_error = BridgeError(message, code=code)
        http_error.status = exc.status  # type: ignore[misc]  # carry aiohttp's own status through
        response = failure(http_error)
        if exc.status == 405 and "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        get_logger("api").exception("unhandled_error", method=request.method, path=request.path)
        return failure(BridgeError("internal error"))


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if request.match_info.http_exception is not None or path in PUBLIC_PATHS:
        return await handler(request)
    directory = request.app[DIRECTORY].current
    if path in CONNECTOR_PATHS:
        key = connector_key_of(request)
        if key is None:
            raise Unauthorized("a connector key is required (x-connector-api-key or Bearer)")
        if not directory.is_connector_key(key):
            raise Unauthorized("invalid connector key")
    elif path.startswith("/api/") and path not in SELF_AUTHENTICATED_PATHS:
        key = company_key_of(request)
        if key is None:
            raise Unauthorized("an API key is required (api_key, Bearer or X-API-Key)")
        company = directory.company_for_key(key)
        if company is None:
            raise Unauthorized("invalid API key")
        request[COMPANY] = company
    return await handler(request)


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One line per request, without the query string (it may carry ?api_key=)."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        log = get_logger("http")
        # Health probes come every few seconds; keep them out of the info stream.
        emit = log.debug if request.path in PUBLIC_PATHS else log.info
        emit(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
