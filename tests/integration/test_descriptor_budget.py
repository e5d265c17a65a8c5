"""The daemon's file descriptors: what a call costs (measured on /proc), and the start-up refusal of a
`max_calls` the process's RLIMIT_NOFILE cannot hold."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from bridge.fdlimit import BASE_DESCRIPTORS, DESCRIPTORS_PER_CALL, descriptors_needed
from bridge.keys import hash_key
from bridge.simulate import AudioSource, SimulatedCallOptions, run_simulated_call
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, free_port, utterances

BRIDGE = [sys.executable, "-m", "bridge"]
FAKE_KEY = "sk-test-key"
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")


def write_config(
    path: Path, port: int, max_calls: int, model_url: str = "ws://127.0.0.1:9/v1/realtime"
) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\nmax_calls = {max_calls}\ndrain_seconds = 2\n'
        f'[connector]\napi_keys = ["{hash_key(CONNECTOR_KEY)}"]\n'
        "[audiosocket]\nenabled = false\n"
        f'[storage]\nurl = "sqlite:///{path.parent / "bridge.db"}"\n'
        '[logging]\nformat = "json"\n'
        f'[providers.openai]\napi_key = "{FAKE_KEY}"\nurl = "{model_url}"\n'
        f'[[companies]]\nid = "acme"\nphones = ["{ACME_PHONE}"]\napi_keys = ["{hash_key("k")}"]\n'
        '[companies.agent]\nprovider = "openai"\ngreeting = "Hello."\n'
    )
    return path


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    yield {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}


# Sets RLIMIT_NOFILE, then becomes `python -m bridge ...` (an exec, not preexec_fn: this process has threads).
WITH_LIMIT = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
    "os.execv(sys.executable, [sys.executable, '-m', 'bridge', *sys.argv[3:]])"
)


def start(
    config: Path, env: dict[str, str], log: Path, nofile: tuple[int, int] | None = None
) -> subprocess.Popen[str]:
    """`bridge serve` with RLIMIT_NOFILE set to (soft, hard) before it starts."""
    args = ["serve", "--config", str(config)]
    command = (
        [*BRIDGE, *args] if nofile is None else [sys.executable, "-c", WITH_LIMIT, *map(str, nofile), *args]
    )
    with log.open("w") as err:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)


def log_events(log: Path) -> list[dict[str, object]]:
    events = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


async def wait_until_up(port: int, process: subprocess.Popen[str]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            assert process.poll() is None, "bridge exited during start-up"
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("bridge did not come up")


def stop(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(15)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_max_calls_above_the_descriptor_limit_is_refused_at_start(
    tmp_path: Path, env: dict[str, str]
) -> None:
    nofile = 256
    too_many = (nofile - BASE_DESCRIPTORS) // DESCRIPTORS_PER_CALL + 1
    config = write_config(tmp_path / "bridge.toml", free_port(), max_calls=too_many)
    process = start(config, env, tmp_path / "stderr.log", nofile=(nofile, nofile))  # hard too: no raising
    assert process.wait(15) == 2
    (refusal,) = [
        e for e in log_events(tmp_path / "stderr.log") if e["event"] == "max_calls_above_descriptor_limit"
    ]
    problem = str(refusal["problem"])
    assert f"max_calls = {too_many}" in problem
    assert f"needs about {descriptors_needed(too_many)}" in problem
    assert f"may open only {nofile}" in problem
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


async def test_a_max_calls_within_the_limit_starts_and_the_soft_limit_is_raised(
    tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    fitting = (256 - BASE_DESCRIPTORS) // DESCRIPTORS_PER_CALL
    config = write_config(tmp_path / "bridge.toml", port, max_calls=fitting)
    hard = 256
    process = start(config, env, tmp_path / "stderr.log", nofile=(64, hard))  # soft below what it needs
    try:
        await wait_until_up(port, process)
        with open(f"/proc/{process.pid}/limits") as limits:
            (line,) = [x for x in limits if x.startswith("Max open files")]
        assert line.split()[3:5] == [str(hard), str(hard)]  # soft raised to the hard limit
    finally:
        assert stop(process) == 0
    (logged,) = [e for e in log_events(tmp_path / "stderr.log") if e["event"] == "descriptor_limit"]
    assert (logged["started_with"], logged["soft"], logged["hard"]) == (64, hard, hard)


async def test_descriptors_per_call_stay_within_the_budget(tmp_path: Path, env: dict[str, str]) -> None:
    """Count the daemon's descriptors idle and with N calls on the OpenAI relay (for the constants)."""
    calls = 8
    async with FakeRealtimeServer(
        api_key=FAKE_KEY, script=Script(greeting_reply_ms=300, turns=(Turn(reply_ms=300),))
    ) as fake:
        port = free_port()
        config = write_config(tmp_path / "bridge.toml", port, max_calls=50, model_url=fake.url)
        process = start(config, env, tmp_path / "stderr.log")
        try:
            await wait_until_up(port, process)
            idle = open_descriptors(process.pid)
            speech = utterances(8000, [(0.5, 1.2)])
            options = [
                SimulatedCallOptions(
                    url=f"http://127.0.0.1:{port}",
                    connector_key=CONNECTOR_KEY,
                    called=ACME_PHONE,
                    format="ulaw",
                    audio=AudioSource(pcm=speech, sample_rate=8000),
                    seconds=2.5,
                )
                for _ in range(calls)
            ]
            placed = asyncio.gather(*(run_simulated_call(o) for o in options))
            busiest = idle
            while not placed.done():
                live = fake.stats()["active_connections"]  # model sockets open right now
                count = open_descriptors(process.pid)
                if live == calls:
                    busiest = max(busiest, count)
                await asyncio.sleep(0.02)
            summaries = await placed
            assert all(s.ok for s in summaries), [s.errors for s in summaries]
        finally:
            assert stop(process) == 0
        fake.assert_clean()
    per_call = (busiest - idle) / calls
    print(f"descriptors: idle {idle}, with {calls} calls {busiest}, per call {per_call:.2f}")
    assert busiest > idle, "no sample caught every call live"
    assert per_call <= DESCRIPTORS_PER_CALL
    assert idle <= BASE_DESCRIPTORS
