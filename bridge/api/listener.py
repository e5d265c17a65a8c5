"""The HTTP listening socket: every connection waiting in the accept queue is taken at each wake-up.

libuv, and so uvloop, accepts one connection per event-loop iteration (libuv 1.45, "don't accept()
connections in a loop"). With 200 calls' media on the loop an iteration lasts milliseconds, so a burst
of calls waits in the kernel's accept queue, hundreds of milliseconds before its webhook or media
upgrade is even read: past Asterisk's 500 ms connection timeout. This site accepts in a loop, as
asyncio's own event loop does, and hands each socket to the loop with `connect_accepted_socket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from typing import Any

from aiohttp import web

from bridge.logging import get_logger

# Out of descriptors (EMFILE/ENFILE) or buffers: stop accepting this long, as asyncio does.
ACCEPT_RETRY_SECONDS = 1.0

_log = get_logger("http")


def listening_sockets(
    host: str | None, port: int, backlog: int, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for every address `host` resolves to (all if empty).

    `reuse_port`: SO_REUSEPORT, so several processes (`bridge serve --workers N`) bind the same port and
    Linux spreads new connections across them.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:  # as asyncio: "::" does not also take the IPv4 port
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class _Listener(asyncio.AbstractServer):
    """What aiohttp's runner asks of a site's server (its sockets, `close`), over our own accept loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sockets: list[socket.socket]) -> None:
        self._loop = loop
        self._sockets = sockets
        self._serving = True

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def close(self) -> None:
        if not self._serving:
            return
        self._serving = False
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        return None  # serving from the start

    async def serve_forever(self) -> None:
        raise NotImplementedError("the app runner drives this listener")

    async def wait_closed(self) -> None:
        return None  # closing is immediate: connections are the runner's to shut down


class DrainingTCPSite(web.TCPSite):
    """`web.TCPSite` that accepts every waiting connection each time the listening socket is readable."""

    __slots__ = ("_connecting", "accepted")

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, **kwargs: Any) -> None:
        super().__init__(runner, host, port, **kwargs)
        self._connecting: set[asyncio.Task[Any]] = set()
        self.accepted = 0  # connections taken so far

    async def start(self) -> None:
        # BaseSite.start registers the site with the runner; TCPSite.start would open libuv's listener.
        await super(web.TCPSite, self).start()
        loop = asyncio.get_running_loop()
        sockets = listening_sockets(self._host, self._port, self._backlog, reuse_port=bool(self._reuse_port))
        self._server = _Listener(loop, sockets)
        self._bound_port = sockets[0].getsockname()[1]
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept_waiting, loop, sock)

    def _accept_waiting(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        factory = self._runner.server
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more waiting
            except OSError as exc:  # out of descriptors or memory: pause instead of spinning
                _log.warning("http_accept_failed", error=exc.strerror, retry_seconds=ACCEPT_RETRY_SECONDS)
                loop.remove_reader(sock.fileno())
                loop.call_later(ACCEPT_RETRY_SECONDS, self._resume, loop, sock)
                return
            if factory is None:  # the runner is shutting down
                conn.close()
                continue
            self.accepted += 1
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connecting = loop.create_task(loop.connect_accepted_socket(factory, conn))
            self._connecting.add(connecting)
            connecting.add_done_callback(functools.partial(self._connected, conn))

    def _connected(self, conn: socket.socket, connecting: asyncio.Task[Any]) -> None:
        self._connecting.discard(connecting)
        error = None if connecting.cancelled() else connecting.exception()
        if connecting.cancelled() or error is not None:
            conn.close()  # never became a transport: nobody else will close it
            if error is not None:
                _log.info("http_connection_lost_at_accept", error=type(error).__name__)

    def _resume(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        if self._server is not None and self._server.is_serving():
            with contextlib.suppress(ValueError, OSError):  # closed meanwhile
                loop.add_reader(sock.fileno(), self._accept_waiting, loop, sock)
