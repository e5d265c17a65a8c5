"""The fake Asterisk against a minimal stand-in bridge written here (aiohttp WebSocket + asyncio TCP).

Real sockets on loopback. Every wait is bounded by a generous guard timeout; assertions are on
protocol facts (which messages, in which order, how many frames), never on wall-clock durations.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from bridge.simulate import CallSummary, SimulatedCallOptions, run_simulated_call

GUARD_S = 15.0
FRAME16 = 640


@dataclass
class WsSession:
    ws: web.WebSocketResponse
    request: web.Request
    first: tuple[WSMsgType, Any] | None = None
    texts: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    binaries: list[bytes] = field(default_factory=list)
    binary_seen: asyncio.Event = field(default_factory=asyncio.Event)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    peer_close_code: int | None = None
    echo: bool = False

    async def send(self, **command: str) -> None:
        await self.ws.send_str(json.dumps(command))

    async def next_text(self) -> str:
        return await asyncio.wait_for(self.texts.get(), GUARD_S)

    async def expect(self, event: str) -> dict[str, Any]:
        """The next event, which must be `event` (JSON control)."""
        msg: dict[str, Any] = json.loads(await self.next_text())
        assert msg["event"] == event, msg
        return msg

    async def frames(self, n: int) -> None:
        while len(self.binaries) < n:
            self.binary_seen.clear()
            await asyncio.wait_for(self.binary_seen.wait(), GUARD_S)


Script = Callable[[WsSession], Awaitable[None]]
AsScript = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class FakeBridge:
    url: str = ""
    as_port: int = 0
    webhooks: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    sessions: list[WsSession] = field(default_factory=list)


@asynccontextmanager
async def fake_bridge(
    script: Script | None = None, as_script: AsScript | None = None
) -> AsyncIterator[FakeBridge]:
    bridge = FakeBridge()

    async def webhook(request: web.Request) -> web.Response:
        bridge.webhooks.append((dict(request.headers), await request.json()))
        return web.json_response({"success": True, "data": {}})

    async def media(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("media",), compress=False)
        await ws.prepare(request)
        session = WsSession(ws, request)
        bridge.sessions.append(session)
        reader = asyncio.create_task(_read_ws(session))
        if script is not None:
            await script(session)
        await asyncio.wait_for(reader, GUARD_S)
        return ws

    app = web.Application()
    app.router.add_post("/api/voip/webhook", webhook)
    app.router.add_get("/api/real-time-voice-stream", media)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    bridge.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    tcp = await asyncio.start_server(as_script or _as_idle, "127.0.0.1", 0)
    bridge.as_port = tcp.sockets[0].getsockname()[1]
    try:
        yield bridge
    finally:
        tcp.close()
        await runner.cleanup()


async def _read_ws(s: WsSession) -> None:
    async for msg in s.ws:
        if s.first is None:
            s.first = (msg.type, msg.data)
            continue
        if msg.type == WSMsgType.TEXT:
            s.texts.put_nowait(msg.data)
        elif msg.type == WSMsgType.BINARY:
            s.binaries.append(msg.data)
            s.binary_seen.set()
            if s.echo:
                await s.ws.send_bytes(msg.data)
    s.peer_close_code = s.ws.close_code
    s.closed.set()


async def _as_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.read()
    writer.close()


def opts(bridge: FakeBridge, **kw: Any) -> SimulatedCallOptions:
    kw.setdefault("seconds", 30.0)
    return SimulatedCallOptions(url=bridge.url, connector_key="ck", **kw)


async def call(o: SimulatedCallOptions) -> CallSummary:
    return await asyncio.wait_for(run_simulated_call(o), GUARD_S * 2)


@pytest.mark.parametrize(
    ("fmt", "size"), [("ulaw", 160), ("alaw", 160), ("slin", 320), ("slin16", 640), ("slin24", 960)]
)
async def test_media_start_comes_first_with_asterisk_fields_then_hangup_closes_1000(
    fmt: str, size: int
) -> None:
    async def script(s: WsSession) -> None:
        await s.frames(5)
        await s.send(command="GET_STATUS")
        got = sorted(
            [json.loads(await s.next_text()), json.loads(await s.next_text())], key=lambda m: m["event"]
        )
        assert [m["event"] for m in got] == ["DTMF_END", "STATUS"]
        assert got[0]["digit"] == "7"
        assert got[1]["queue_length"] == 0
        await s.send(command="HANGUP")
        await asyncio.wait_for(s.closed.wait(), GUARD_S)

    async with fake_bridge(script) as b:
        summary = await call(
            opts(b, format=fmt, call_id="1795212352.0", dtmf=((0.2, "7"),), expect_audio=False)
        )
    (headers, body), s = b.webhooks[0], b.sessions[0]
    assert headers["x-connector-api-key"] == "ck"
    assert body == {
        "callId": "1795212352.0",
        "callerPhone": "+15551230001",
        "b_number": "+34987654321",
        "event": "connect",
        "websocketUrl": b.url.replace("http", "ws") + "/api/real-time-voice-stream",
    }
    assert dict(s.request.query) == {
        "callId": "1795212352.0",
        "aNumberE164": "15551230001",
        "bNumberE164": "34987654321",
    }
    assert s.request.headers["Sec-WebSocket-Protocol"] == "media"
    assert "User-Agent" not in s.request.headers
    assert "Sec-WebSocket-Extensions" not in s.request.headers
    assert s.first is not None
    assert s.first[0] == WSMsgType.TEXT
    start = json.loads(s.first[1])
    keys = "event connection_id channel channel_id format optimal_frame_size ptime channel_variables"
    assert list(start) == keys.split()
    assert start["event"] == "MEDIA_START"
    assert re.fullmatch(r"WebSocket/bridge_media/0x[0-9a-f]{12}", start["channel"])
    assert re.fullmatch(r"\d{10}\.\d+", start["channel_id"])
    assert (start["format"], start["optimal_frame_size"], start["ptime"]) == (fmt, size, 20)
    assert start["channel_variables"]["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == str(size)
    assert {len(f) for f in s.binaries} == {size}
    assert s.peer_close_code == 1000
    assert summary.hangup_by == "bridge"
    assert summary.close_code == 1000
    assert summary.dtmf_sent == "7"
    assert summary.ok, summary.errors


_PLAIN_START = r"MEDIA_START connection_id:bridge_media channel:WebSocket/bridge_media/0x[0-9a-f]+ "
_PLAIN_TAIL = r"format:ulaw optimal_frame_size:160 ptime:20"


@pytest.mark.parametrize(
    ("variant", "pattern"),
    [
        ("22.6", _PLAIN_START + _PLAIN_TAIL),
        ("22.7", _PLAIN_START + r"channel_id:\d+\.\d+ " + _PLAIN_TAIL),
        ("22.10", _PLAIN_START + r"channel_id:\d+\.\d+ " + _PLAIN_TAIL),
    ],
)
async def test_plain_text_media_start_and_status(variant: str, pattern: str) -> None:
    async def script(s: WsSession) -> None:
        await s.ws.send_str("GET_STATUS")
        status = await s.next_text()
        assert status.startswith("STATUS channel_id:" if variant != "22.6" else "STATUS queue_length:")
        await s.ws.send_str("HANGUP")

    async with fake_bridge(script) as b:
        summary = await call(
            opts(b, format="ulaw", control="plain", plain_variant=variant, expect_audio=False)
        )
    first = b.sessions[0].first
    assert first is not None
    assert first[0] == WSMsgType.TEXT
    assert re.fullmatch(pattern, first[1])
    assert summary.hangup_by == "bridge"


async def test_partial_frames_are_dropped_outside_buffering_and_joined_inside() -> None:
    async def script(s: WsSession) -> None:
        await s.send(command="PAUSE_MEDIA")
        await s.ws.send_bytes(b"\x01" * 1000)  # 640 queued, 360 dropped
        await s.send(command="START_MEDIA_BUFFERING")
        for _ in range(3):
            await s.ws.send_bytes(b"\x02" * 1000)
        await s.send(command="GET_STATUS")
        status = await s.expect("STATUS")
        assert (status["queue_length"], status["bulk_media"], status["media_paused"]) == (5, True, True)
        await s.send(command="STOP_MEDIA_BUFFERING", correlation_id="buf-1")
        await s.send(command="CONTINUE_MEDIA")
        assert (await s.expect("MEDIA_BUFFERING_COMPLETED"))["correlation_id"] == "buf-1"
        await s.send(command="HANGUP")

    async with fake_bridge(script) as b:
        summary = await call(opts(b))
    assert summary.error_counts == {"partial_frame_dropped": 1}
    assert [p.size for p in summary.played] == [FRAME16] * 5 + [440]
    assert summary.buffering_completed == ["buf-1"]


async def test_burst_of_1050_frames_xoff_at_900_drops_past_1000_xon_below_800() -> None:
    async def script(s: WsSession) -> None:
        await s.send(command="PAUSE_MEDIA")  # hold playout so the queue depth is exact
        for i in range(1050):
            await s.ws.send_bytes(bytes([i % 256]) * FRAME16)
        await s.expect("MEDIA_XOFF")
        await s.send(command="GET_STATUS")
        status = await s.expect("STATUS")
        assert (status["queue_length"], status["queue_full"]) == (1000, True)
        await s.send(command="CONTINUE_MEDIA")
        await s.expect("MEDIA_XON")
        await s.send(command="GET_STATUS")
        status = await s.expect("STATUS")
        assert 790 <= status["queue_length"] < 800  # a few more ticks may pass before it is read
        assert status["queue_full"] is False
        await s.send(command="FLUSH_MEDIA")
        await s.send(command="HANGUP")

    async with fake_bridge(script) as b:
        summary = await call(opts(b, speed=4.0))
    assert summary.error_counts == {"queue_full_drop": 50}
    assert (summary.xoff_count, summary.xon_count, summary.max_queue_depth) == (1, 1, 1000)
    marks = {r.name: r.queue_length for r in summary.records if r.kind == "event"}
    assert marks["MEDIA_XOFF"] == 900
    assert marks["MEDIA_XON"] == 799
    assert summary.barge_ins == 1
    assert summary.frames_flushed + summary.frames_received == 1000
    assert [p.tick for p in summary.played] == list(
        range(summary.played[0].tick, summary.played[-1].tick + 1)
    )


async def test_marks_are_acknowledged_in_order_and_flushed_marks_never() -> None:
    async def script(s: WsSession) -> None:
        await s.send(command="PAUSE_MEDIA")
        for cid in ("m1", "m2"):
            await s.ws.send_bytes(b"\x00" * FRAME16 * 10)
            await s.send(command="MARK_MEDIA", correlation_id=cid)
        await s.send(command="CONTINUE_MEDIA")
        assert (await s.expect("MEDIA_MARK_PROCESSED"))["correlation_id"] == "m1"
        assert (await s.expect("MEDIA_MARK_PROCESSED"))["correlation_id"] == "m2"
        await s.send(command="PAUSE_MEDIA")
        await s.ws.send_bytes(b"\x00" * FRAME16 * 5)
        await s.send(command="MARK_MEDIA", correlation_id="m3")
        await s.send(command="FLUSH_MEDIA")
        await s.send(command="CONTINUE_MEDIA")
        await s.send(command="MARK_MEDIA", correlation_id="m4")
        # marks fire in queue order, so had m3 survived the flush it would come before m4
        assert (await s.expect("MEDIA_MARK_PROCESSED"))["correlation_id"] == "m4"
        await s.send(command="HANGUP")

    async with fake_bridge(script) as b:
        summary = await call(opts(b))
    assert summary.marks_processed == ["m1", "m2", "m4"]
    assert summary.marks_flushed == ["m3"]
    depth = {r.detail: r.queue_length for r in summary.records if r.name == "MEDIA_MARK_PROCESSED"}
    assert depth == {"m1": 10, "m2": 0, "m4": 0}  # m1 fired exactly when its 10 frames had played
    assert summary.frames_received == 20


async def test_bad_text_messages_are_counted_and_answered_like_asterisk() -> None:
    async def script(s: WsSession) -> None:
        await s.ws.send_str("{not json")
        assert (await s.expect("ERROR"))["error_text"] == "Unable to parse JSON command"
        await s.send(command="BOGUS_COMMAND")
        await s.send(command="GET_STATUS", correlation_id="x" * 150)  # > 128 bytes: ignored
        await s.send(command="GET_STATUS")
        await s.expect("STATUS")
        await s.send(command="HANGUP")

    async with fake_bridge(script) as b:
        summary = await call(opts(b, expect_audio=False))
    assert summary.error_counts == {"invalid_json": 1, "unknown_command": 1, "text_too_long": 1}
    assert summary.commands["GET_STATUS"] == 1
    assert b.sessions[0].texts.empty()  # no second STATUS, nothing for BOGUS_COMMAND


async def test_oversize_message_closes_1009() -> None:
    async def script(s: WsSession) -> None:
        await s.ws.send_bytes(b"\x00" * 70_000)
        await asyncio.wait_for(s.closed.wait(), GUARD_S)

    async with fake_bridge(script) as b:
        summary = await call(opts(b, expect_audio=False))
    assert b.sessions[0].peer_close_code == 1009
    assert summary.hangup_by == "protocol_error"
    assert summary.error_counts == {"oversize_frame": 1}


async def test_caller_hangs_up_after_seconds_with_close_1000_and_echo_is_played() -> None:
    async def echo(s: WsSession) -> None:
        s.echo = True

    async with fake_bridge(echo) as b:
        summary = await call(opts(b, seconds=0.5))
    assert len(b.sessions[0].binaries) == summary.frames_sent == 25
    assert b.sessions[0].peer_close_code == 1000
    assert summary.hangup_by == "caller"
    assert summary.ok, summary.errors
    assert 1 <= summary.frames_received <= 24  # an echo of frame k plays at tick k + 1 at the earliest
    assert summary.first_audio_latency_ms == summary.played[0].tick * 20 >= 20  # on a tick, after tick 0


async def _as_frames(reader: asyncio.StreamReader, n: int) -> list[tuple[int, bytes]]:
    out = []
    for _ in range(n):
        head = await reader.readexactly(3)
        out.append((head[0], await reader.readexactly(int.from_bytes(head[1:], "big"))))
    return out


async def test_audiosocket_peer_sends_uuid_then_typed_frames_and_ends_on_0x00() -> None:
    call_id = str(uuid.uuid4())
    seen: list[tuple[int, bytes]] = []

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await _as_frames(reader, 20))
        for _ in range(10):  # paced (never faster than real time, whatever the scheduler does)
            writer.write(b"\x12\x02\x80" + b"\x01\x00" * 320)
            await asyncio.sleep(0.02)
        writer.write(b"\x00\x00\x00")
        await writer.drain()
        await reader.read()  # the peer closes at once
        writer.close()

    async with fake_bridge(as_script=server) as b:
        summary = await call(
            opts(b, transport="audiosocket", call_id=call_id, audiosocket_port=b.as_port, dtmf=((0.1, "#"),))
        )
    assert seen[0] == (0x01, uuid.UUID(call_id).bytes)
    audio = [p for k, p in seen[1:] if k != 0x03]
    assert {len(p) for p in audio} == {640}
    assert {k for k, _ in seen[1:]} <= {0x12, 0x03}
    assert (0x03, b"#") in seen
    assert summary.hangup_by == "bridge"
    assert summary.frames_received == 10
    assert summary.ok, summary.errors


async def test_audiosocket_burst_and_bad_type_are_errors() -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _as_frames(reader, 2)
        writer.write((b"\x10\x02\x80" + b"\x00" * 640) * 25)  # 500 ms of audio at once, wrong type too
        writer.write(b"\xff\x00\x00")
        await writer.drain()
        await reader.read()
        writer.close()

    async with fake_bridge(as_script=server) as b:
        summary = await call(opts(b, transport="audiosocket", format="slin16", audiosocket_port=b.as_port))
    assert summary.hangup_by == "protocol_error"
    assert summary.error_counts["bad_message_type"] == 1
    assert summary.error_counts["wrong_audio_type"] == 25
    assert summary.error_counts["burst"] == 1
