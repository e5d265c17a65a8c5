"""Tasks (scheduled outbound calls) end to end: REST API -> scheduler -> fake AMI, and the store.

When the fake AMI "answers", the simulated Asterisk peer opens the media socket with the call id, as
the sample dialplan's bridge-outbound context would (see test_outbound_calls.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from bridge.app import start_services
from bridge.session.state import CallState
from bridge.settings import Settings, build_settings
from bridge.simulate import CallSummary
from tests.fakes.ami_server import DialScript, FakeAmiServer, Outcome
from tests.helpers import ACME_KEY, ACME_PHONE, GLOBEX_KEY, GLOBEX_PHONE, raw_config
from tests.integration.test_outbound_calls import AMI_SECRET, Bridge, answer_with_peer

CALLEE = "+15551234567"
DEADLINE = 20.0


def task_settings(ami_port: int, storage: str = "sqlite://:memory:", **tasks: Any) -> Settings:
    raw = raw_config()
    raw["storage"] = {"url": storage}
    raw["asterisk"] = {
        "control": "ami",
        "ami": {"host": "127.0.0.1", "port": ami_port, "username": "bridge", "secret": AMI_SECRET},
        "originate": {"endpoint": "PJSIP/{to}@trunk", "timeout_seconds": 5},
    }
    raw["tasks"] = {"poll_seconds": 0.1, **tasks}
    return build_settings(raw)


def rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def eventually(check: Callable[[], Awaitable[bool]], what: str, deadline: float = DEADLINE) -> None:
    give_up = time.monotonic() + deadline
    while time.monotonic() < give_up:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never: {what}")


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({"bridge": AMI_SECRET}) as server:
        yield server


async def started(settings: Settings, http: aiohttp.ClientSession) -> Bridge:
    bridge = Bridge(await start_services(settings), http)
    await bridge.wait_ready()
    return bridge


@pytest.fixture
async def bridge(ami: FakeAmiServer, store_url: str) -> AsyncIterator[Bridge]:
    async with aiohttp.ClientSession() as http:
        running = await started(task_settings(ami.port, storage=store_url), http)
        yield running
        await running.services.close()


async def create(bridge: Bridge, key: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"to_number": CALLEE, "call_objective": "Confirm the delivery", **fields}
    status, reply = await bridge.call("POST", "/api/tasks", json=body, key=key or ACME_KEY)
    assert status == 201, reply
    task: dict[str, Any] = reply["data"]["task"]
    return task


async def task_of(bridge: Bridge, task_id: str) -> dict[str, Any]:
    status, reply = await bridge.call("GET", f"/api/tasks/{task_id}")
    assert status == 200, reply
    task: dict[str, Any] = reply["data"]["task"]
    return task


async def wait_task(bridge: Bridge, task_id: str, **expected: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def matches() -> bool:
        seen.update(await task_of(bridge, task_id))
        return all(seen[name] == value for name, value in expected.items())

    try:
        await eventually(matches, f"task {task_id} with {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc} (last seen {seen})") from None
    return seen


async def end_when_active(bridge: Bridge, task_id: str) -> str:
    """The task's call, once in conversation, ended through the API; its call id."""
    return await end_when_active_as(bridge, task_id, ACME_KEY)


async def end_when_active_as(bridge: Bridge, task_id: str, key: str) -> str:
    task: dict[str, Any] = {}

    async def dialed() -> bool:
        _, reply = await bridge.call("GET", f"/api/tasks/{task_id}", key=key)
        task.update(reply["data"]["task"])
        return task["status"] == "in_progress" and task["last_call_id"] is not None

    await eventually(dialed, f"task {task_id} calling")
    call_id: str = task["last_call_id"]
    await bridge.wait_state(call_id, CallState.ACTIVE)
    status, reply = await bridge.call("POST", f"/api/calls/{call_id}/end", key=key)
    assert status == 200, reply
    session = bridge.services.manager.get(call_id)
    if session is not None:
        await asyncio.wait_for(session.ended.wait(), DEADLINE)
    return call_id


async def test_a_scheduled_task_runs_at_its_time_and_its_call_names_it(
    ami: FakeAmiServer, bridge: Bridge
) -> None:
    peers: list[asyncio.Task[CallSummary]] = []
    answer_with_peer(ami, bridge, peers)
    at = time.time() + 1.5
    task = await create(
        bridge,
        scheduled_at=rfc3339(at),
        call_objective="Confirm the delivery for {{crm.name}}",
        context_data={"name": "Ana"},
        priority=2,
    )
    assert (task["status"], task["attempts"], task["from_number"]) == ("pending", 0, ACME_PHONE)
    assert task["scheduled_at"] == rfc3339(at)
    call_id = await end_when_active(bridge, task["id"])
    (originate,) = ami.actions("Originate")
    assert originate.at >= int(at * 1000) / 1000  # not before its time (to the millisecond it was given)
    assert originate.get("ChannelId") == call_id
    done = await wait_task(bridge, task["id"], status="completed")
    assert (done["attempts"], done["last_call_id"], done["last_error"]) == (1, call_id, None)
    await bridge.services.recorder.flush()
    status, reply = await bridge.call("GET", f"/api/calls?task_id={task['id']}")
    assert status == 200
    (call,) = reply["data"]["calls"]
    assert (call["call_id"], call["task_id"], call["status"]) == (call_id, task["id"], "ended")
    await asyncio.gather(*peers, return_exceptions=True)


