"""The listeners (HTTP, AudioSocket) take every waiting connection at once (uvloop's own takes one per
loop iteration), serve them like aiohttp's and asyncio's, and stop listening when closed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp import web

from bridge.api.listener import DrainingTCPSite, start_stream_server

BURST = 40


async def hello(_: web.Request) -> web.Response:
    return web.Response(text="hello")


async def started() -> tuple[web.AppRunner, DrainingTCPSite, int]:
    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = DrainingTCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site, runner.addresses[0][1]


async def get_hello(sock: socket.socket) -> bytes:
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    reply = await reader.read()
    writer.close()
    return reply


async def accepted_in_one_go(accepted: Callable[[], int]) -> None:
    """The first loop iteration that accepts anything takes the whole burst."""
    seen = []
    for _ in range(20):
        await asyncio.sleep(0)
        seen.append(accepted())
        if seen[-1] == BURST:
            break
    first = next(count for count in seen if count)
    assert first == BURST, f"accepted {seen}: a burst must not be taken one connection per iteration"


async def a_burst_is_accepted_in_one_go() -> None:
    runner, site, port = await started()
    try:
        # The loop does not run while these connect: all of them wait in the kernel's accept queue.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
        await accepted_in_one_go(lambda: site.accepted)
        replies = await asyncio.gather(*(get_hello(client) for client in clients))
        assert all(reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello") for reply in replies)
    finally:
        await runner.cleanup()


def run_on(loop_factory: Callable[[], asyncio.AbstractEventLoop], work: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(work)


def test_a_burst_is_accepted_in_one_go_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    run_on(uvloop.new_event_loop, a_burst_is_accepted_in_one_go())


def test_a_burst_is_accepted_in_one_go_on_asyncio() -> None:
    run_on(asyncio.new_event_loop, a_burst_is_accepted_in_one_go())


async def test_cleanup_stops_listening() -> None:
    runner, site, port = await started()
    assert site.accepted == 0
    await runner.cleanup()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


async def test_a_taken_port_is_refused_like_aiohttps_site() -> None:
    runner, _, port = await started()
    other = web.AppRunner(web.Application())
    await other.setup()
    try:
        with pytest.raises(OSError):
            await DrainingTCPSite(other, "127.0.0.1", port).start()
    finally:
        await other.cleanup()
        await runner.cleanup()


# --- the same accept loop as a stream server (AudioSocket) ------------------------------------------------


async def a_stream_burst_is_accepted_in_one_go() -> None:
    async def echo_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"got " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await start_stream_server(echo_line, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(BURST)]
        await accepted_in_one_go(lambda: server.accepted)

        async def ask(sock: socket.socket, n: int) -> bytes:
            reader, writer = await asyncio.open_connection(sock=sock)
            writer.write(b"%d\n" % n)
            reply = await reader.read()
            writer.close()
            return reply

        replies = await asyncio.gather(*(ask(client, n) for n, client in enumerate(clients)))
        assert replies == [b"got %d\n" % n for n in range(BURST)]
    finally:
        server.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_stream_servers_burst_is_accepted_in_one_go_on_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")
    run_on(uvloop.new_event_loop, a_stream_burst_is_accepted_in_one_go())


def test_a_stream_servers_burst_is_accepted_in_one_go_on_asyncio() -> None:
    run_on(asyncio.new_event_loop, a_stream_burst_is_accepted_in_one_go())
