"""`bridge serve --workers 2` as a process: one port, both workers answering, stop, restart, refusal."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.asterisk.audiosocket import encode_uuid
from tests.helpers import free_port
from tests.services_redis import RedisDb

BRIDGE = [sys.executable, "-m", "bridge"]
START_TIMEOUT = 60.0  # two interpreters importing the daemon on a loaded 2-core machine
STOP_TIMEOUT = 30.0


@pytest.fixture
def redis_url(redis_db: RedisDb) -> str:
    """`[cluster]`'s Redis: the shared private redis-server (tests/services_redis.py), a flushed db."""
    return redis_db.url


def wait_for(check: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(message)


def write_config(directory: Path, redis_url: str | None, http_port: int, audiosocket_port: int) -> Path:
    cluster = f'[cluster]\nredis_url = "{redis_url}"\nnode_id = "box"\n' if redis_url else ""
    path = directory / "bridge.toml"
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {http_port}\ndrain_seconds = 1\n'
        f'[audiosocket]\nhost = "127.0.0.1"\nport = {audiosocket_port}\n'
        f'[storage]\nurl = "sqlite:///{directory / "bridge.db"}"\n'
        f'recordings_dir = "{directory / "recordings"}"\n'
        '[logging]\nformat = "json"\n' + cluster
    )
    return path


