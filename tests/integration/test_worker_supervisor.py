"""The `--workers` supervisor over stand-in workers (small Python processes): readiness, give-up, watchdog."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.sdnotify import Notifier
from bridge.workers.policy import RestartPolicy
from bridge.workers.supervisor import Supervisor

FAST = RestartPolicy(first_delay=0.01, max_delay=0.05, stable_seconds=60.0, max_failures=3)
TIMEOUT = 60.0

# A worker as the supervisor sees one: says READY=1 (and WATCHDOG=1 when asked to) on NOTIFY_SOCKET,
# exits 0 on SIGTERM. argv: <starts file> <mode>; each start appends a line to the file.
WORKER = """
import os, signal, socket, sys, time
with open(sys.argv[1], "a") as starts:
    starts.write(f"{os.getpid()} {os.environ.get('WATCHDOG_USEC', '-')}\\n")
mode = sys.argv[2]
if mode.startswith("exit"):
    sys.exit(int(mode[4:]))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.sendto(b"READY=1\\nSTATUS=up", os.environ["NOTIFY_SOCKET"])
while True:
    if mode == "ping":
        notify.sendto(b"WATCHDOG=1", os.environ["NOTIFY_SOCKET"])
    time.sleep(0.05)
"""


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[socket.socket]:
    """What systemd would listen on: the supervisor's own NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "systemd"))
    sock.setblocking(False)
    yield sock
    sock.close()


def supervisor(tmp_path: Path, count: int, modes: list[str], watchdog_usec: int | None = None) -> Supervisor:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    environ = {"NOTIFY_SOCKET": str(tmp_path / "systemd")}
    if watchdog_usec is not None:
        environ["WATCHDOG_USEC"] = str(watchdog_usec)

    def command(index: int) -> list[str]:
        return [sys.executable, str(script), str(tmp_path / f"starts-{index}"), modes[index - 1]]

    return Supervisor(count, command, policy=FAST, notifier=Notifier(environ), environ={"PATH": "/usr/bin"})


def starts(tmp_path: Path, index: int) -> list[list[str]]:
    path = tmp_path / f"starts-{index}"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


async def received(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)


async def test_ready_once_every_worker_is_then_a_clean_stop(tmp_path: Path, systemd: socket.socket) -> None:
    sup = supervisor(tmp_path, 2, ["serve", "serve"])
    running = asyncio.create_task(sup.run())
    assert await received(systemd) == b"READY=1\nSTATUS=2 workers serving"
    assert len(starts(tmp_path, 1)) == len(starts(tmp_path, 2)) == 1  # both up: READY came after both
    sup.stop()
    assert await received(systemd) == b"STOPPING=1"
    assert await asyncio.wait_for(running, TIMEOUT) == 0
    assert not any(tmp_path.glob("bridge-workers-*"))


async def test_a_worker_that_keeps_failing_stops_everything(tmp_path: Path, systemd: socket.socket) -> None:
    sup = supervisor(tmp_path, 2, ["exit3", "serve"])
    assert await asyncio.wait_for(sup.run(), TIMEOUT) == 1
    assert len(starts(tmp_path, 1)) == FAST.max_failures  # started, then restarted twice, then given up
    assert len(starts(tmp_path, 2)) == 1  # the healthy one was stopped, not restarted


async def test_a_refused_configuration_stops_at_once_with_status_2(
    tmp_path: Path, systemd: socket.socket
) -> None:
    sup = supervisor(tmp_path, 2, ["exit2", "serve"])
    assert await asyncio.wait_for(sup.run(), TIMEOUT) == 2
    assert len(starts(tmp_path, 1)) == 1


async def test_a_silent_worker_is_killed_and_restarted(tmp_path: Path, systemd: socket.socket) -> None:
    # WatchdogSec=2s: the supervisor pings systemd every second and kills a worker silent for 2 s.
    sup = supervisor(tmp_path, 2, ["ping", "silent"], watchdog_usec=2_000_000)
    running = asyncio.create_task(sup.run())
    try:
        while len(starts(tmp_path, 2)) < 2:  # the silent one was killed and started again
            await asyncio.sleep(0.05)
        seen = set()
        while b"WATCHDOG=1" not in seen:
            seen.add(await received(systemd))
        assert len(starts(tmp_path, 1)) == 1  # the pinging one was left alone
        assert {start[1] for start in starts(tmp_path, 1) + starts(tmp_path, 2)} == {"2000000"}
    finally:
        sup.stop()
        await asyncio.wait_for(running, TIMEOUT)


async def test_a_worker_that_cannot_be_started_stops_everything(tmp_path: Path) -> None:
    sup = Supervisor(1, lambda _: [str(tmp_path / "no-such-python")], policy=FAST, notifier=Notifier({}))
    assert await asyncio.wait_for(sup.run(), TIMEOUT) == 1
