"""Live call events: short-lived tokens for the event socket, and the hub that fans a call's events out.

A token is an HMAC-SHA256 over (call id, company id, expiry) with a secret drawn at process start: it
proves the company asked for this call's stream within the last five minutes, and nothing else. A
restart invalidates every token, which costs a client one more `GET /live`.

Publishing never waits: the session calls the hub synchronously (a transcript line, a state change)
and each subscriber gets a non-blocking put on its own bounded queue. A subscriber whose queue is
full is dropped (its socket is closed "too slow"); the call never notices.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from bridge.errors import Forbidden, Unauthorized
from bridge.session.session import Session
from bridge.store.records import TranscriptLine, iso_utc

TOKEN_TTL_SECONDS: Final = 300.0
QUEUE_SIZE: Final = 256  # events per subscriber: far more than a conversation produces between reads

LiveEvent = dict[str, Any]


@dataclass(frozen=True, slots=True)
class LiveToken:
    token: str
    expires_at: float  # epoch seconds

    @property
    def expires_at_iso(self) -> str:
        return iso_utc(self.expires_at) or ""


class LiveTokens:
    """Issues and checks the event socket's tokens (`<expiry>.<company, base64url>.<hex MAC>`)."""

    def __init__(
        self,
        *,
        ttl_seconds: float = TOKEN_TTL_SECONDS,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self.ttl_seconds = ttl_seconds
        self.clock = clock

    def _mac(self, call_id: str, company_id: str, expires: int) -> str:
        # Lengths first, so no (call, company) pair can be shifted into another with the same bytes.
        message = f"{len(call_id)}:{call_id}|{len(company_id)}:{company_id}|{expires}".encode(
            "utf-8", "surrogatepass"
        )
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def issue(self, call_id: str, company_id: str) -> LiveToken:
        expires = int(self.clock() + self.ttl_seconds)
        company = base64.urlsafe_b64encode(company_id.encode("utf-8", "surrogatepass")).decode().rstrip("=")
        token = f"{expires}.{company}.{self._mac(call_id, company_id, expires)}"
        return LiveToken(token, float(expires))

    def verify(self, token: str, call_id: str) -> str:
        """The company the token was issued to for `call_id`; Unauthorized when it is not a valid,
        unexpired token for this call."""
        parts = token.split(".")
        if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 12:
            raise Unauthorized("invalid live token", code="invalid_token")
        expires_text, company_text, mac = parts
        try:
            padded = company_text + "=" * (-len(company_text) % 4)
            company_id = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8", "surrogatepass")
        except (ValueError, UnicodeError):
            raise Unauthorized("invalid live token", code="invalid_token") from None
        expected = self._mac(call_id, company_id, int(expires_text))
        # Constant time: a partial match must not answer faster than none.
        if not hmac.compare_digest(expected.encode(), mac.encode("utf-8", "replace")):
            raise Unauthorized("invalid live token", code="invalid_token")
        if int(expires_text) <= self.clock():
            raise Unauthorized("the live token has expired; ask GET /live again", code="token_expired")
        return company_id


def check_owner(session: Session, company_id: str) -> None:
    """A valid token whose company does not own the call (a reused call id): 403."""
    if session.company_id != company_id:
        raise Forbidden("this token is not for this company's call", code="wrong_company")


def status_event(session: Session) -> LiveEvent:
    return {
        "type": "call_status_update",
        "call_id": session.call_id,
        "status": session.state.value,
        "disconnected_by": session.disconnected_by.value if session.disconnected_by else None,
        "error_code": session.error_code,
        "at": iso_utc(time.time()),
    }


def line_event(call_id: str, index: int, line: TranscriptLine) -> LiveEvent:
    return {"type": "transcript_update", "call_id": call_id, "index": index, **line.to_api()}


@dataclass(eq=False)
class Subscriber:
    """One socket's view of one call: a bounded queue; `None` in it means the call is over."""

    call_id: str
    queue: asyncio.Queue[LiveEvent | None]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)

    def offer(self, event: LiveEvent | None) -> None:
        if self.dropped.is_set():
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped.set()  # the socket side closes it with 1008 "too slow"


class LiveHub:
    """Who listens to which live call. A session is watched from its first subscriber on."""

    def __init__(self, *, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._watched: set[str] = set()
        self.dropped = 0  # subscribers dropped for being too slow, since start

    def subscribe(self, session: Session) -> Subscriber:
        subscriber = Subscriber(session.call_id, asyncio.Queue(self.queue_size))
        self._subscribers.setdefault(session.call_id, set()).add(subscriber)
        if session.call_id not in self._watched:
            # Listeners cannot be removed from a session: register once, and publish to whoever is there.
            self._watched.add(session.call_id)
            session.on_line(self._on_line)
            session.on_change(self._on_change)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(subscriber.call_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if subscribers:
                return
            del self._subscribers[subscriber.call_id]

    def subscribers(self, call_id: str) -> int:
        return len(self._subscribers.get(call_id, ()))

    def _publish(self, call_id: str, event: LiveEvent | None) -> None:
        for subscriber in tuple(self._subscribers.get(call_id, ())):
            was_dropped = subscriber.dropped.is_set()
            subscriber.offer(event)
            if subscriber.dropped.is_set() and not was_dropped:
                self.dropped += 1

    def _on_line(self, session: Session, index: int, line: TranscriptLine) -> None:
        if session.call_id in self._subscribers:
            self._publish(session.call_id, line_event(session.call_id, index, line))

    def _on_change(self, session: Session) -> None:
        if session.call_id in self._subscribers:
            self._publish(session.call_id, status_event(session))
        if session.state.is_terminal:
            self._publish(session.call_id, None)  # after the final status: close
            self._watched.discard(session.call_id)
