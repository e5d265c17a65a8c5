"""A private PostgreSQL server for the tests, one per xdist worker, and a fresh database per test.

Started from the binaries on the PATH or under /usr/lib/postgresql/*/bin on a free loopback port,
with durability off (the data dies with the session). PostgreSQL refuses to run as root: under root
the data directory is handed to the `postgres` system user and the server runs as that user.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import unavailable

_SERVER_SETTINGS = (
    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=250 "
    "-c listen_addresses=127.0.0.1"
)


@dataclass(frozen=True, slots=True)
class PostgresServer:
    port: int
    socket_dir: Path

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


def _binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found is not None and shutil.which("initdb") is not None:
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(candidate) / "pg_ctl").exists() and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_server_user(root: Path) -> list[str]:
    """The command prefix that runs PostgreSQL's tools as a user it accepts (never root)."""
    if os.geteuid() != 0:
        return []
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root without a 'postgres' system user to run PostgreSQL as")
    for path in (root, *root.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    runuser = shutil.which("runuser")
    if runuser is None:
        unavailable("running as root without runuser to start PostgreSQL as 'postgres'")
    return [runuser, "-u", "postgres", "--"]


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])}... failed ({done.returncode}): {done.stderr[-2000:]}")


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    bindir = _binaries()
    if bindir is None:
        unavailable("PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql")
    if os.geteuid() == 0:
        # pytest's tmp tree is private to root (0700, re-tightened by every pytest run), so the server
        # user could not reach a directory in it: a unique directory of its own under /tmp instead.
        root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
    else:
        root = tmp_path_factory.mktemp("postgres")
    data, sockets = root / "data", root / "sock"
    data.mkdir()
    sockets.mkdir()
    prefix = _as_server_user(root)
    _run([*prefix, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "--locale=C",
          "--encoding=UTF8", "-U", "postgres"])  # fmt: skip
    for attempt in range(3):
        # The free port may be taken between our probe and the server's bind: try another one.
        port = _free_port()
        options = f"{_SERVER_SETTINGS} -p {port} -c unix_socket_directories={sockets}"
        try:
            _run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"),
                  "-w", "-t", "60", "-o", options, "start"])  # fmt: skip
            break
        except RuntimeError:
            if attempt == 2:
                raise
    try:
        yield PostgresServer(port, sockets)
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if os.geteuid() == 0:
            shutil.rmtree(root, ignore_errors=True)


_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    try:
        import psycopg  # only where PostgreSQL runs
    except ImportError:
        unavailable("the psycopg driver is not installed: pip install -e '.[test]'")

    name = f"t_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(postgres_server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.url(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on an SQLite file and on a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bridge.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
