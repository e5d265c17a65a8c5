"""Webhook signatures (contract section 8). Pure: no I/O, no clocks (the caller passes the time).

`X-Bridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with the
company's webhook secret. A receiver recomputes it over the raw bytes it received (never re-encoded
JSON) and refuses old timestamps, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "X-Bridge-Signature"
DELIVERY_HEADER: Final = "X-Bridge-Delivery"
DEFAULT_TOLERANCE_SECONDS: Final = 300


def digest(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={digest(secret, timestamp, body)}"


def parse_header(header: str) -> tuple[int, list[str]] | None:
    """The timestamp and the v1 signatures of a header, or None if it has no usable timestamp."""
    timestamp: int | None = None
    signatures = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    return None if timestamp is None else (timestamp, signatures)


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS
) -> bool:
    """Whether `header` signs `body` with `secret` and its timestamp is within `tolerance_seconds`."""
    parsed = parse_header(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    if abs(now - timestamp) > tolerance_seconds:
        return False
    expected = digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in signatures)
