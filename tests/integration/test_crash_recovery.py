"""kill -9 in the middle of a call: the restarted daemon shows what the last checkpoint held.

The real daemon runs as a process on a file-backed store, a simulated Asterisk calls it and a strict
fake OpenAI Realtime server plays the model, so the call has frames both ways, a transcript, usage
and a cost. Tolerances are on checkpoint timing only; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.keys import hash_key
from bridge.simulate import CallSummary, SimulatedCallOptions, run_simulated_call
from bridge.store import TranscriptLine, iso_utc
from bridge.store.schema import COLUMNS
from tests.fakes.openai_realtime import FakeRealtimeServer, Script
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, free_port
from tests.integration.test_process import BRIDGE, wait_until_up

CHECKPOINT_S = 0.5
# How late a checkpoint may land after its tick on a loaded machine (the store's thread, the loop).
SLACK_S = 1.0
FRAME_S = 0.020  # the simulated caller sends one 20 ms frame per message
COMPANY_KEY = "acme-company-key"
FAKE_KEY = "sk-test-key"
GUARD_S = 30.0


def write_config(path: Path, port: int, db: Path, model_url: str) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndrain_seconds = 2\n'
        f'[connector]\napi_keys = ["{hash_key(CONNECTOR_KEY)}"]\n'
        "[audiosocket]\nenabled = false\n"
        f'[storage]\nurl = "sqlite:///{db}"\ncheckpoint_seconds = {CHECKPOINT_S}\n'
        '[logging]\nformat = "json"\n'
        f'[providers.openai]\napi_key = "{FAKE_KEY}"\nurl = "{model_url}"\nmodel = "gpt-realtime"\n'
        f'[[companies]]\nid = "acme"\nphones = ["{ACME_PHONE}"]\napi_keys = ["{hash_key(COMPANY_KEY)}"]\n'
        '[companies.agent]\nprovider = "openai"\ngreeting = "Hello, Acme here."\n'
        'instructions = "You are the receptionist."\n'
    )
    return path


class Daemon:
    """`python -m bridge serve` as a child process; its log goes to a file (a killed process leaves no
    pipe to drain)."""

    def __init__(self, config: Path, port: int, log: Path, env: dict[str, str]) -> None:
        self.port = port
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [*BRIDGE, "serve", "--config", str(config)], env=env, stdout=out, stderr=out, text=True
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def get(
        self, http: aiohttp.ClientSession, path: str, *, missing_ok: bool = False
    ) -> dict[str, Any]:
        async with http.get(self.url + path, headers={"X-API-Key": COMPANY_KEY}) as response:
            body: dict[str, Any] = await response.json()
            if missing_ok and response.status == 404:
                return {}
            assert response.status == 200, body
            data: dict[str, Any] = body["data"]
            return data

    async def call(
        self, http: aiohttp.ClientSession, call_id: str, *, missing_ok: bool = False
    ) -> dict[str, Any]:
        """`GET /api/calls/{id}` as the company sees it ({} for a call it does not know yet)."""
        data = await self.get(http, f"/api/calls/{call_id}", missing_ok=missing_ok)
        call: dict[str, Any] = data.get("call", {})
        return call

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """The log's JSON lines, or only the `name` events."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]
        return lines if name is None else [line for line in lines if line.get("event") == name]

    def kill(self) -> None:
        """SIGKILL: no drain, no final saves, no closing of the store."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)


def raw_row(db: Path, call_id: str) -> dict[str, Any]:
    """The call's row exactly as the file holds it (read beside the daemon: WAL lets a reader in)."""
    conn = sqlite3.connect(db)
    try:
        query = f"SELECT {', '.join(COLUMNS)} FROM calls WHERE call_id = ?"
        row = conn.execute(query, (call_id,)).fetchone()
    finally:
        conn.close()
    assert row is not None, f"no row for {call_id}"
    return dict(zip(COLUMNS, row, strict=True))


def call_options(daemon: Daemon, call_id: str, seconds: float) -> SimulatedCallOptions:
    # No webhook announced the call: the media socket proves itself with the connector key.
    return SimulatedCallOptions(
        url=daemon.url,
        connector_key=CONNECTOR_KEY,
        send_webhook=False,
        ws_username="asterisk",
        ws_password=CONNECTOR_KEY,
        call_id=call_id,
        called=ACME_PHONE,
        seconds=seconds,
        max_seconds=seconds + GUARD_S,
    )