async def test_busy_is_retried_after_the_delay_then_completes(ami: FakeAmiServer, bridge: Bridge) -> None:
    ami.scripts[CALLEE.lstrip("+")] = DialScript(Outcome.BUSY)
    task = await create(bridge, max_attempts=5, retry_delay_seconds=2, retry_on=["busy"])
    retrying = await wait_task(bridge, task["id"], status="pending", last_error="busy")
    first_call = retrying["last_call_id"]
    del ami.scripts[CALLEE.lstrip("+")]  # the next dial is answered
    peers: list[asyncio.Task[CallSummary]] = []
    answer_with_peer(ami, bridge, peers)
    second_call = await end_when_active(bridge, task["id"])
    done = await wait_task(bridge, task["id"], status="completed")
    assert done["attempts"] >= 2  # 2 unless this machine stalled past the delay before the script changed
    assert second_call != first_call
    dials = [a.at for a in ami.actions("Originate")]
    assert len(dials) == done["attempts"]
    assert all(b - a >= 2.0 for a, b in itertools.pairwise(dials))  # each retry waited
    await bridge.services.recorder.flush()
    _, reply = await bridge.call("GET", f"/api/calls?task_id={task['id']}")
    calls = {c["call_id"]: c for c in reply["data"]["calls"]}
    assert (calls[first_call]["status"], calls[first_call]["error_code"]) == ("failed", "busy")
    assert calls[second_call]["status"] == "ended"
    await asyncio.gather(*peers, return_exceptions=True)


async def test_no_answer_exhausts_the_attempts_and_fails(ami: FakeAmiServer, bridge: Bridge) -> None:
    ami.scripts[CALLEE.lstrip("+")] = DialScript(Outcome.NO_ANSWER)
    task = await create(bridge, max_attempts=2, retry_delay_seconds=0)
    failed = await wait_task(bridge, task["id"], status="failed")
    assert (failed["attempts"], failed["last_error"]) == (2, "no_answer")
    assert len(ami.actions("Originate")) == 2


async def test_a_restart_before_its_time_keeps_the_task(ami: FakeAmiServer, store_url: str) -> None:
    settings = task_settings(ami.port, storage=store_url)
    async with aiohttp.ClientSession() as http:
        first = await started(settings, http)
        at = time.time() + 3.5
        task = await create(first, scheduled_at=rfc3339(at))
        await first.services.close()  # before its time
        assert time.time() < at
        assert ami.actions("Originate") == []
        second = await started(settings, http)
        try:
            peers: list[asyncio.Task[CallSummary]] = []
            answer_with_peer(ami, second, peers)
            await end_when_active(second, task["id"])
            await wait_task(second, task["id"], status="completed", attempts=1)
            (originate,) = ami.actions("Originate")
            assert originate.at >= int(at * 1000) / 1000
            await asyncio.gather(*peers, return_exceptions=True)
        finally:
            await second.services.close()


async def test_a_task_a_crash_left_in_progress_is_counted_and_retried(
    ami: FakeAmiServer, store_url: str
) -> None:
    settings = task_settings(ami.port, storage=store_url)
    ami.scripts[CALLEE.lstrip("+")] = DialScript(Outcome.SILENT)  # rings for ever: still in progress
    async with aiohttp.ClientSession() as http:
        first = await started(settings, http)
        task = await create(first, max_attempts=2, retry_delay_seconds=3600)
        await wait_task(first, task["id"], status="in_progress", attempts=1)
        await eventually(lambda: _true(len(ami.actions("Originate")) == 1), "the dial")
        await first.services.close()  # the call is gone with the process
        second = await started(settings, http)
        try:
            after = await task_of(second, task["id"])
            assert (after["status"], after["attempts"], after["last_error"]) == (
                "pending",
                1,
                "bridge_restarted",
            )
        finally:
            await second.services.close()


async def _true(value: bool) -> bool:
    return value


