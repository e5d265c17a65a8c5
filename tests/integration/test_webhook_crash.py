"""kill -9 between a call's state change and its webhook delivery: the events were committed with the
state, so the restarted daemon delivers them, each delivery id once, in order; and a call the kill
cut short gets its call_failed (bridge_restarted) from the restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest

from bridge.keys import hash_key
from bridge.simulate import run_simulated_call
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, free_port
from tests.integration.test_crash_recovery import COMPANY_KEY, Daemon, call_options
from tests.integration.test_process import wait_until_up
from tests.integration.webhook_support import Receiver, verify_bridge_signature

SECRET = "whsec-crash-0123456789abcdef"
DEADLINE = 30.0


def write_config(path: Path, port: int, db: Path, hook_url: str) -> Path:
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndrain_seconds = 2\n'
        f'[connector]\napi_keys = ["{hash_key(CONNECTOR_KEY)}"]\n'
        "[audiosocket]\nenabled = false\n"
        f'[storage]\nurl = "sqlite:///{db}"\n'
        '[logging]\nformat = "json"\n'
        "[webhook_delivery]\nretry_base_seconds = 0.1\nretry_max_seconds = 0.5\npoll_seconds = 0.1\n"
        f'[[companies]]\nid = "acme"\nphones = ["{ACME_PHONE}"]\napi_keys = ["{hash_key(COMPANY_KEY)}"]\n'
        '[companies.agent]\nprovider = "echo"\n'
        f'[companies.webhooks]\nurl = "{hook_url}"\nsecret = "{SECRET}"\n'
    )
    return path


def deliveries(db: Path, call_id: str) -> list[tuple[str, str, str]]:
    """(delivery id, event type, status) as the file holds them, oldest first."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT d.id, e.type, d.status FROM webhook_deliveries d JOIN webhook_events e "
            "ON e.id = d.event_id WHERE d.call_id = ? ORDER BY d.seq",
            (call_id,),
        ).fetchall()
    except sqlite3.OperationalError:  # the daemon has not created the tables yet
        return []
    finally:
        conn.close()


@pytest.fixture
def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_", "WATCHDOG_"))}


async def test_events_committed_before_a_kill_are_delivered_after_the_restart(
    tmp_path: Path, env: dict[str, str]
) -> None:
    db = tmp_path / "calls.db"
    port = free_port()
    receiver = Receiver(SECRET)
    receiver.port = free_port()  # nothing listens there yet: the receiver is down
    config = write_config(tmp_path / "bridge.toml", port, db, receiver.url)
    first = Daemon(config, port, tmp_path / "first.log", env)
    second: Daemon | None = None
    try:
        await wait_until_up(port, first.process)
        await run_simulated_call(call_options(first, "crash-1", seconds=1.0))
        deadline = time.monotonic() + DEADLINE
        while [kind for _, kind, _ in deliveries(db, "crash-1")] != ["call_started", "call_completed"]:
            assert time.monotonic() < deadline, deliveries(db, "crash-1")
            await asyncio.sleep(0.1)
        written = deliveries(db, "crash-1")
        assert all(status == "pending" for _, _, status in written)
        # A call still live at the kill: its call_started is in the file, its end never was.
        live = asyncio.ensure_future(run_simulated_call(call_options(first, "crash-live", seconds=60)))
        while [kind for _, kind, _ in deliveries(db, "crash-live")] != ["call_started"]:
            assert time.monotonic() < deadline, deliveries(db, "crash-live")
            await asyncio.sleep(0.1)
        first.kill()
        await asyncio.gather(live, return_exceptions=True)
        await receiver.start(receiver.port)
        second = Daemon(config, port, tmp_path / "second.log", env)
        await wait_until_up(port, second.process)
        deadline = time.monotonic() + DEADLINE
        while len(receiver.accepted) < 4:
            assert time.monotonic() < deadline, receiver.hits
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # nothing arrives twice
        assert len(receiver.accepted) == 4
        done = [hit.delivery_id for hit in receiver.accepted if hit.body["call_id"] == "crash-1"]
        assert done == [delivery_id for delivery_id, _, _ in written]
        assert receiver.types("crash-1") == ["call_started", "call_completed"]
        # The restart failed the live call (bridge_restarted) and announced it.
        assert receiver.types("crash-live") == ["call_started", "call_failed"]
        (failed,) = [hit.body for hit in receiver.accepted if hit.body["type"] == "call_failed"]
        assert failed["data"]["error_code"] == "bridge_restarted"
        assert all(verify_bridge_signature(SECRET, hit.signature, hit.raw) for hit in receiver.accepted)
        async with aiohttp.ClientSession() as http:
            data = await second.get(http, "/api/webhooks/deliveries?call_id=crash-1")
        assert {d["status"] for d in data["deliveries"]} == {"delivered"}
        assert second.stop() == 0
    finally:
        first.kill()
        if second is not None:
            second.kill()
        await receiver.close()