async def poll(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """`await check()` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}


@pytest.fixture
async def model() -> AsyncIterator[FakeRealtimeServer]:
    server = FakeRealtimeServer(api_key=FAKE_KEY, script=Script(greeting_reply_ms=800))
    await server.start()
    yield server
    await server.close()


async def test_a_killed_bridge_keeps_the_last_checkpoint_of_a_live_call(
    tmp_path: Path, model: FakeRealtimeServer, env: dict[str, str]
) -> None:
    db = tmp_path / "calls.db"
    port = free_port()
    config = write_config(tmp_path / "bridge.toml", port, db, model.url)
    first = Daemon(config, port, tmp_path / "first.log", env)
    live_call: asyncio.Task[CallSummary] | None = None
    try:
        await wait_until_up(port, first.process)
        async with aiohttp.ClientSession() as http:
            # A call that is over before the crash: the restart must not touch it.
            await run_simulated_call(call_options(first, "done-1", seconds=2.0))

            async def finished() -> dict[str, Any] | None:
                record = await first.call(http, "done-1")
                return record if record["status"] == "ended" else None

            done_api = await poll(finished, "the first call to end")
            done_transcript = await first.get(http, "/api/calls/done-1/transcript")

            live_call = asyncio.create_task(run_simulated_call(call_options(first, "live-1", seconds=120)))

            async def conversing() -> bool:
                # A live call's GET is served from its session: the counters move while it runs.
                record = await first.call(http, "live-1", missing_ok=True)
                return (
                    record.get("status") == "active"
                    and record["frames_in"] > 0
                    and record["frames_out"] > 0
                    and record["transcript_lines"] > 0
                    and record["usage"]["responses"] > 0
                )

            await poll(conversing, "the live call to be a conversation")

            checkpoints: set[float] = set()

            async def checkpointed_a_few_times() -> bool:
                row = raw_row(db, "live-1")
                if row["status"] == "active" and json.loads(row["transcript"]):
                    checkpoints.add(row["updated_at"])
                return len(checkpoints) >= 3  # the call changes no state now: these are checkpoints

            await poll(checkpointed_a_few_times, "checkpoints of the live call")
            killed_at = time.time()
            first.kill()
    finally:
        first.kill()
        if live_call is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(live_call, GUARD_S)

    checkpoint = raw_row(db, "live-1")  # what the file held when the process died
    done_row = raw_row(db, "done-1")
    assert checkpoint["status"] == "active"
    last_save = checkpoint["updated_at"]
    assert killed_at - CHECKPOINT_S - SLACK_S <= last_save <= killed_at

    second = Daemon(config, port, tmp_path / "second.log", env)
    try:
        await wait_until_up(port, second.process)
        async with aiohttp.ClientSession() as http:
            record = await second.call(http, "live-1")
            transcript = await second.get(http, "/api/calls/live-1/transcript")
            assert await second.call(http, "done-1") == done_api
            assert await second.get(http, "/api/calls/done-1/transcript") == done_transcript
    finally:
        returncode = second.stop()
    assert returncode == 0

    # Failed by the restart, ending at its last checkpoint, with everything that checkpoint held.
    assert (record["status"], record["error_code"]) == ("failed", "bridge_restarted")
    assert record["ended_at"] == iso_utc(last_save)
    assert record["duration_seconds"] == checkpoint["duration_seconds"]
    assert record["duration_seconds"] > 0
    assert (record["frames_in"], record["frames_out"]) == (checkpoint["frames_in"], checkpoint["frames_out"])
    assert record["frames_out"] > 0
    assert record["usage"] == json.loads(checkpoint["usage"])
    assert record["usage"]["responses"] > 0
    assert record["cost_usd"] == checkpoint["cost_usd"]
    assert record["cost_usd"] > 0
    assert (record["provider"], record["model"]) == ("openai", "gpt-realtime")
    lines = [TranscriptLine.from_dict(line) for line in json.loads(checkpoint["transcript"])]
    assert transcript["transcript"] == [line.to_api() for line in lines]
    assert any(line.role == "bot" for line in lines)
    assert transcript["status"] == "failed"

    # The checkpoint is as fresh as the interval says: its frames and duration agree with how long
    # the call had run when the process died (the caller sends a frame every 20 ms).
    ran = killed_at - checkpoint["created_at"]
    assert ran - CHECKPOINT_S - SLACK_S <= record["duration_seconds"] <= ran
    heard = record["frames_in"] * FRAME_S
    assert (
        record["duration_seconds"] - CHECKPOINT_S - SLACK_S <= heard <= record["duration_seconds"] + FRAME_S
    )

    # In the file: only the three interrupted fields changed; the finished call is byte-for-byte the same.
    interrupted = {"status": "failed", "error_code": "bridge_restarted", "ended_at": last_save}
    assert raw_row(db, "live-1") == checkpoint | interrupted
    assert raw_row(db, "done-1") == done_row
    assert done_row["status"] == "ended"
    restarts = [e for e in second.events() if e["event"] == "calls_interrupted_by_restart"]
    assert [e["calls"] for e in restarts] == [1]
