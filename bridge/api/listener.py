"""The listening sockets (HTTP, AudioSocket): every connection waiting in the accept queue is taken at
each wake-up.

libuv, and so uvloop, accepts one connection per event-loop iteration (libuv 1.45, "don't accept()
connections in a loop"). With 200 calls' media on the loop an iteration lasts milliseconds, so a burst
of calls waits in the kernel's accept queue, hundreds of milliseconds before its webhook, media upgrade
or AudioSocket call is even read: past Asterisk's 500 ms connection timeout. `AcceptingServer` accepts
in a loop, as asyncio's own event loop does, and hands each socket to the loop with
`connect_accepted_socket`: under aiohttp's runner (`DrainingTCPSite`) or as a stream server
(`start_stream_server`, asyncio.start_server's equivalent).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from bridge.logging import get_logger

# Out of descriptors (EMFILE/ENFILE) or buffers: stop accepting this long, as asyncio does.
ACCEPT_RETRY_SECONDS = 1.0

_log = get_logger("listener")


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


ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class AcceptingServer(asyncio.AbstractServer):
    """Listening sockets with our own accept loop; what aiohttp's runner asks of a site's server (its
    sockets, `close`). `factory_now()` gives the protocol factory for a new connection, or None once the
    owner is shutting down (the connection is closed at once)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sockets: list[socket.socket],
        factory_now: Callable[[], ProtocolFactory | None],
        backlog: int,
        name: str,
    ) -> None:
        self._loop = loop
        self._sockets = sockets
        self._factory_now = factory_now
        self._backlog = backlog
        self._name = name
        self._serving = True
        self._connecting: set[asyncio.Task[Any]] = set()
        self.accepted = 0  # connections taken so far
        for sock in sockets:
            loop.add_reader(sock.fileno(), self._accept_waiting, sock)

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
        raise NotImplementedError("the owner drives this listener")

    async def wait_closed(self) -> None:
        return None  # closing is immediate: connections are the owner's to shut down

    def _accept_waiting(self, sock: socket.socket) -> None:
        loop = self._loop
        for _ in range(self._backlog):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return  # nothing more waiting
            except OSError as exc:  # out of descriptors or memory: pause instead of spinning
                _log.warning(
                    "accept_failed",
                    listener=self._name,
                    error=exc.strerror,
                    retry_seconds=ACCEPT_RETRY_SECONDS,
                )
                loop.remove_reader(sock.fileno())
                loop.call_later(ACCEPT_RETRY_SECONDS, self._resume, sock)
                return
            factory = self._factory_now()
            if factory is None:  # the owner is shutting down
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
                _log.info("connection_lost_at_accept", listener=self._name, error=type(error).__name__)

    def _resume(self, sock: socket.socket) -> None:
        if self._serving:
            with contextlib.suppress(ValueError, OSError):  # closed meanwhile
                self._loop.add_reader(sock.fileno(), self._accept_waiting, sock)


class DrainingTCPSite(web.TCPSite):
    """`web.TCPSite` that accepts every waiting connection each time the listening socket is readable."""

    async def start(self) -> None:
        # BaseSite.start registers the site with the runner; TCPSite.start would open libuv's listener.
        await super(web.TCPSite, self).start()
        sockets = listening_sockets(self._host, self._port, self._backlog, reuse_port=bool(self._reuse_port))
        self._server = AcceptingServer(
            asyncio.get_running_loop(), sockets, lambda: self._runner.server, self._backlog, "http"
        )
        self._bound_port = sockets[0].getsockname()[1]

    @property
    def accepted(self) -> int:
        """Connections taken so far."""
        return self._server.accepted if isinstance(self._server, AcceptingServer) else 0


ConnectedCallback = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_stream_server(
    handle: ConnectedCallback, host: str | None, port: int, *, backlog: int = 128, reuse_port: bool = False
) -> AcceptingServer:
    """`asyncio.start_server` over the draining accept loop: `handle(reader, writer)` runs as a task per
    connection, exactly as there (the same stream protocol)."""
    loop = asyncio.get_running_loop()
    sockets = listening_sockets(host, port, backlog, reuse_port=reuse_port)

    def protocol() -> asyncio.BaseProtocol:
        return asyncio.StreamReaderProtocol(asyncio.StreamReader(), handle)

    return AcceptingServer(loop, sockets, lambda: protocol, backlog, "audiosocket")
