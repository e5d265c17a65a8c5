"""The chan_websocket driver against a `websockets` server, which can fragment a message.

Also shows how a test drives the caller live: watch `records`, press keys through `dtmf_queue`,
hang up with `hangup_event`.
"""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.server import ServerConnection, serve
from websockets.typing import Subprotocol

from bridge.simulate import PeerRecord, SimulatedCallOptions, run_simulated_call

GUARD_S = 15.0
FRAME16 = 640


async def test_fragmented_message_is_counted_and_a_test_can_drive_the_caller_live() -> None:
    got: list[str | bytes] = []

    async def handler(ws: ServerConnection) -> None:
        got.append(await ws.recv())  # MEDIA_START
        await ws.send([b"\x00" * FRAME16, b"\x00" * FRAME16])  # one message, two frames
        async for msg in ws:
            if isinstance(msg, str):
                got.append(msg)

    records: asyncio.Queue[PeerRecord] = asyncio.Queue()
    hangup, keys = asyncio.Event(), asyncio.Queue[str]()
    async with serve(
        handler, "127.0.0.1", 0, subprotocols=[Subprotocol("media")], compression=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        o = SimulatedCallOptions(
            url=f"http://127.0.0.1:{port}", send_webhook=False, seconds=30, records=records,
            hangup_event=hangup, dtmf_queue=keys,
        )  # fmt: skip
        running = asyncio.create_task(asyncio.wait_for(run_simulated_call(o), GUARD_S))
        while (rec := await asyncio.wait_for(records.get(), GUARD_S)).name != "first_audio_played":
            pass
        keys.put_nowait("9")
        while (await asyncio.wait_for(records.get(), GUARD_S)).name != "DTMF_END":
            pass
        hangup.set()
        summary = await running
    assert rec.queue_length == 1  # the second frame of the message is still queued
    assert summary.error_counts == {"fragmented_message": 1}
    assert summary.frames_received == 2
    assert summary.dtmf_sent == "9"
    assert json.loads(got[-1]) == {"event": "DTMF_END", "channel_id": summary.channel_id, "digit": "9"}
    assert (summary.hangup_by, summary.close_code) == ("caller", 1000)


async def test_bridge_closing_the_socket_is_its_hangup_and_an_abort_is_an_error() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.recv()
        await ws.send(b"\x00" * FRAME16 * 2)
        await ws.recv()  # a caller frame, so the audio above is queued first
        if ws.request is not None and "callId=abort" in ws.request.path:
            ws.transport.abort()
        else:
            await ws.close(1001, "bye")

    async with serve(
        handler, "127.0.0.1", 0, subprotocols=[Subprotocol("media")], compression=None
    ) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        closed = await run_simulated_call(
            SimulatedCallOptions(url=url, send_webhook=False, expect_audio=False)
        )
        aborted = await run_simulated_call(
            SimulatedCallOptions(url=url, send_webhook=False, expect_audio=False, call_id="abort")
        )
    assert (closed.hangup_by, closed.close_code, closed.close_reason) == ("bridge", 1001, "bye")
    assert closed.ok
    assert closed.frames_queued_at_hangup + closed.frames_received == 2
    assert aborted.hangup_by == "bridge"
    assert aborted.error_counts == {"connection_lost": 1}


async def test_waiting_for_a_bridge_that_never_hangs_up_is_an_error() -> None:
    async def handler(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    async with serve(
        handler, "127.0.0.1", 0, subprotocols=[Subprotocol("media")], compression=None
    ) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        o = SimulatedCallOptions(
            url=url, send_webhook=False, seconds=0.1, wait_for_bridge_hangup=True, max_seconds=0.4
        )
        summary = await asyncio.wait_for(run_simulated_call(o), GUARD_S)
    assert summary.hangup_by == "timeout"
    assert summary.frames_sent == 20  # kept the line open (and sending) until max_seconds, not seconds
    assert summary.error_counts == {"bridge_no_hangup": 1, "no_audio": 1}
