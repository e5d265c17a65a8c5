"""Request rate limits on the HTTP API (the buckets themselves: bridge/companies/ratelimit.py).

Who is counted where:
- a company key: its own bucket (the key's SHA-256 digest, never the key), `[companies.limits]
  requests_per_minute` of its company; an admin key and a connector key likewise, with
  `[rate_limits] admin_requests_per_minute` / `connector_requests_per_minute`;
- failed authentications (401 on a keyed route): per client address, `[rate_limits]
  failed_auths_per_address` a minute; once spent, every keyed request from that address is refused
  with 429 before any key is looked at, so guessing keys is slow (and a valid key cannot be confirmed);
- routes that take no key (health, metrics, the OpenAPI document, unknown paths): per client address,
  `[rate_limits] public_requests_per_minute`;
- WebSocket routes (media, live events) are bounded by call admission and live tokens instead.

Every other response carries X-RateLimit-Limit, X-RateLimit-Remaining and X-RateLimit-Reset (seconds
until the bucket is full again) of the bucket that governed it; a 429 carries Retry-After.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Hashable
from typing import Final

from aiohttp import web

from bridge.api.appkeys import COMPANY, SETTINGS
from bridge.api.envelope import failure
from bridge.api.middleware import admin_keys_of, company_keys_of, connector_keys_of
from bridge.api.openapi import OPERATIONS
from bridge.companies.ratelimit import RateLimiter, SharedBuckets, Verdict
from bridge.errors import RateLimited

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RATE_LIMITER = web.AppKey("rate_limiter", RateLimiter)
# A fleet's buckets in Redis (absent: this node's RateLimiter alone); the RateLimiter stands in when
# Redis does not answer.
SHARED_BUCKETS = web.AppKey("shared_rate_limits", SharedBuckets)
VERDICT = web.RequestKey("rate_limit_verdict", Verdict)

KEYED: Final = frozenset({"company", "admin", "connector"})
UNLIMITED: Final = frozenset({"media", "live_token"})
HEADERS: Final = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _auth_of(request: web.Request) -> str:
    operation = request.app[OPERATIONS].of(request)
    return operation.auth if operation is not None else "none"


async def _hit(request: web.Request, bucket: Hashable, limit: int) -> Verdict:
    shared = request.app.get(SHARED_BUCKETS)
    if shared is not None and (verdict := await shared.hit(bucket, limit)) is not None:
        return verdict
    return request.app[RATE_LIMITER].hit(bucket, limit)


async def _peek(request: web.Request, bucket: Hashable, limit: int) -> Verdict:
    shared = request.app.get(SHARED_BUCKETS)
    if shared is not None and (verdict := await shared.peek(bucket, limit)) is not None:
        return verdict
    return request.app[RATE_LIMITER].peek(bucket, limit)


def _refusal(verdict: Verdict, message: str) -> RateLimited:
    error = RateLimited(message)
    error.retry_after_seconds = verdict.retry_after_seconds  # type: ignore[misc]  # per refusal
    return error


@web.middleware
async def address_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outside the error middleware (it sees every answer as a response): per-address buckets."""
    auth = _auth_of(request)
    if auth in UNLIMITED:
        return await handler(request)
    limits = request.app[SETTINGS].rate_limits
    address = request.remote or ""
    if auth in KEYED:
        failed = await _peek(request, ("failed_auth", address), limits.failed_auths_per_address)
        if not failed.allowed:
            request[VERDICT] = failed
            return failure(_refusal(failed, "too many failed authentications from this address"))
    else:
        verdict = await _hit(request, ("address", address), limits.public_requests_per_minute)
        request[VERDICT] = verdict
        if not verdict.allowed:
            return failure(_refusal(verdict, "too many requests from this address"))
    response = await handler(request)
    if auth in KEYED and response.status == 401:
        # The headers of a refused key describe the address's failed-authentication bucket.
        request[VERDICT] = await _hit(request, ("failed_auth", address), limits.failed_auths_per_address)
    return response


def _first_key_digest(keys: list[str]) -> bytes:
    return hashlib.sha256(keys[0].encode("utf-8", "surrogatepass")).digest()


@web.middleware
async def key_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """After authentication: the presented key's own bucket (429 rate_limited past it)."""
    auth = _auth_of(request)
    if auth not in KEYED:
        return await handler(request)
    limits = request.app[SETTINGS].rate_limits
    bucket: Hashable
    if auth == "company":
        bucket = ("company", _first_key_digest(company_keys_of(request)))
        limit = request[COMPANY].settings.limits.requests_per_minute
    elif auth == "admin":
        bucket = ("admin", _first_key_digest(admin_keys_of(request)))
        limit = limits.admin_requests_per_minute
    else:
        bucket = ("connector", _first_key_digest(connector_keys_of(request)))
        limit = limits.connector_requests_per_minute
    verdict = await _hit(request, bucket, limit)
    request[VERDICT] = verdict
    if not verdict.allowed:
        raise _refusal(verdict, f"more than {limit} requests a minute with this key")
    return await handler(request)


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: also reaches streamed responses, whose headers go out inside the handler."""
    verdict = request.get(VERDICT)
    if verdict is None:
        return
    response.headers["X-RateLimit-Limit"] = str(verdict.limit)
    response.headers["X-RateLimit-Remaining"] = str(verdict.remaining)
    response.headers["X-RateLimit-Reset"] = str(verdict.reset_seconds)


def setup_rate_limits(app: web.Application, limiter: RateLimiter | None = None) -> None:
    app[RATE_LIMITER] = limiter or RateLimiter()
    app.on_response_prepare.append(add_rate_limit_headers)
