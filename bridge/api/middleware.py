"""Request middleware: errors to the envelope, authentication, one log line per request."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from bridge.api.appkeys import COMPANY, DIRECTORY
from bridge.api.envelope import failure
from bridge.api.openapi import OPERATIONS
from bridge.errors import BadRequest, BridgeError, PayloadTooLarge, Unauthorized
from bridge.logging import get_logger

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROBE_PATHS: Final = frozenset({"/health", "/health/fleet", "/metrics"})
_UNREADABLE = re.compile(r"[\udc80-\udcff]")  # how aiohttp keeps bytes that were not UTF-8

_HTTP_ERRORS: Final = {
    400: ("bad_request", "bad request"),
    408: ("request_timeout", "the request did not arrive in time"),
    404: ("not_found", "no such resource"),
    405: ("method_not_allowed", "method not allowed"),
    413: ("payload_too_large", "request body too large"),
}


def header_text(request: web.Request, name: str) -> str | None:
    """A header's value; 400 when it was not valid UTF-8 (aiohttp keeps such bytes as surrogates)."""
    value = request.headers.get(name)
    if value is not None and _UNREADABLE.search(value):
        raise BadRequest(f"header {name} is not valid UTF-8 text", code="invalid_header")
    return value


def _bearer(request: web.Request) -> str | None:
    """The Bearer token; "" (a key that matches nothing) for another scheme; None without the header.
    A proxy in front that adds its own Authorization must strip it: a credential we cannot check is
    refused, never ignored."""
    header = header_text(request, "Authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _presented(*candidates: str | None) -> list[str]:
    return [candidate for candidate in candidates if candidate is not None]


def company_keys_of(request: web.Request) -> list[str]:
    """Every company key the request presents: ?api_key=, Authorization: Bearer, X-API-Key."""
    return _presented(request.query.get("api_key"), _bearer(request), header_text(request, "X-API-Key"))


def admin_keys_of(request: web.Request) -> list[str]:
    """Every admin key the request presents: Authorization: Bearer, X-Admin-Key."""
    return _presented(_bearer(request), header_text(request, "X-Admin-Key"))


def connector_keys_of(request: web.Request) -> list[str]:
    """Every connector key the request presents: x-connector-api-key, Authorization: Bearer."""
    return _presented(header_text(request, "x-connector-api-key"), _bearer(request))


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
    """Each route's `Operation.auth` says who may call it; the media socket checks its own."""
    operation = request.app[OPERATIONS].of(request)
    auth = operation.auth if operation is not None else "none"
    # Every key presented must be valid (and name one company): an empty or wrong one next to a good
    # one is refused, so which of several a request "meant" never matters.
    if auth == "connector":
        keys = connector_keys_of(request)
        if not keys:
            raise Unauthorized("a connector key is required (x-connector-api-key or Bearer)")
        directory = request.app[DIRECTORY].current
        if not all([directory.is_connector_key(key) for key in keys]):  # no short cut: constant time
            raise Unauthorized("invalid connector key")
        request.app[DIRECTORY].key_used(keys)
    elif auth == "company":
        keys = company_keys_of(request)
        if not keys:
            raise Unauthorized("an API key is required (api_key, Bearer or X-API-Key)")
        directory = request.app[DIRECTORY].current
        companies = [directory.company_for_key(key) for key in keys]
        company = companies[0]
        if company is None or any(other is None or other.id != company.id for other in companies):
            raise Unauthorized("invalid API key")
        request[COMPANY] = company
        request.app[DIRECTORY].key_used(keys)
    elif auth == "admin":
        keys = admin_keys_of(request)
        if not keys:
            raise Unauthorized("an admin key is required (Bearer or X-Admin-Key)")
        directory = request.app[DIRECTORY].current
        if not all([directory.is_admin_key(key) for key in keys]):  # a company key is refused here
            raise Unauthorized("invalid admin key")
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
        emit = log.debug if request.path in PROBE_PATHS else log.info
        emit(
            "request",
            method=request.method,
            path=request.path,
            status=status,
            ms=round((time.perf_counter() - started) * 1000, 2),
        )
