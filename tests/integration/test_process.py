"""The installed daemon as a process: zero-config start, check-config, hash-key, SIGTERM drain, sd_notify."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.keys import hash_key
from tests.helpers import CONNECTOR_KEY, EXAMPLE_VARIABLES, free_port

BRIDGE = [sys.executable, "-m", "bridge"]


def write_config(path: Path, port: int, drain_seconds: float = 3.0) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndrain_seconds = {drain_seconds}\n'
        f'[connector]\napi_keys = ["{hash_key(CONNECTOR_KEY)}"]\n'
        "[audiosocket]\nenabled = false\n"
        # Each test its own store: call ids are never reused, and a store outlives the test run.
        f'[storage]\nurl = "sqlite:///{path.parent / "bridge.db"}"\n'
        '[logging]\nformat = "json"\n'
        '[[companies]]\nid = "acme"\nphones = ["+34987654321"]\n'
        f'api_keys = ["{hash_key("k")}"]\n'
    )
    return path


def serving(config: Path, env: dict[str, str], *, stdout: int = subprocess.PIPE) -> subprocess.Popen[str]:
    """`bridge serve --config CONFIG` with its output captured as text."""
    return subprocess.Popen(
        [*BRIDGE, "serve", "--config", str(config)], env=env, stdout=stdout, stderr=subprocess.PIPE, text=True
    )


async def wait_until_up(port: int, process: subprocess.Popen[str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            assert process.poll() is None, "bridge exited during start-up"
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("bridge did not come up")


async def post_connect(
    port: int, call_id: str, *, b_number: str = "34987654321", key: str = CONNECTOR_KEY
) -> tuple[int, dict[str, Any]]:
    """A PBX's `connect` webhook to the daemon on `port`: (status, JSON body)."""
    body = {
        "callId": call_id,
        "event": "connect",
        "callerPhone": "+34600000000",
        "b_number": b_number,
        "websocketUrl": "ws://127.0.0.1/x",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"http://127.0.0.1:{port}/api/voip/webhook", json=body, headers={"x-connector-api-key": key}
        ) as response,
    ):
        payload: dict[str, Any] = await response.json()
        return response.status, payload


@pytest.fixture
def env() -> Iterator[dict[str, str]]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}
    yield clean