async def test_due_tasks_run_by_priority(ami: FakeAmiServer) -> None:
    numbers = {1: "+15550000001", 5: "+15550000005", 3: "+15550000003"}
    for number in numbers.values():
        ami.scripts[number.lstrip("+")] = DialScript(Outcome.BUSY)
    async with aiohttp.ClientSession() as http:
        bridge = await started(task_settings(ami.port, max_concurrent_per_company=1), http)
        try:
            at = rfc3339(time.time() + 3.0)
            for priority, number in numbers.items():
                await create(bridge, to_number=number, priority=priority, scheduled_at=at, max_attempts=1)

            async def all_dialed() -> bool:
                return len(ami.actions("Originate")) == 3

            await eventually(all_dialed, "three dials")
            dialed = [a.get("Channel") for a in ami.actions("Originate")]
            assert dialed == [f"PJSIP/{numbers[p].lstrip('+')}@trunk" for p in (5, 3, 1)]
        finally:
            await bridge.services.close()


async def test_task_calls_are_bounded_per_company(ami: FakeAmiServer) -> None:
    async with aiohttp.ClientSession() as http:
        bridge = await started(task_settings(ami.port, max_concurrent_per_company=2), http)
        try:
            peers: list[asyncio.Task[CallSummary]] = []
            answer_with_peer(ami, bridge, peers)
            acme = [await create(bridge, to_number=f"+1555000010{i}") for i in range(3)]

            async def two_dialing() -> bool:
                tasks = [await task_of(bridge, t["id"]) for t in acme]
                return [t["status"] for t in tasks].count("in_progress") == 2

            await eventually(two_dialing, "two task calls")
            # Another company is not held back by acme's bound.
            globex = await create(bridge, key=GLOBEX_KEY, from_number=GLOBEX_PHONE, max_attempts=1)
            await eventually(lambda: _true(len(ami.actions("Originate")) == 3), "globex's dial")
            assert ami.actions("Originate")[2].get("Channel") != ""
            await asyncio.sleep(1.0)  # ten polls: acme's third task still waits
            statuses = sorted([(await task_of(bridge, t["id"]))["status"] for t in acme])
            assert statuses == ["in_progress", "in_progress", "pending"]
            now = {t["id"]: (await task_of(bridge, t["id"]))["status"] for t in acme}
            running = [task_id for task_id, status in now.items() if status == "in_progress"]
            (waiting,) = [task_id for task_id, status in now.items() if status == "pending"]
            await end_when_active(bridge, running[0])
            await wait_task(bridge, waiting, status="in_progress")
            for task_id in (running[1], waiting):
                await end_when_active(bridge, task_id)
            status, reply = await bridge.call("GET", f"/api/tasks/{globex['id']}", key=GLOBEX_KEY)
            assert status == 200, reply
            await end_when_active_as(bridge, globex["id"], GLOBEX_KEY)
        finally:
            await bridge.services.close()
            await asyncio.gather(*peers, return_exceptions=True)


