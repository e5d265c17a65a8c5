"""panoramisk 1.4 adapted to the controller in `ami.py`: a protocol that says when its socket is really
closed, a manager that reports refused logins and never reconnects on its own, and a log filter that
keeps the AMI secret out of panoramisk's own log lines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.ami_protocol import AMIProtocol


class SessionProtocol(AMIProtocol):  # type: ignore[misc]  # panoramisk is untyped
    """panoramisk's protocol plus a future that resolves when the socket is really closed."""

    ended: asyncio.Future[None]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.ended = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        except Exception:  # a drop before the manager adopted the protocol: nothing to notify
            logging.getLogger(__name__).debug("ami protocol teardown failed", exc_info=True)
        finally:
            if not self.ended.done():
                self.ended.set_result(None)


class SupervisedManager(Manager):  # type: ignore[misc]  # panoramisk is untyped
    """A panoramisk Manager whose connection the controller's supervisor owns."""

    def __init__(self, on_refused: Callable[[str], None], **config: Any) -> None:
        super().__init__(**config)
        self._on_refused = on_refused

    def login(self, future: asyncio.Future[Any]) -> bool:
        ok = bool(super().login(future))
        if not ok:  # panoramisk only calls on_login on success; a refusal would go unnoticed
            self._on_refused(str(future.result().get("Message", "")))
        return ok

    def connection_lost(self, exc: Any) -> None:
        # panoramisk would reconnect on its own fixed timer; the controller's supervisor does it.
        self._connected = False
        self.authenticated = False
        pinger = getattr(self, "pinger", None)
        if pinger is not None:
            pinger.cancel()
            self.pinger = None


class SecretFilter(logging.Filter):
    """panoramisk logs `%r` of an action it failed to write, Login included: keep the secret out."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        hidden = text
        for secret in self.secrets:
            hidden = hidden.replace(secret, "[redacted]")
        if hidden != text:
            record.msg, record.args = hidden, ()
        return True

    @classmethod
    def install(cls, log: logging.Logger, secret: str) -> None:
        found = next((f for f in log.filters if isinstance(f, cls)), None)
        if found is None:
            found = cls()
            log.addFilter(found)
        if secret:
            found.secrets.add(secret)
