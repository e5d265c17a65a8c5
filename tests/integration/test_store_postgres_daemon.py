"""The real daemon on `[storage] url = "postgresql://..."`: a simulated Asterisk call end to end, its
record, transcript and usage rows in PostgreSQL, and still there for the next process."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from bridge.keys import hash_key
from bridge.simulate import run_simulated_call
from tests.fakes.openai_realtime import FakeRealtimeServer, Script
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, free_port
from tests.integration.test_crash_recovery import (
    COMPANY_KEY,
    FAKE_KEY,
    Daemon,
    call_options,
    poll,
)
from tests.integration.test_process import wait_until_up


def write_config(path: Path, port: int, storage_url: str, model_url: str) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndrain_seconds = 2\n'
        f'[connector]\napi_keys = ["{hash_key(CONNECTOR_KEY)}"]\n'
        "[audiosocket]\nenabled = false\n"
        f'[storage]\nurl = "{storage_url}"\n'
        '[logging]\nformat = "json"\n'
        f'[providers.openai]\napi_key = "{FAKE_KEY}"\nurl = "{model_url}"\nmodel = "gpt-realtime"\n'
        f'[[companies]]\nid = "acme"\nphones = ["{ACME_PHONE}"]\napi_keys = ["{hash_key(COMPANY_KEY)}"]\n'
        '[companies.agent]\nprovider = "openai"\ngreeting = "Hello, Acme here."\n'
        'instructions = "You are the receptionist."\n'
    )
    return path


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}


@pytest.fixture
async def model() -> AsyncIterator[FakeRealtimeServer]:
    server = FakeRealtimeServer(api_key=FAKE_KEY, script=Script(greeting_reply_ms=300))
    await server.start()
    yield server
    await server.close()


async def test_the_daemon_serves_a_call_on_postgresql(
    tmp_path: Path, postgres_url: str, model: FakeRealtimeServer, env: dict[str, str]
) -> None:
    port = free_port()
    config = write_config(tmp_path / "bridge.toml", port, postgres_url, model.url)
    first = Daemon(config, port, tmp_path / "first.log", env)
    try:
        await wait_until_up(port, first.process)
        summary = await run_simulated_call(call_options(first, "pg-call-1", seconds=2.0))
        assert summary.frames_received > 0
        async with aiohttp.ClientSession() as http:

            async def ended() -> dict[str, Any] | None:
                record = await first.call(http, "pg-call-1", missing_ok=True)
                return record if record.get("status") == "ended" else None

            shown = await poll(ended, "the call to end")
    finally:
        assert first.stop() == 0, first.log.read_text()[-3000:]
    with psycopg.connect(postgres_url) as conn:
        row = conn.execute(
            "SELECT status, company_id, transcript, frames_in FROM calls WHERE call_id = 'pg-call-1'"
        ).fetchone()
        usage = conn.execute("SELECT provider, model FROM usage_rows WHERE call_id = 'pg-call-1'").fetchall()
    assert row is not None
    assert (row[0], row[1]) == ("ended", "acme")
    assert json.loads(row[2])
    assert row[3] == shown["frames_in"] > 0
    assert usage == [("openai", "gpt-realtime")]
    # The next process reads it back from the database.
    second = Daemon(config, port, tmp_path / "second.log", env)
    try:
        await wait_until_up(port, second.process)
        async with aiohttp.ClientSession() as http:
            again = await second.call(http, "pg-call-1")
            transcript = await second.get(http, "/api/calls/pg-call-1/transcript")
    finally:
        assert second.stop() == 0
    assert (again["status"], again["frames_in"]) == ("ended", shown["frames_in"])
    assert transcript["transcript"]
