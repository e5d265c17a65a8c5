"""Whole calls over AudioSocket on loopback: the fake Asterisk (asyncio streams) against the real daemon."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest

from bridge.app import Services
from bridge.asterisk.audiosocket import encode_audio, encode_uuid
from bridge.session.state import CallState, EndedBy
from bridge.simulate import SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import AudioSource
from bridge.simulate.summary import ArrivalStats
from tests.helpers import CONNECTOR_KEY, best_correlation, utterances

StartBridge = Callable[..., Any]
CALM_SPEECH = [(0.2, 1.0), (2.0, 2.8), (3.8, 4.6)]


def note_timing(name: str, arrival: ArrivalStats) -> None:
    """Appends the arrival statistics to $BRIDGE_TIMINGS (for the issue notes; off by default)."""
    path = os.environ.get("BRIDGE_TIMINGS")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({name: asdict(arrival)}) + "\n")


def options(services: Services, **overrides: Any) -> SimulatedCallOptions:
    base: dict[str, Any] = {
        "url": f"http://127.0.0.1:{services.http_port}",
        "connector_key": CONNECTOR_KEY,
        "transport": "audiosocket",
        "audiosocket_port": services.audiosocket_port,
        "call_id": str(uuid.uuid4()),
        "called": "+34987654321",
    }
    base.update(overrides)
    return SimulatedCallOptions(**base)


@pytest.mark.parametrize("fmt", ["slin", "slin16", "slin24"])
async def test_echo_call_paced_at_20ms(bridge_factory: StartBridge, fmt: str) -> None:
    services: Services = await bridge_factory(audiosocket={})
    rate = {"slin": 8000, "slin16": 16000, "slin24": 24000}[fmt]
    sent = utterances(rate, CALM_SPEECH)
    summary = await run_simulated_call(
        options(services, format=fmt, audio=AudioSource(pcm=sent, sample_rate=rate), seconds=5.0)
    )
    assert summary.ok, summary.errors
    score, _ = best_correlation(sent, summary.received_stream, rate, max_lag_s=0.1)
    assert score >= 0.9, f"echo correlation {score:.3f}"
    assert summary.first_audio_latency_ms is not None
    assert 180 <= summary.first_audio_latency_ms <= 500
    # Asterisk does not re-time AudioSocket audio: the bridge must deliver one frame per 20 ms.
    assert set(summary.message_sizes) <= {rate // 50 * 2}
    assert summary.arrival.mean_ms == pytest.approx(20.0, abs=1.0)
    # A burst from the bridge would put audio far ahead of real time at the caller. (Three frames read
    # together can also come from a stall of the test's own event loop, so allow a few frames.)
    assert summary.arrival.max_lead_ms is not None
    assert summary.arrival.max_lead_ms <= 100
    # One drift-free 20 ms grid for the whole call (the old pacer re-anchored after every late frame,
    # moving the grid each time). Half a frame off is off any grid; on an idle machine p95 is ~1 ms.
    assert summary.arrival.grid_p95_ms is not None
    assert summary.arrival.grid_p95_ms < 10
    note_timing(f"audiosocket_echo_{fmt}", summary.arrival)


async def test_bridge_hangup_sends_0x00_after_the_queue_drains(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory(audiosocket={})
    call_id = str(uuid.uuid4())
    call = asyncio.create_task(
        run_simulated_call(
            options(
                services,
                call_id=call_id,
                seconds=10,
                wait_for_bridge_hangup=True,
                audio=AudioSource(pcm=utterances(16000, [(0.1, 3.0)]), sample_rate=16000),
            )
        )
    )
    for _ in range(250):
        session = services.manager.get(call_id)
        if session is not None and session.state is CallState.ACTIVE:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.6)
    services.manager.end(call_id, EndedBy.API)
    summary = await asyncio.wait_for(call, 10)
    assert summary.hangup_by == "bridge"
    assert summary.ok, summary.errors


async def test_refuses_a_connection_without_a_pending_call(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory(audiosocket={})
    reader, writer = await asyncio.open_connection("127.0.0.1", services.audiosocket_port)
    writer.write(encode_uuid(uuid.uuid4()) + encode_audio(b"\0" * 640, 0x12))
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b"\x00\x00\x00"  # hangup, then EOF
    writer.close()
    assert services.manager.capacity().active_calls == 0


async def test_garbage_ends_the_call_as_an_error(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory(audiosocket={"webhookless_company": "acme"})
    call_id = uuid.uuid4()
    reader, writer = await asyncio.open_connection("127.0.0.1", services.audiosocket_port)
    writer.write(encode_uuid(call_id) + encode_audio(b"\0" * 640, 0x12))
    await writer.drain()
    for _ in range(100):
        session = services.manager.get(str(call_id))
        if session is not None and session.state is CallState.ACTIVE:
            break
        await asyncio.sleep(0.02)
    assert session is not None
    writer.write(b"\x42\x00\x02zz")  # an unknown message type
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)
    assert rest.endswith(b"\x00\x00\x00")
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.disconnected_by is EndedBy.ERROR
    assert session.error_code == "protocol_error"
    writer.close()
