"""What newer Asterisk releases tell the media socket, end to end against the real daemon on loopback:
MEDIA_START's `channel_variables` (call id, AMD verdict) and mode fields, a one-way media direction
(`d()`), and each DTMF digit of the 22.10.1 captures delivered once on both transports."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection, connect

from bridge.app import Services
from bridge.session.session import Session
from bridge.session.state import CallState, EndedBy
from bridge.simulate import CallSummary, SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import AudioSource
from tests.helpers import CONNECTOR_KEY, utterances

StartBridge = Callable[..., Any]
CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "captures" / "asterisk-22.10.1"
CAPTURED_DIGITS = "1*#9A"  # SendDTMF(1*), SendDTMF(#), SendDTMF(9A) in the DTMF captures
CALLED = "34987654321"


def options(services: Services, **overrides: Any) -> SimulatedCallOptions:
    base: dict[str, Any] = {
        "url": f"http://127.0.0.1:{services.http_port}",
        "connector_key": CONNECTOR_KEY,
        "called": "+" + CALLED,
    }
    base.update(overrides)
    return SimulatedCallOptions(**base)


async def live_session(services: Services, call_id: str, state: CallState = CallState.ACTIVE) -> Session:
    for _ in range(250):
        session = services.manager.get(call_id)
        if session is not None and session.state is state:
            return session
        await asyncio.sleep(0.02)
    raise AssertionError(f"{call_id} never reached {state}")


async def end_from_the_api_once_active(services: Services, call_id: str) -> Session:
    session = await live_session(services, call_id)
    await asyncio.sleep(0.3)
    assert services.manager.end(call_id, EndedBy.API) is not None
    return session


# ------------------------------------------------------------------ one-way media (d() / SET_MEDIA_DIRECTION)


async def test_an_out_only_leg_runs_without_caller_audio_and_ends_cleanly(
    bridge_factory: StartBridge,
) -> None:
    services: Services = await bridge_factory()
    opts = options(
        services, call_id="out-1", direction="out", seconds=8, wait_for_bridge_hangup=True, expect_audio=False
    )
    call = asyncio.create_task(run_simulated_call(opts))
    session = await end_from_the_api_once_active(services, "out-1")
    summary: CallSummary = await asyncio.wait_for(call, 10)
    assert summary.frames_sent == 0  # Asterisk sent nothing: there was nothing to wait for
    assert summary.hangup_by == "bridge"
    assert summary.errors == []
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.disconnected_by is EndedBy.API
    assert session.error_code is None


async def test_an_in_only_leg_sends_nothing_asterisk_would_drop_or_refuse(
    bridge_factory: StartBridge,
) -> None:
    services: Services = await bridge_factory()
    sent = utterances(16000, [(0.2, 1.0), (1.6, 2.4)])  # the echo provider answers every phrase
    opts = options(
        services,
        call_id="in-1",
        direction="in",
        audio=AudioSource(pcm=sent, sample_rate=16000),
        seconds=8,
        wait_for_bridge_hangup=True,
        expect_audio=False,
    )
    call = asyncio.create_task(run_simulated_call(opts))
    session = await live_session(services, "in-1")
    await asyncio.sleep(3.0)  # both phrases heard and echoed by the model
    assert services.manager.end("in-1", EndedBy.API) is not None
    summary: CallSummary = await asyncio.wait_for(call, 10)
    # The simulated Asterisk records audio sent to an `in` leg and every command it refuses as errors.
    assert summary.errors == []
    assert summary.frames_sent > 100
    assert summary.message_sizes == {}
    assert "START_MEDIA_BUFFERING" not in summary.commands
    assert summary.hangup_by == "bridge"
    hangups = [r.t for r in summary.records if r.kind == "command" and r.name == "HANGUP"]
    assert len(hangups) == 1
    await asyncio.wait_for(session.ended.wait(), 5)
    assert session.disconnected_by is EndedBy.API


# ------------------------------------------------------------------ MEDIA_START of newer releases


@pytest.mark.parametrize("control", ["json", "plain"])
async def test_media_start_with_mode_fields_is_accepted(bridge_factory: StartBridge, control: str) -> None:
    services: Services = await bridge_factory()
    sent = utterances(16000, [(0.2, 1.0)])
    summary = await run_simulated_call(
        options(
            services,
            control=control,
            announce_modes=True,  # passthrough:false unbuffered:false, as releases after 22.11 say
            audio=AudioSource(pcm=sent, sample_rate=16000),
            seconds=2.5,
        )
    )
    start = next(r for r in summary.records if r.name == "MEDIA_START")
    assert "passthrough" in start.detail
    assert "unbuffered" in start.detail
    assert summary.ok, summary.errors
    assert summary.frames_received > 0  # the echo played: the call ran normally


async def test_a_media_start_for_another_call_is_refused(bridge_factory: StartBridge) -> None:
    # v() parameters are shared by a websocket_client.conf section: the query can name the wrong call.
    services: Services = await bridge_factory()
    opts = options(
        services, call_id="mine-1", channel_variables={"BRIDGE_CALL_ID": "someone-else"}, expect_audio=False
    )
    summary = await run_simulated_call(opts)
    assert summary.hangup_by == "bridge"
    assert summary.close_code == 1003
    assert "someone-else" in summary.close_reason
    record = await services.calls.record("acme", "mine-1")
    assert record is not None
    assert (record.disconnected_by, record.error_code) == ("error", "protocol_error")


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"asterisk:{password}".encode()).decode()}


async def open_media(services: Services, call_id: str, **query: str) -> ClientConnection:
    params = {"callId": call_id, "aNumberE164": "34600111555", "bNumberE164": CALLED, **query}
    text = "&".join(f"{k}={v}" for k, v in params.items())
    return await connect(
        f"ws://127.0.0.1:{services.http_port}/api/real-time-voice-stream?{text}",
        subprotocols=[websockets.Subprotocol("media")],
        compression=None,
        additional_headers=basic(CONNECTOR_KEY),
    )


def media_start(channel_variables: dict[str, str] | None = None, **extra: Any) -> str:
    event: dict[str, Any] = {
        "event": "MEDIA_START",
        "connection_id": "bridge_media",
        "channel": "WebSocket/bridge_media/0x7f209400ce90",
        "channel_id": "1796525050.2",
        "format": "slin16",
        "optimal_frame_size": 640,
        "ptime": 20,
        **extra,
        "channel_variables": channel_variables or {},
    }
    return json.dumps(event, separators=(",", ":"))


async def test_passthrough_mode_is_refused_with_a_reason(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    async with await open_media(services, "pt-1") as ws:
        await ws.send(media_start(passthrough=True, unbuffered=False))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1003
    assert "passthrough" in closed.value.rcvd.reason
    record = await services.calls.record("acme", "pt-1")
    assert record is not None
    assert record.error_code == "protocol_error"


# ------------------------------------------------------------------ the AMD verdict reaches the call


@pytest.mark.parametrize(
    ("query", "variables", "verdict"),
    [
        pytest.param({"amd": "MACHINE"}, {}, "machine", id="query-v()"),
        pytest.param({"amd": ""}, {"BRIDGE_AMD_STATUS": "HUMAN"}, "human", id="channel-variables"),
        pytest.param({"amd": "HUMAN"}, {"BRIDGE_AMD_STATUS": "MACHINE"}, "machine", id="channel-beats-query"),
        pytest.param({"amd": "NOTSURE"}, {}, "unknown", id="notsure"),
        pytest.param({"amd": ""}, {}, None, id="amd-did-not-run"),
    ],
)
async def test_the_amd_verdict_is_read_from_the_query_or_the_channel(
    bridge_factory: StartBridge, query: dict[str, str], variables: dict[str, str], verdict: str | None
) -> None:
    services: Services = await bridge_factory()
    call_id = f"amd-{uuid.uuid4().hex[:8]}"
    async with await open_media(services, call_id, **query) as ws:
        await ws.send(media_start({"BRIDGE_CALL_ID": call_id, **variables}))
        session = await live_session(services, call_id)
        assert session.amd_result == verdict


# ------------------------------------------------------------------ DTMF: each captured digit exactly once


def capture(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CAPTURES / name).read_text().splitlines()]


@pytest.mark.parametrize("name", ["ws_dtmf_json.jsonl", "ws_dtmf_plain.jsonl"])
async def test_chan_websocket_delivers_each_captured_digit_once(
    bridge_factory: StartBridge, name: str
) -> None:
    services: Services = await bridge_factory()
    records = capture(name)
    texts = [r["text"] for r in records if r["kind"] == "text_rx"]
    start = json.loads(texts[0]) if texts[0].startswith("{") else None
    call_id = start["channel_variables"]["BRIDGE_CALL_ID"] if start else "1796525056.5"
    async with await open_media(services, call_id) as ws:
        await ws.send(texts[0])  # MEDIA_START exactly as Asterisk sent it
        session = await live_session(services, call_id)
        for rec in records:
            if rec["kind"] == "text_rx" and "DTMF_END" in rec["text"]:
                await ws.send(rec["text"])
            elif rec["kind"] == "bin_rx_run":
                for size, count in rec["sizes"].items():
                    for _ in range(min(count, 5)):  # a few frames of each run, in order
                        await ws.send(b"\x00" * int(size))
        for _ in range(100):
            if len(session.dtmf_digits) >= len(CAPTURED_DIGITS):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # a duplicate would have arrived by now
        assert session.dtmf_digits == CAPTURED_DIGITS


async def test_audiosocket_delivers_each_captured_digit_once(bridge_factory: StartBridge) -> None:
    # Written back to back, so the UUID, audio and keys share TCP reads: none may be lost or refused.
    services: Services = await bridge_factory(audiosocket={"webhookless_company": "acme"})
    records = capture("audiosocket_dtmf.jsonl")
    messages = [r for r in records if r["kind"] in ("msg_rx", "audio_rx_run")]
    call_id = messages[0]["uuid"]
    _, writer = await asyncio.open_connection("127.0.0.1", services.audiosocket_port)
    try:
        for rec in messages:
            if rec["kind"] == "msg_rx":  # the UUID, then one `03 00 01 <digit>` per key
                writer.write(bytes.fromhex(rec["raw_hex"]))
            else:
                frame = bytes.fromhex("120280") + b"\x00" * 640  # type 0x12 (slin16), 640 bytes
                writer.write(frame * min(rec["frames"], 5))
            await writer.drain()
        session = await live_session(services, call_id)
        for _ in range(100):
            if len(session.dtmf_digits) >= len(CAPTURED_DIGITS):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert session.dtmf_digits == CAPTURED_DIGITS
    finally:
        writer.close()
