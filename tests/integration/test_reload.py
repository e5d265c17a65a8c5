"""SIGHUP on the daemon as a process: a reload's outcome in /health and /metrics; demo mode survives it."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import bridge.app
from bridge.api.reload_status import CONFIG_RELOAD
from bridge.app import Services, serve
from bridge.keys import hash_key
from bridge.settings import ConfigError, Settings, load_settings
from tests.helpers import free_port
from tests.integration.test_process import BRIDGE, wait_until_up, write_config

NO_RELOAD_YET = {"last_reload": None, "last_reload_at": None, "problems": 0}
# Two problems, one of them a key that must not leak into /health.
BROKEN_CONFIG = (
    '[server]\nmax_calls = 0\n[[companies]]\nid = "acme"\nphones = ["12"]\napi_keys = ["leaky-key-value"]\n'
)


@pytest.fixture
def clean_env() -> Iterator[dict[str, str]]:
    yield {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}


async def health_config(http: aiohttp.ClientSession, port: int) -> dict[str, Any]:
    async with http.get(f"http://127.0.0.1:{port}/health") as response:
        assert response.status == 200
        config: dict[str, Any] = (await response.json())["config"]
        return config


async def metric_values(http: aiohttp.ClientSession, port: int) -> dict[str, float]:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    samples = (line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {name: float(value) for name, value in samples}


def spawn_bridge(args: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*BRIDGE, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def logged_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


async def reload_outcome(http: aiohttp.ClientSession, port: int, expected: str) -> dict[str, Any]:
    """Poll /health until the last reload is `expected` (a SIGHUP is handled asynchronously)."""
    for _ in range(200):
        config = await health_config(http, port)
        if config["last_reload"] == expected:
            return config
        await asyncio.sleep(0.05)
    raise AssertionError(f"the daemon never reported a reload {expected}")


async def test_a_failed_reload_shows_in_health_and_metrics_and_the_old_config_stays(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "bridge.toml", port)
    process = spawn_bridge(["serve", "--config", str(config)], clean_env)
    try:
        await wait_until_up(port, process)
        phones_url = f"http://127.0.0.1:{port}/api/phones"
        async with aiohttp.ClientSession() as http:
            assert await health_config(http, port) == NO_RELOAD_YET
            metrics = await metric_values(http, port)
            assert metrics["bridge_config_reload_failures_total"] == 0
            assert metrics["bridge_config_last_reload_success"] == 1  # the start-up load
            started_at = metrics["bridge_config_last_reload_timestamp_seconds"]
            assert started_at > 0

            config.write_text(BROKEN_CONFIG)
            process.send_signal(signal.SIGHUP)
            failed = await reload_outcome(http, port, "failed")
            assert failed["last_reload_at"] is not None
            assert failed["problems"] == 2
            async with http.get(f"http://127.0.0.1:{port}/health") as response:
                assert "leaky-key-value" not in await response.text()
                assert "max_calls" not in await response.text()
            metrics = await metric_values(http, port)
            assert metrics["bridge_config_reload_failures_total"] == 1
            assert metrics["bridge_config_last_reload_success"] == 0
            assert metrics["bridge_config_last_reload_timestamp_seconds"] >= started_at
            # Still serving, with the configuration it had.
            async with http.get(phones_url, headers={"X-API-Key": "k"}) as r:
                assert r.status == 200

            write_config(config, port)
            config.write_text(config.read_text().replace(hash_key("k"), hash_key("new-key")))
            process.send_signal(signal.SIGHUP)
            fixed = await reload_outcome(http, port, "ok")
            assert fixed["last_reload_at"] >= failed["last_reload_at"]
            assert fixed["problems"] == 0
            metrics = await metric_values(http, port)
            assert metrics["bridge_config_reload_failures_total"] == 1  # a counter: the failure stays counted
            assert metrics["bridge_config_last_reload_success"] == 1
            async with http.get(phones_url, headers={"X-API-Key": "new-key"}) as r:
                assert r.status == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    events = logged_events(stderr)
    assert [e["event"] for e in events if e["event"] in ("reload_failed", "reloaded")] == [
        "reload_failed",
        "reloaded",
    ]


async def test_sighup_without_a_config_file_is_logged_and_ignored(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    port = free_port()
    # The demo's AudioSocket listener would take the fixed port 9092: a port of its own, like HTTP's.
    demo_env = clean_env | {
        "BRIDGE_SERVER__PORT": str(port),
        "BRIDGE_AUDIOSOCKET__PORT": "0",
        "BRIDGE_LOGGING__FORMAT": "json",
    }
    process = spawn_bridge(["serve"], demo_env, cwd=tmp_path)
    try:
        await wait_until_up(port, process)
        async with aiohttp.ClientSession() as http:
            # Each SIGHUP is delivered before the daemon answers the next request (two sent back to back
            # could merge into one pending signal).
            for _ in range(2):
                process.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.1)
                assert await health_config(http, port) == NO_RELOAD_YET
        assert process.poll() is None, "SIGHUP killed the daemon"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    events = logged_events(stderr)
    ignored = [e for e in events if e["event"] == "reload_ignored"]
    assert len(ignored) == 2
    assert "no config file" in ignored[0]["reason"]


async def test_a_sighup_during_start_up_is_applied_once_start_up_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/health answers before start-up ends: a SIGHUP sent then is deferred, never dropped or run midway."""
    config = write_config(tmp_path / "bridge.toml", free_port())
    attempts: list[str] = []
    started: list[Services] = []
    start_services = bridge.app.start_services

    def reload_settings() -> Settings:
        attempts.append("reload")
        raise ConfigError(["server.max_calls: must be at least 1"])

    async def start_with_a_sighup_midway(settings: Settings, *, reuse_port: bool = False) -> Services:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.sleep(0.05)  # the loop has run the signal's handler
        assert attempts == [], "a reload ran before start-up ended"
        services = await start_services(settings, reuse_port=reuse_port)
        started.append(services)
        return services

    monkeypatch.setattr(bridge.app, "start_services", start_with_a_sighup_midway)
    daemon = asyncio.create_task(serve(load_settings(config), reload_settings=reload_settings))
    try:
        for _ in range(200):
            if attempts:
                break
            await asyncio.sleep(0.05)
        assert attempts == ["reload"]
        status = started[0].app[CONFIG_RELOAD]
        assert (status.last_ok, status.failures, status.problems) == (False, 1, 1)
    finally:
        if not daemon.done():  # its own handler then: it drains and returns (else SIGTERM would end pytest)
            os.kill(os.getpid(), signal.SIGTERM)
        try:
            assert await asyncio.wait_for(daemon, 10) == 0
        finally:
            gc.unfreeze()  # `serve` froze this test process's heap once it had started