async def test_execute_reset_patch_and_delete_follow_the_task_state(
    ami: FakeAmiServer, bridge: Bridge
) -> None:
    later = rfc3339(time.time() + 3600)
    # PATCH and DELETE of a pending task.
    task = await create(bridge, scheduled_at=later)
    status, reply = await bridge.call("PATCH", f"/api/tasks/{task['id']}", json={"priority": 7})
    assert (status, reply["data"]["task"]["priority"]) == (200, 7), reply
    edit = {
        "context_data": {"name": "Ana"},
        "call_objective": "Call {{crm.name}}",
        "retry_on": ["failed"],
        "webhook_events": ["call_completed"],
        "scheduled_at": "2200-01-01T00:00:00Z",
        "retry_delay_seconds": 60,
    }
    status, reply = await bridge.call("PATCH", f"/api/tasks/{task['id']}", json=edit)
    assert status == 200, reply
    edited = reply["data"]["task"]
    assert {name: edited[name] for name in edit} == {**edit, "scheduled_at": "2200-01-01T00:00:00.000Z"}
    assert edited["priority"] == 7
    status, reply = await bridge.call(
        "PATCH", f"/api/tasks/{task['id']}", json={"call_objective": "Call {{crm.nobody}}"}
    )
    assert (status, reply["code"]) == (400, "unknown_placeholder")
    status, reply = await bridge.call(
        "PATCH", f"/api/tasks/{task['id']}", json={"from_number": "+34999999999"}
    )
    assert (status, reply["code"]) == (403, "from_not_allowed")
    status, reply = await bridge.call("DELETE", f"/api/tasks/{task['id']}")
    assert (status, reply["data"]) == (200, {"id": task["id"], "deleted": True})
    status, reply = await bridge.call("GET", f"/api/tasks/{task['id']}")
    assert (status, reply["code"]) == (404, "unknown_task")
    # Execute runs a task due in an hour now; a failed one refuses edits and is reset.
    ami.scripts[CALLEE.lstrip("+")] = DialScript(Outcome.BUSY)
    task = await create(bridge, scheduled_at=later, max_attempts=1)
    status, reply = await bridge.call("POST", f"/api/tasks/{task['id']}/execute")
    assert status == 200, reply
    assert reply["data"]["task"]["attempts"] == 1
    failed = await wait_task(bridge, task["id"], status="failed")
    assert failed["last_error"] == "busy"
    for method, path, body in (
        ("PATCH", "", {"priority": 1}),
        ("POST", "/execute", None),
    ):
        status, reply = await bridge.call(method, f"/api/tasks/{task['id']}{path}", json=body)
        assert (status, reply["code"]) == (409, "task_not_pending"), (method, path)
    status, reply = await bridge.call("POST", f"/api/tasks/{task['id']}/reset")
    assert status == 200, reply
    assert (reply["data"]["task"]["status"], reply["data"]["task"]["attempts"]) == ("pending", 0)
    assert reply["data"]["task"]["last_error"] is None
    status, reply = await bridge.call("POST", f"/api/tasks/{task['id']}/reset")
    assert (status, reply["code"]) == (409, "task_not_finished")
    # A task in conversation is neither deleted nor edited.
    del ami.scripts[CALLEE.lstrip("+")]
    peers: list[asyncio.Task[CallSummary]] = []
    answer_with_peer(ami, bridge, peers)
    status, reply = await bridge.call("POST", f"/api/tasks/{task['id']}/execute")
    assert status == 200, reply
    calling = await wait_task(bridge, task["id"], status="in_progress")
    status, reply = await bridge.call("DELETE", f"/api/tasks/{task['id']}")
    assert (status, reply["code"]) == (409, "task_in_progress")
    status, reply = await bridge.call("PATCH", f"/api/tasks/{task['id']}", json={"priority": 1})
    assert (status, reply["code"]) == (409, "task_not_pending")
    await end_when_active(bridge, calling["id"])
    await wait_task(bridge, task["id"], status="completed")
    status, reply = await bridge.call("GET", "/api/tasks?status=completed")
    assert [t["id"] for t in reply["data"]["tasks"]] == [task["id"]]
    assert reply["data"]["pagination"] == {"total": 1, "limit": 50, "offset": 0}
    await asyncio.gather(*peers, return_exceptions=True)


async def test_another_companys_task_is_not_found(bridge: Bridge) -> None:
    task = await create(bridge, scheduled_at=rfc3339(time.time() + 3600))
    routes = [
        ("GET", "", None),
        ("PATCH", "", {"priority": 1}),
        ("DELETE", "", None),
        ("POST", "/execute", None),
        ("POST", "/reset", None),
    ]
    for method, suffix, body in routes:
        status, reply = await bridge.call(
            method, f"/api/tasks/{task['id']}{suffix}", key=GLOBEX_KEY, json=body
        )
        assert (status, reply["code"]) == (404, "unknown_task"), (method, suffix, reply)
    status, reply = await bridge.call("GET", "/api/tasks", key=GLOBEX_KEY)
    assert reply["data"]["tasks"] == []
    assert (await task_of(bridge, task["id"]))["status"] == "pending"  # untouched


async def test_task_requests_are_validated(bridge: Bridge) -> None:
    cases = [
        ({"to_number": CALLEE, "call_objective": "x", "from_number": GLOBEX_PHONE}, 403, "from_not_allowed"),
        ({"to_number": "555-1234", "call_objective": "x"}, 400, "validation_error"),
        ({"to_number": CALLEE}, 400, "validation_error"),
        ({"to_number": CALLEE, "call_objective": "x", "retry_on": ["voicemail"]}, 400, "validation_error"),
        ({"to_number": CALLEE, "call_objective": "x", "scheduled_at": "tomorrow"}, 400, "validation_error"),
        ({"to_number": CALLEE, "call_objective": "x", "priority": "1"}, 400, "validation_error"),
        ({"to_number": CALLEE, "call_objective": "Hi {{crm.nobody}}"}, 400, "unknown_placeholder"),
    ]
    for body, status, code in cases:
        got, reply = await bridge.call("POST", "/api/tasks", json=body)
        assert (got, reply["code"]) == (status, code), (body, reply)
    got, reply = await bridge.call("GET", "/api/tasks?status=done")
    assert (got, reply["code"]) == (400, "validation_error")
    # An agent that does not exist when the task dials fails it, without a retry (the request is wrong).
    task = await create(bridge, agent_id="nobody", max_attempts=3)
    failed = await wait_task(bridge, task["id"], status="failed")
    assert (failed["attempts"], failed["last_error"], failed["last_call_id"]) == (1, "unknown_agent", None)