@dataclass
class Fleet:
    """The parent process, its log lines (every worker's too: they share its stderr) and its ports."""

    process: subprocess.Popen[str]
    http_port: int
    audiosocket_port: int
    lines: list[dict[str, object]] = field(default_factory=list)

    def read_logs(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                self.lines.append({"event": "unparsed", "text": line})

    def events(self, name: str) -> list[dict[str, object]]:
        return [line for line in list(self.lines) if line.get("event") == name]

    def workers(self) -> set[int]:
        """The parent's child processes, from /proc."""
        children = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                fields = stat.rsplit(")", 1)[1].split()
                if int(fields[1]) == self.process.pid and fields[0] != "Z":
                    children.add(int(entry.name))
        return children

    def node_of_health(self) -> str:
        return node_of_health(self.http_port)


def node_of_health(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health", headers={"Connection": "close"})  # a new connection each time
        response = conn.getresponse()
        assert response.status == 200
        node: str = json.loads(response.read())["node_id"]
        return node
    finally:
        conn.close()


def notify_socket(directory: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "notify"))
    sock.settimeout(START_TIMEOUT)
    return sock


@pytest.fixture
def fleet(tmp_path: Path, redis_url: str) -> Iterator[Fleet]:
    """`bridge serve --workers 2`, started as systemd would (NOTIFY_SOCKET), ready when it says so."""
    http_port, audiosocket_port = free_port(), free_port()
    config = write_config(tmp_path, redis_url, http_port, audiosocket_port)
    notify = notify_socket(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    process = subprocess.Popen(
        [*BRIDGE, "serve", "--config", str(config), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    running = Fleet(process, http_port, audiosocket_port)
    reader = threading.Thread(target=running.read_logs, daemon=True)
    reader.start()
    try:
        # The parent says READY=1 only once both workers have said it: then both listen.
        assert notify.recv(4096).split(b"\n")[0] == b"READY=1", running.lines
        # The log lines come through a pipe, behind the datagram.
        wait_for(lambda: len(running.events("worker_ready")) == 2, STOP_TIMEOUT, "no worker_ready lines")
        yield running
    finally:
        notify.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(timeout=STOP_TIMEOUT)
        if process.stderr is not None:
            process.stderr.close()


def listeners_on(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (state 0A in /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for row in rows if row.split()[1] == wanted and row.split()[3] == "0A")


def test_two_workers_share_the_ports_and_stop_cleanly(fleet: Fleet) -> None:
    workers = fleet.workers()
    assert len(workers) == 2
    answered = Counter(fleet.node_of_health() for _ in range(60))
    assert set(answered) == {"box-1", "box-2"}, answered  # the kernel spread the connections
    assert listeners_on(fleet.http_port) == 2
    assert listeners_on(fleet.audiosocket_port) == 2

    # AudioSocket: a socket naming no announced call is refused, by whichever worker took it.
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", fleet.audiosocket_port), timeout=10) as sock:
            sock.sendall(encode_uuid(uuid.uuid4()))
            assert sock.recv(3) == b"\x00\x00\x00"  # the hangup frame
    wait_for(lambda: len(fleet.events("audiosocket_refused")) == 30, STOP_TIMEOUT, "refusals not logged")
    refused_by = Counter(str(line["node"]) for line in fleet.events("audiosocket_refused"))
    assert set(refused_by) == {"box-1", "box-2"}, refused_by

    fleet.process.send_signal(signal.SIGHUP)  # `systemctl reload`: every worker reloads the file

    def reloaded() -> bool:
        return {str(line["node"]) for line in fleet.events("reloaded")} == {"box-1", "box-2"}

    wait_for(reloaded, STOP_TIMEOUT, "SIGHUP did not reach both workers")

    fleet.process.send_signal(signal.SIGTERM)
    assert fleet.process.wait(timeout=STOP_TIMEOUT) == 0
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), STOP_TIMEOUT, "workers left")
    # Each worker drained and stopped as a single process does (the log pipe may lag behind the exit).
    wait_for(lambda: len(fleet.events("workers_stopped")) == 1, STOP_TIMEOUT, "no workers_stopped line")
    assert len(fleet.events("stopped")) == 2
    assert [line["exit"] for line in fleet.events("worker_exited")] == ["exit status 0"] * 2
    assert fleet.events("unparsed") == []  # three processes on one stderr, yet every line whole


def test_a_killed_worker_is_restarted(fleet: Fleet) -> None:
    before = fleet.workers()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_for(
        lambda: len(fleet.workers() - before) == 1 and len(fleet.workers()) == 2,
        START_TIMEOUT,
        "the killed worker was not replaced",
    )
    wait_for(lambda: len(fleet.events("worker_ready")) == 3, START_TIMEOUT, "the new worker never got ready")
    died = fleet.events("worker_died")
    assert [line["exit"] for line in died] == ["signal SIGKILL"]
    answered = {fleet.node_of_health() for _ in range(60)}
    assert answered == {"box-1", "box-2"}  # the replacement took its place in the fleet, same name
    fleet.process.send_signal(signal.SIGTERM)
    assert fleet.process.wait(timeout=STOP_TIMEOUT) == 0


def test_workers_without_cluster_are_refused(tmp_path: Path) -> None:
    config = write_config(tmp_path, None, free_port(), free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    result = subprocess.run(
        [*BRIDGE, "serve", "--config", str(config), "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=START_TIMEOUT,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--workers 2 needs a [cluster] section" in lines[0]


def test_workers_follow_a_dead_supervisor(fleet: Fleet) -> None:
    workers = fleet.workers()
    fleet.process.kill()  # no SIGTERM to relay: each worker notices its parent is gone and drains
    fleet.process.wait()
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers), STOP_TIMEOUT, "orphans left")
    wait_for(lambda: len(fleet.events("stopped")) == 2, STOP_TIMEOUT, "the workers did not drain")


def test_instances_with_reuse_port_share_the_port_as_template_units_do(
    tmp_path: Path, redis_url: str
) -> None:
    """bridge@.service: one `serve --reuse-port` per instance, its node id from the environment."""
    http_port, audiosocket_port = free_port(), free_port()
    config = write_config(tmp_path, redis_url, http_port, audiosocket_port)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}
    processes = [
        subprocess.Popen(
            [*BRIDGE, "serve", "--config", str(config), "--reuse-port"],
            env=base | {"BRIDGE_CLUSTER__NODE_ID": f"host-{instance}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for instance in (1, 2)
    ]
    try:
        wait_for(lambda: listeners_on(http_port) == 2, START_TIMEOUT, "both instances did not listen")
        wait_for(lambda: listeners_on(audiosocket_port) == 2, START_TIMEOUT, "AudioSocket not shared")
        answered = Counter(node_of_health(http_port) for _ in range(60))
        assert set(answered) == {"host-1", "host-2"}, answered
        for process in processes:
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=STOP_TIMEOUT) for process in processes] == [0, 0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