def test_hash_key_prints_the_config_form(env: dict[str, str]) -> None:
    out = subprocess.run([*BRIDGE, "hash-key", "s3cret"], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == hash_key("s3cret")
    from_stdin = subprocess.run(
        [*BRIDGE, "hash-key", "-"], input="s3cret\n", capture_output=True, text=True, env=env, check=True
    )
    assert from_stdin.stdout.strip() == hash_key("s3cret")


def test_check_config_exit_codes(tmp_path: Path, env: dict[str, str]) -> None:
    good = write_config(tmp_path / "good.toml", 8080)
    result = subprocess.run(
        [*BRIDGE, "check-config", "--config", str(good)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "OK (1 companies" in result.stdout

    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[server]\nmax_calls = 0\n[[companies]]\nid = "a"\nphones = ["12"]\n'
        '[[companies]]\nid = "a"\n[companies.agent]\nprovider = "nope"\n'
    )
    result = subprocess.run(
        [*BRIDGE, "check-config", "--config", str(bad)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 2
    assert "4 problem(s)" in result.stderr
    for fragment in (
        "server.max_calls",
        "companies[0].phones[0]",
        "companies[1].agent.provider",
        "duplicate company id 'a'",
    ):
        assert fragment in result.stderr
    assert "Traceback" not in result.stderr


EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "bridge.example.toml"
# The ones the example's header says it needs as written.
EXAMPLE_NEEDS = {
    "BRIDGE_AMI_SECRET": "ami-secret-value",
    "ACME_CRM_TOKEN": "crm-token-value",
    "ACME_WEBHOOK_SECRET": "webhook-secret-value",
}


def check_config(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*BRIDGE, "check-config", "--config", str(config)], capture_output=True, text=True, env=env
    )


def test_check_config_passes_the_example_with_exactly_its_documented_variables(env: dict[str, str]) -> None:
    only_needed = {k: v for k, v in env.items() if k not in EXAMPLE_VARIABLES} | EXAMPLE_NEEDS
    result = check_config(EXAMPLE, only_needed)
    assert result.returncode == 0, result.stderr
    assert "OK (1 companies" in result.stdout
    for value in EXAMPLE_NEEDS.values():
        assert value not in result.stdout + result.stderr


@pytest.mark.parametrize("missing", sorted(EXAMPLE_NEEDS))
def test_check_config_fails_the_example_naming_a_missing_variable(env: dict[str, str], missing: str) -> None:
    without = {k: v for k, v in env.items() if k not in EXAMPLE_VARIABLES} | EXAMPLE_NEEDS
    del without[missing]
    result = check_config(EXAMPLE, without)
    assert result.returncode == 2
    assert "1 problem(s)" in result.stderr
    assert f"environment variable {missing} is not set" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_config_reports_a_shared_phone_and_a_keyless_provider_with_the_rest(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "bridge.toml"
    config.write_text(
        "[server]\nmax_calls = 0\n"
        '[[companies]]\nid = "acme"\nphones = ["+34987654321"]\n'
        '[[companies]]\nid = "globex"\nphones = ["+34987654321"]\n'
    )
    result = check_config(config, env)
    assert result.returncode == 2
    assert "2 problem(s)" in result.stderr
    assert "server.max_calls" in result.stderr
    assert "companies[1].phones[0]: +34987654321 is already a phone of company 'acme' (companies[0])" in (
        result.stderr
    )

    config.write_text('[[companies]]\nid = "acme"\n[companies.agent]\nprovider = "openai"\n')
    result = check_config(config, env)
    assert result.returncode == 2
    assert "companies[0].agent.provider: openai needs providers.openai.api_key" in result.stderr


def test_check_config_still_prints_warnings(tmp_path: Path, env: dict[str, str]) -> None:
    config = write_config(tmp_path / "bridge.toml", 8080)
    config.write_text(config.read_text().replace(hash_key("k"), "plain-company-key"))
    result = check_config(config, env)
    assert result.returncode == 0, result.stderr
    assert "warning: companies[0].api_keys[0]: plain key" in result.stderr
    assert "warning: asterisk.ami.secret: empty; call control is off" in result.stderr
    assert "plain-company-key" not in result.stderr


async def test_zero_config_start_prints_keys_once_and_they_work(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen(
        [*BRIDGE, "serve"],
        cwd=tmp_path,
        env={**env, "BRIDGE_SERVER__PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_until_up(port, process)
        assert process.stdout is not None
        lines = [process.stdout.readline() for _ in range(5)]
        company_key = next(line.split()[-1] for line in lines if "company API key" in line)
        connector_key = next(line.split()[-1] for line in lines if "connector key" in line)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/api/phones", headers={"X-API-Key": company_key}) as r,
        ):
            assert r.status == 200
            assert (await r.json())["data"]["phones"] == ["+15550100000"]
        status, _ = await post_connect(port, "z1", b_number="+15550100000", key=connector_key)
        assert status == 200
        # The wiring test a telephony engineer runs: a simulated Asterisk call against the demo setup.
        heard = tmp_path / "heard.wav"
        simulate = await asyncio.create_subprocess_exec(
            *BRIDGE,
            "simulate-call",
            "--url",
            f"http://127.0.0.1:{port}",
            "--connector-key",
            connector_key,
            "--called",
            "+15550100000",
            "--format",
            "ulaw",
            "--seconds",
            "2",
            "--out",
            str(heard),
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(simulate.communicate(), 30)
        assert simulate.returncode == 0, err.decode()
        summary = json.loads(out.decode().strip().splitlines()[-1])
        assert summary["frames_received"] > 50
        assert heard.stat().st_size > 44 + 8000 * 2  # a WAV header and over a second of 8 kHz audio
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    # The keys were printed once, on stdout, and never logged.
    assert company_key not in stderr
    assert connector_key not in stderr


async def test_sigterm_drains_and_exits_zero_within_drain_seconds(
    tmp_path: Path, env: dict[str, str]
) -> None:
    port = free_port()
    drain_seconds = 3.0
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(10)
    config = write_config(tmp_path / "bridge.toml", port, drain_seconds)
    process = serving(config, {**env, "NOTIFY_SOCKET": str(notify_path)})
    try:
        await wait_until_up(port, process)
        assert notify.recv(1024).startswith(b"READY=1")
        status, _ = await post_connect(port, "live-1")
        assert status == 200
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert notify.recv(1024) == b"STOPPING=1"
        process.wait(timeout=drain_seconds + 5)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=5)
        notify.close()
    assert process.returncode == 0, stderr
    assert elapsed < drain_seconds
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    ended = [e for e in events if e["event"] == "call_ended"]
    assert ended == [e for e in ended if e["call_id"] == "live-1" and e["disconnected_by"] == "shutdown"]
    assert len(ended) == 1
    assert events[-1]["event"] == "stopped"
    # It no longer accepts connections.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_sigterm_with_a_live_call_refuses_new_ones_then_hangs_up(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from bridge.simulate import SimulatedCallOptions, run_simulated_call

    port = free_port()
    drain_seconds = 3.0
    config = write_config(tmp_path / "bridge.toml", port, drain_seconds)
    with config.open("a") as handle:
        handle.write('[companies.agent]\nprovider = "echo"\n')
    process = serving(config, env)
    try:
        await wait_until_up(port, process)
        records: asyncio.Queue[Any] = asyncio.Queue()
        call = asyncio.create_task(
            run_simulated_call(
                SimulatedCallOptions(
                    url=f"http://127.0.0.1:{port}",
                    connector_key=CONNECTOR_KEY,
                    call_id="live-2",
                    called="+34987654321",
                    seconds=30,
                    wait_for_bridge_hangup=True,
                    records=records,
                )
            )
        )
        while (await asyncio.wait_for(records.get(), 10)).name != "START_MEDIA_BUFFERING":
            pass
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        status, payload = await post_connect(port, "late-1")
        assert status == 503
        assert payload["code"] == "shutting_down"
        summary = await asyncio.wait_for(call, drain_seconds + 5)
        await asyncio.get_running_loop().run_in_executor(None, process.wait, 10)
        elapsed = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    assert elapsed < drain_seconds + 1.0
    assert summary.hangup_by == "bridge"
    assert summary.ok, summary.errors
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    ended = [e for e in events if e["event"] == "call_ended" and e["call_id"] == "live-2"]
    assert ended[0]["disconnected_by"] == "shutdown"


async def test_sighup_reloads_companies_and_keys(tmp_path: Path, env: dict[str, str]) -> None:
    port = free_port()
    config = write_config(tmp_path / "bridge.toml", port)
    process = serving(config, env)
    try:
        await wait_until_up(port, process)
        phones_url = f"http://127.0.0.1:{port}/api/phones"
        async with aiohttp.ClientSession() as http:
            async with http.get(phones_url, headers={"X-API-Key": "new-key"}) as r:
                assert r.status == 401
            config.write_text(config.read_text().replace(hash_key("k"), hash_key("new-key")))
            process.send_signal(signal.SIGHUP)
            for _ in range(100):
                async with http.get(phones_url, headers={"X-API-Key": "new-key"}) as r:
                    if r.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert r.status == 200
            async with http.get(phones_url, headers={"X-API-Key": "k"}) as r:
                assert r.status == 401  # the old key is gone
            # A broken file is refused and the running configuration stays.
            config.write_text("[server\n")
            process.send_signal(signal.SIGHUP)
            await asyncio.sleep(0.3)
            async with http.get(phones_url, headers={"X-API-Key": "new-key"}) as r:
                assert r.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0
    assert '"event": "reload_failed"' in stderr


async def test_sigterm_during_start_up_stops_once_started(tmp_path: Path, env: dict[str, str]) -> None:
    # /health answers while start-up still runs (tasks, webhooks, reports): a SIGTERM sent then must not
    # meet the default action, which kills the process with no drain, no record and exit -15.
    config = write_config(tmp_path / "bridge.toml", free_port())
    process = serving(config, env, stdout=subprocess.DEVNULL)
    try:
        assert process.stderr is not None
        first = json.loads(process.stderr.readline())  # the first line, before anything listens
        assert first["event"] == "descriptor_limit"
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, rest
    events = [json.loads(line)["event"] for line in rest.splitlines() if line.startswith("{")]
    assert events.index("listening") < events.index("shutdown_requested") < events.index("stopped")
