"""One small error tree. Each error knows its HTTP status and machine code.

Raised by the API layer and the session manager; mapped to the JSON envelope in
`api/middleware.py` and to WebSocket close codes in `close_code_for`, nowhere else.
"""

from __future__ import annotations

from typing import ClassVar


class BridgeError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    retry_after_seconds: ClassVar[int | None] = None  # 429 and 503 say when to try again

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # per-instance refinement of the class default


class BadRequest(BridgeError):
    status = 400
    code = "bad_request"


class Unauthorized(BridgeError):
    status = 401
    code = "unauthorized"


class Forbidden(BridgeError):
    status = 403
    code = "forbidden"


class NotFound(BridgeError):
    status = 404
    code = "not_found"


class RequestTimeout(BridgeError):
    status = 408
    code = "request_timeout"


class Conflict(BridgeError):
    status = 409
    code = "conflict"


class PaymentRequired(BridgeError):
    status = 402
    code = "insufficient_balance"


class PayloadTooLarge(BridgeError):
    status = 413
    code = "payload_too_large"


class RateLimited(BridgeError):
    status = 429
    code = "rate_limited"
    retry_after_seconds: ClassVar[int] = 1


class TooManyCalls(RateLimited):
    code = "too_many_calls"  # a company's [companies.limits] max_live_calls
    retry_after_seconds = 5


class Unavailable(BridgeError):
    status = 503
    code = "unavailable"
    retry_after_seconds: ClassVar[int] = 5  # sent as Retry-After: a client retries, not hammers


class AtCapacity(Unavailable):
    code = "at_capacity"


class ShuttingDown(Unavailable):
    code = "shutting_down"
    retry_after_seconds = 30  # another node, or this one once restarted


# RFC 6455 close codes: 1008 policy violation, 1011 internal error, 1013 try again later.
_CLOSE_CODES: dict[int, int] = {
    400: 1008,
    401: 1008,
    403: 1008,
    404: 1008,
    408: 1008,
    409: 1008,
    429: 1013,
    503: 1013,
}


def close_code_for(error: BridgeError) -> int:
    return _CLOSE_CODES.get(error.status, 1011)
