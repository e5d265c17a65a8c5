"""Three `bridge serve` processes on one Redis and one PostgreSQL behave as one bridge.

A webhook on node A and the media socket on node B make one call; control through node C reaches it;
kill -9 of a call's node fails its calls once, by one survivor; the fleet's caps hold under a burst
spread over the nodes; a draining node refuses while the others take calls. The model is the strict
fake OpenAI Realtime server, Asterisk's control side the fake AMI, both in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.keys import hash_key
from bridge.simulate import SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import PeerRecord
from tests.fakes.ami_server import DialScript, FakeAmiServer, Outcome
from tests.fakes.openai_realtime import FakeRealtimeServer, Script
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, GLOBEX_PHONE, free_port, serving
from tests.integration.test_crash_recovery import Daemon
from tests.integration.test_process import wait_until_up
from tests.services_redis import RedisDb

pytestmark = pytest.mark.slow

ACME_KEY = "acme-fleet-key"
GLOBEX_KEY = "globex-fleet-key"
AMI_SECRET = "ami-fleet-s3cret"
ADMIN_KEY = "admin-fleet-key-0123456789"
MODEL_KEY = "sk-fleet-test"
CALLER_CHANNEL = "PJSIP/carrier-00000077"
HEARTBEAT_S = 0.3
TTL_S = 2.0
WAIT_S = 30.0  # a bound for "eventually" on a loaded 2-core machine, never a speed claim


def node_config(
    path: Path,
    *,
    node_id: str,
    port: int,
    redis_url: str,
    store_url: str,
    model_url: str,
    ami_port: int,
    fleet_max_calls: int = 0,
    acme_cap: int = 0,
    drain_seconds: float = 2.0,
    webhook_url: str = "",
) -> Path:
    webhooks = (
        f'[companies.webhooks]\nurl = "{webhook_url}"\nsecret = "whsec-fleet-0123456789abcdef"\n'
        'events = ["call_started", "call_completed", "call_failed"]\n'
        if webhook_url
        else ""
    )
    path.write_text(
        f'[server]\nhost = "127.0.0.1"\nport = {port}\ndrain_seconds = {drain_seconds}\n'
        f'[connector]\napi_keys = ["{hash_key(CONNECTOR_KEY)}"]\n'
        "[audiosocket]\nenabled = false\n"
        f'[storage]\nurl = "{store_url}"\ncheckpoint_seconds = 0.5\n'
        '[logging]\nformat = "json"\n'
        f'[cluster]\nredis_url = "{redis_url}"\nnode_id = "{node_id}"\nmax_calls = {fleet_max_calls}\n'
        f"heartbeat_seconds = {HEARTBEAT_S}\nnode_ttl_seconds = {TTL_S}\n"
        '[asterisk]\ncontrol = "ami"\n'
        f'[asterisk.ami]\nhost = "127.0.0.1"\nport = {ami_port}\nusername = "bridge"\n'
        f'secret = "{AMI_SECRET}"\n'
        f'[admin]\napi_keys = ["{hash_key(ADMIN_KEY)}"]\n'
        f"[tasks]\npoll_seconds = 0.2\n"
        '[asterisk.originate]\nendpoint = "PJSIP/{to}@trunk"\ntimeout_seconds = 5\n'
        f'[providers.openai]\napi_key = "{MODEL_KEY}"\nurl = "{model_url}"\nmodel = "gpt-realtime"\n'
        f'[[companies]]\nid = "acme"\nphones = ["{ACME_PHONE}"]\napi_keys = ["{hash_key(ACME_KEY)}"]\n'
        '[companies.agent]\nprovider = "openai"\ngreeting = "Hello, Acme here."\n'
        'instructions = "You are the receptionist."\n'
        f"[companies.limits]\nmax_live_calls = {acme_cap}\n"
        f"{webhooks}"
        f'[[companies]]\nid = "globex"\nphones = ["{GLOBEX_PHONE}"]\napi_keys = ["{hash_key(GLOBEX_KEY)}"]\n'
        '[companies.agent]\nprovider = "openai"\n'
    )
    return path


class Node(Daemon):
    """One `bridge serve` of the fleet, by name."""

    def __init__(self, name: str, config: Path, port: int, log: Path, env: dict[str, str]) -> None:
        super().__init__(config, port, log, env)
        self.name = name


class Fleet:
    def __init__(self, tmp: Path, redis: RedisDb, store_url: str, model: str, ami: int) -> None:
        self.tmp = tmp
        self.redis = redis
        self.store_url = store_url
        self.model = model
        self.ami = ami
        self.nodes: list[Node] = []
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "NOTIFY_"))}

    async def start(self, *names: str, **options: Any) -> list[Node]:
        started = []
        for name in names:
            port = free_port()
            config = node_config(
                self.tmp / f"{name}.toml",
                node_id=name,
                port=port,
                redis_url=self.redis.url,
                store_url=self.store_url,
                model_url=self.model,
                ami_port=self.ami,
                **options,
            )
            node = Node(name, config, port, self.tmp / f"{name}.log", self.env)
            self.nodes.append(node)
            started.append(node)
        for node in started:
            await wait_until_up(node.port, node.process, timeout=WAIT_S)
        async with aiohttp.ClientSession() as http:
            for node in started:  # control needs each node's AMI login
                await until(partial(asterisk_ok, http, node), f"{node.name}'s AMI login")
        return started

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(timeout=30)
            node.kill()


async def until(check: Callable[[], Awaitable[Any]], what: str, within: float = WAIT_S) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def asterisk_ok(http: aiohttp.ClientSession, node: Node) -> bool:
    async with http.get(node.url + "/health") as reply:
        return bool((await reply.json())["asterisk"] == "ok")


async def api(
    http: aiohttp.ClientSession, node: Node, method: str, path: str, body: Any = None, key: str = ACME_KEY
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"}
    async with http.request(method, node.url + path, json=body, headers=headers) as reply:
        return reply.status, await reply.json()


async def connect(http: aiohttp.ClientSession, node: Node, call_id: str, called: str = ACME_PHONE) -> int:
    body = {
        "event": "connect",
        "callId": call_id,
        "callerPhone": "+15551230001",
        "b_number": called,
        "websocketUrl": f"ws://127.0.0.1:{node.port}/media/{call_id}",
    }
    async with http.post(
        node.url + "/api/voip/webhook", json=body, headers={"X-Connector-Api-Key": CONNECTOR_KEY}
    ) as reply:
        return reply.status


async def call_status(http: aiohttp.ClientSession, node: Node, call_id: str) -> dict[str, Any]:
    status, body = await api(http, node, "GET", f"/api/calls/{call_id}")
    return body["data"]["call"] if status == 200 else {}


def media_call(node: Node, call_id: str, **overrides: Any) -> SimulatedCallOptions:
    base: dict[str, Any] = {
        "url": node.url,
        "connector_key": CONNECTOR_KEY,
        "send_webhook": False,
        "ws_username": "asterisk",
        "ws_password": CONNECTOR_KEY,
        "call_id": call_id,
        "called": ACME_PHONE,
        "seconds": 60,
        "wait_for_bridge_hangup": True,
        "max_seconds": 90,
        "expect_audio": False,
    }
    return SimulatedCallOptions(**(base | overrides))


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({"bridge": AMI_SECRET}) as fake:
        yield fake


@pytest.fixture
async def model() -> AsyncIterator[FakeRealtimeServer]:
    server = FakeRealtimeServer(api_key=MODEL_KEY, script=Script(greeting_reply_ms=300))
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def fleet(
    tmp_path: Path, redis_db: RedisDb, postgres_url: str, model: FakeRealtimeServer, ami: FakeAmiServer
) -> Iterator[Fleet]:
    running = Fleet(tmp_path, redis_db, postgres_url, model.url, ami.port)
    try:
        yield running
    finally:
        running.close()


async def test_webhook_on_a_media_on_b_control_through_c(fleet: Fleet, ami: FakeAmiServer) -> None:
    a, b, c = await fleet.start("node-a", "node-b", "node-c")
    call_id = "fleet-call-1"
    records: asyncio.Queue[PeerRecord] = asyncio.Queue()
    async with aiohttp.ClientSession() as http:
        assert await connect(http, a, call_id) == 200
        call = asyncio.create_task(run_simulated_call(media_call(b, call_id, records=records)))
        while (record := await asyncio.wait_for(records.get(), WAIT_S)).name != "MEDIA_START":
            pass
        media = json.loads(record.detail)["channel"]

        async def active_seen_from_c() -> bool:
            return (await call_status(http, c, call_id)).get("status") == "active"

        await until(active_seen_from_c, "the call to be active, as node C sees it")
        status, body = await api(http, c, "GET", "/api/admin/calls/live", key=ADMIN_KEY)
        assert status == 200, body
        assert [(call["call_id"], call["state"]) for call in body["data"]["calls"]] == [(call_id, "active")]
        ami.add_channel(
            CALLER_CHANNEL, uniqueid=call_id, variables={"_BRIDGE_CALL_ID": call_id}, bridge_id="b"
        )
        ami.add_channel(
            media, variables={"BRIDGE_CALL_ID": call_id, "BRIDGEPEER": CALLER_CHANNEL}, bridge_id="b"
        )

        status, body = await api(http, c, "POST", f"/api/calls/{call_id}/dtmf", {"digits": "42"})
        assert status == 200, body
        assert [a.get("Digit") for a in ami.actions("PlayDTMF")] == ["4", "2"]
        status, body = await api(http, c, "POST", f"/api/calls/{call_id}/say", {"text": "One moment."})
        assert status == 200, body
        # Another company cannot reach it through any node: 404, as an unknown id.
        status, body = await api(http, c, "POST", f"/api/calls/{call_id}/end", key=GLOBEX_KEY)
        assert (status, body["code"]) == (404, "unknown_call")
        status, body = await api(http, c, "POST", f"/api/calls/{call_id}/transfer", {"to": "200"})
        assert status == 200, body
        [redirect] = ami.actions("Redirect")
        assert (redirect.get("Channel"), redirect.get("Exten")) == (CALLER_CHANNEL, "200")
        summary = await asyncio.wait_for(call, WAIT_S)
        assert summary.hangup_by == "bridge"

        async def over() -> dict[str, Any] | None:
            record = await call_status(http, a, call_id)
            return record if record.get("status") == "ended" else None

        final = await until(over, "the call's final record")
        assert final["transferred_to"] == "200"
        assert final["frames_in"] > 0

    # B ran the call and ended it once; A let its pending call go without a record or an end of its own.
    assert [e["call_id"] for e in b.events("call_ended")] == [call_id]
    assert a.events("call_ended") == []
    assert [e["call_id"] for e in a.events("call_handed_off")] == [call_id]
    assert [e["call_id"] for e in b.events("call_taken_over")] == [call_id]
    assert c.events("call_ended") == []


async def test_kill_9_of_the_owner_fails_its_calls_once_by_one_survivor(fleet: Fleet) -> None:
    a, b, c = await fleet.start("node-a", "node-b", "node-c")
    async with aiohttp.ClientSession() as http:
        doomed = asyncio.create_task(run_simulated_call(media_call(a, "doomed-1")))
        safe = asyncio.create_task(run_simulated_call(media_call(b, "safe-1")))
        for node, call_id in ((a, "doomed-1"), (b, "safe-1")):

            async def active(node: Node = node, call_id: str = call_id) -> bool:
                return (await call_status(http, node, call_id)).get("status") == "active"

            await until(active, f"{call_id} to be active")
        killed_at = time.monotonic()
        a.kill()

        async def lost() -> dict[str, Any] | None:
            record = await call_status(http, c, "doomed-1")
            return record if record.get("status") == "failed" else None

        record = await until(lost, "the lost node's call to fail")
        noticed_after = time.monotonic() - killed_at
        assert record["error_code"] == "node_lost"
        assert noticed_after < TTL_S + WAIT_S
        assert (await call_status(http, c, "safe-1"))["status"] == "active"  # another node's call lives on

        async def fleet_sees_a_gone() -> bool:
            async with http.get(b.url + "/health/fleet") as reply:
                body = await reply.json()
            return [n["node_id"] for n in body["nodes"]] == ["node-b", "node-c"]

        await until(fleet_sees_a_gone, "node-a to leave the fleet")
        await asyncio.sleep(3 * HEARTBEAT_S)  # a second survivor's beat would have run by now
        status, body = await api(http, b, "POST", "/api/calls/safe-1/end")
        assert status == 200, body
        await asyncio.wait_for(safe, WAIT_S)
        doomed.cancel()
        with contextlib.suppress(BaseException):
            await doomed

    marks = [(n.name, e["calls"]) for n in (b, c) for e in n.events("node_lost_calls_failed")]
    assert marks in ([("node-b", 1)], [("node-c", 1)])


async def test_fleet_and_company_caps_hold_under_a_burst_over_the_nodes(fleet: Fleet) -> None:
    nodes = await fleet.start("node-a", "node-b", "node-c", fleet_max_calls=5, acme_cap=3)
    async with aiohttp.ClientSession() as http:
        burst = [
            connect(http, nodes[i % 3], f"{company}-{i}", phone)
            for i in range(8)
            for company, phone in (("acme", ACME_PHONE), ("globex", GLOBEX_PHONE))
        ]
        statuses = await asyncio.gather(*burst)
        accepted = [s for s in statuses if s == 200]
        acme = [s for s, i in zip(statuses, range(16), strict=True) if i % 2 == 0]
        assert len(accepted) == 5  # the fleet-wide cap
        assert acme.count(200) <= 3  # acme's own cap, across the nodes
        assert set(statuses) <= {200, 429, 503}
        async with http.get(nodes[0].url + "/health/fleet") as reply:
            health = await reply.json()
        assert (health["fleet"]["live_calls"], health["fleet"]["fleet_max_calls"]) == (5, 5)

        async def beats_count_them() -> bool:  # each node's own count arrives with its next heartbeat
            async with http.get(nodes[1].url + "/health/fleet") as reply:
                body = await reply.json()
            return sum(int(n["live_calls"]) for n in body["nodes"]) == 5

        await until(beats_count_them, "the nodes' heartbeats to count the burst's calls")


async def test_a_draining_node_refuses_while_the_others_take_calls(fleet: Fleet) -> None:
    a, b = await fleet.start("node-a", "node-b", drain_seconds=20)
    async with aiohttp.ClientSession() as http:
        live = asyncio.create_task(run_simulated_call(media_call(a, "keeps-a-draining")))

        async def active() -> bool:
            return (await call_status(http, a, "keeps-a-draining")).get("status") == "active"

        await until(active, "a live call on node-a")
        a.process.terminate()  # SIGTERM: drain, the live call may finish

        async def refused_by_a() -> bool:
            return await connect(http, a, f"drain-{time.monotonic_ns()}") == 503

        await until(refused_by_a, "node-a to refuse new calls")
        assert await connect(http, b, "taken-by-b") == 200

        async def fleet_shows_a_draining() -> bool:
            async with http.get(b.url + "/health/fleet") as reply:
                body = await reply.json()
            return any(n["node_id"] == "node-a" and n["draining"] for n in body["nodes"])

        await until(fleet_shows_a_draining, "node-a draining in /health/fleet")
        live.cancel()
        with contextlib.suppress(BaseException):
            await live
    assert re.search(r"draining", a.log.read_text())


async def test_admin_changes_and_top_ups_on_one_node_apply_on_the_others(fleet: Fleet) -> None:
    a, b = await fleet.start("node-a", "node-b")
    async with aiohttp.ClientSession() as http:
        new_company = {"id": "initech", "name": "Initech", "phones": ["+15557770000"], "agent": {}}
        status, body = await api(http, a, "POST", "/api/admin/companies", new_company, key=ADMIN_KEY)
        assert status == 201, body
        status, body = await api(
            http, a, "POST", "/api/admin/companies/initech/keys", {"name": "crm"}, ADMIN_KEY
        )
        assert status == 201, body
        key, key_id = body["data"]["key"], body["data"]["key_info"]["id"]

        async def works_on_b() -> bool:
            return (await api(http, b, "GET", "/api/phones", key=key))[0] == 200

        await until(works_on_b, "node-a's new key to work on node-b", within=TTL_S + 5)
        status, body = await api(
            http, a, "DELETE", f"/api/admin/companies/initech/keys/{key_id}", None, ADMIN_KEY
        )
        assert status in (200, 204), body

        async def revoked_on_b() -> bool:
            return (await api(http, b, "GET", "/api/phones", key=key))[0] == 401

        await until(revoked_on_b, "the revocation to reach node-b", within=TTL_S + 5)


async def test_a_task_and_its_webhook_run_once_with_three_nodes_competing(
    fleet: Fleet, ami: FakeAmiServer
) -> None:
    deliveries: list[tuple[str, str]] = []

    async def receive(request: web.Request) -> web.Response:
        body = await request.json()
        deliveries.append((request.headers["X-Bridge-Delivery"], body["type"]))
        return web.json_response({"ok": True})

    receiver = web.Application()
    receiver.router.add_post("/hooks", receive)
    async with serving(receiver) as port:
        nodes = await fleet.start("node-a", "node-b", "node-c", webhook_url=f"http://127.0.0.1:{port}/hooks")
        async with aiohttp.ClientSession() as http:
            ami.default_script = DialScript(Outcome.BUSY)  # the callee is busy: a failed call
            task = {
                "to_number": "+15550001111",
                "from_number": ACME_PHONE,
                "call_objective": "Remind",
                "max_attempts": 1,
            }
            status, body = await api(http, nodes[1], "POST", "/api/tasks", task)
            assert status in (200, 201), body
            task_id = body["data"]["task"]["id"]

            async def settled() -> dict[str, Any] | None:
                _, body = await api(http, nodes[2], "GET", f"/api/tasks/{task_id}")
                found: dict[str, Any] = body["data"]["task"]
                return found if found["status"] in ("completed", "failed") else None

            await until(settled, "the task to be dialed and settled")
            await until(lambda: asyncio.sleep(0, bool(deliveries)), "the call's webhook delivery")
            await asyncio.sleep(3 * HEARTBEAT_S + 1.0)  # time for a second node to deliver it again
    assert len(ami.actions("Originate")) == 1  # dialed once, by one node
    ids = [delivery_id for delivery_id, _ in deliveries]
    assert len(ids) == len(set(ids))  # each delivery POSTed once
    assert len([kind for _, kind in deliveries if kind == "call_failed"]) == 1


async def test_a_task_whose_node_was_lost_is_settled_and_retried_by_a_survivor(
    fleet: Fleet, ami: FakeAmiServer
) -> None:
    ami.default_script = DialScript(Outcome.SILENT)  # rings for ever: the task stays in progress
    [a] = await fleet.start("node-a")
    async with aiohttp.ClientSession() as http:
        task = {
            "to_number": "+15550002222",
            "from_number": ACME_PHONE,
            "call_objective": "Remind",
            "max_attempts": 2,
            "retry_delay_seconds": 0,
        }
        status, body = await api(http, a, "POST", "/api/tasks", task)
        assert status == 201, body
        task_id = body["data"]["task"]["id"]

        async def dialed() -> bool:
            return len(ami.actions("Originate")) == 1

        await until(dialed, "node-a to dial the task")
        [b] = await fleet.start("node-b")
        a.kill()

        async def redialed_by_b() -> dict[str, Any] | None:
            _, body = await api(http, b, "GET", f"/api/tasks/{task_id}")
            found: dict[str, Any] = body["data"]["task"]
            return found if found["attempts"] == 2 else None

        # node-b fails the lost node's call (node_lost), settles the task from its record, and dials again.
        after = await until(redialed_by_b, "node-b to settle and retry the task", within=2 * WAIT_S)
        assert after["status"] == "in_progress"
        assert len(ami.actions("Originate")) == 2
        [lost] = [e for e in b.events("node_lost_calls_failed")]
        assert lost["calls"] == 1
