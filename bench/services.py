"""Private Redis and PostgreSQL servers for `python -m bench --fleet`: free loopback ports, temporary
directories, durability off (the data dies with the run), as tests/services_redis.py and
tests/services_postgres.py start them for the tests, without pytest. PostgreSQL refuses to run as root:
under root its directory is handed to the `postgres` system user and its tools run through `runuser`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.daemon import pinned

START_DEADLINE_S = 60.0  # a loaded 2-core machine may be slow to fork, bind and initdb
PG_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=250 "
    "-c listen_addresses=127.0.0.1"
)


class ServiceMissing(RuntimeError):
    """A server binary this run needs is not installed."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisProcess:
    """redis-server on 127.0.0.1, no persistence."""

    def __init__(self, workdir: Path, core: int | None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceMissing("redis-server is not on the PATH (apt-get install redis-server)")
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--daemonize", "no", "--dir", str(workdir)]
        with (workdir / "redis.log").open("wb") as log:
            self.process = subprocess.Popen(pinned([binary, *args], core), stdout=log, stderr=log)
        self._wait_ready()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def _wait_ready(self) -> None:
        import redis  # noqa: PLC0415  (the fleet extra; only this mode needs it)

        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
                    client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def flush(self) -> None:
        """An empty registry for the next path (no node or call of the previous one left)."""
        import redis  # noqa: PLC0415

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10) as client:
            client.flushall()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _pg_binaries() -> Path:
    found = shutil.which("pg_ctl")
    if found is not None and shutil.which("initdb") is not None:
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_ctl").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise ServiceMissing("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql")


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=180)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed ({done.returncode}): {done.stderr[-2000:]}")


class PostgresProcess:
    """A PostgreSQL cluster of its own (trust auth on loopback) and a fresh database per `database()`."""

    def __init__(self, core: int | None) -> None:
        self.bindir = _pg_binaries()
        # Under root the server user must reach the directory: a 0700 tree of root's would not do.
        self.root = Path(tempfile.mkdtemp(prefix="bridge-bench-pg-"))
        data, sockets = self.root / "data", self.root / "sock"
        data.mkdir()
        sockets.mkdir()
        self.prefix = self._as_server_user()
        self.data = data
        _run([*self.prefix, str(self.bindir / "initdb"), "-D", str(data), "--auth=trust", "--locale=C",
              "--encoding=UTF8", "-U", "postgres"])  # fmt: skip
        self.port = free_port()
        options = f"{PG_SETTINGS} -p {self.port} -c unix_socket_directories={sockets}"
        # pg_ctl forks the server, which keeps the affinity taskset gives pg_ctl.
        log = str(self.root / "server.log")
        start = [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(data), "-l", log, "-w", "-t", "60"]
        _run(pinned([*start, "-o", options, "start"], core))
        self._count = 0

    def _as_server_user(self) -> list[str]:
        if os.geteuid() != 0:
            return []
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceMissing("running as root without a 'postgres' system user") from None
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ServiceMissing("running as root without runuser to start PostgreSQL as 'postgres'")
        for path in (self.root, *self.root.rglob("*")):
            os.chown(path, user.pw_uid, user.pw_gid)
        return [runuser, "-u", "postgres", "--"]

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """The URL of a new, empty database."""
        import psycopg  # noqa: PLC0415  (the fleet extra; only this mode needs it)

        self._count += 1
        name = f"bench_{self._count}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        subprocess.run(
            [
                *self.prefix,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
