"""Whole calls over chan_websocket on loopback: the fake Asterisk (websockets) against the real daemon."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from bridge.app import Services
from bridge.session.state import CallState, EndedBy
from bridge.simulate import CallSummary, SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import AudioSource
from bridge.store import CallRecord
from tests.helpers import CONNECTOR_KEY, best_correlation, utterances

StartBridge = Callable[..., Any]
FRAME_BYTES = {"ulaw": 160, "slin": 320, "slin16": 640, "slin24": 960}
MAX_AHEAD_FRAMES = 200  # the leg's cap on Asterisk's queue (Asterisk itself holds up to 1000)
# Three phrases with long pauses: the echo plays each back without being interrupted.
CALM_SPEECH = [(0.2, 1.0), (2.0, 2.8), (3.8, 4.6)]


def options(services: Services, **overrides: Any) -> SimulatedCallOptions:
    base: dict[str, Any] = {
        "url": f"http://127.0.0.1:{services.http_port}",
        "connector_key": CONNECTOR_KEY,
        "called": "+34987654321",
    }
    base.update(overrides)
    return SimulatedCallOptions(**base)


def outbound_sizes_ok(summary: CallSummary, frame_bytes: int) -> None:
    assert summary.message_sizes, "the bridge sent no audio"
    for size in summary.message_sizes:
        assert size % frame_bytes == 0, f"message of {size} bytes is not whole {frame_bytes}-byte frames"
        assert size <= 8000


@pytest.mark.parametrize("control", ["json", "plain"])
@pytest.mark.parametrize("fmt", ["ulaw", "slin16", "slin24"])
async def test_echo_call_returns_what_was_sent(bridge_factory: StartBridge, fmt: str, control: str) -> None:
    services: Services = await bridge_factory()
    rate = 8000 if fmt == "ulaw" else int(fmt.removeprefix("slin")) * 1000
    sent = utterances(rate, CALM_SPEECH)
    summary = await run_simulated_call(
        options(
            services, format=fmt, control=control, audio=AudioSource(pcm=sent, sample_rate=rate), seconds=5.0
        )
    )
    assert summary.ok, summary.errors
    assert summary.hangup_by == "caller"
    assert summary.flushes == 0
    outbound_sizes_ok(summary, FRAME_BYTES[fmt])
    assert summary.max_queue_depth <= MAX_AHEAD_FRAMES
    assert summary.sample_rate == rate
    # Content: what came back is what was said (frames back to back, so a late tick cannot skew it).
    score, _ = best_correlation(sent, summary.received_stream, rate, max_lag_s=0.1)
    assert score >= 0.9, f"echo correlation {score:.3f}"
    # Timing: the first echo is heard after the echo's 200 ms plus playout.
    assert summary.first_audio_latency_ms is not None
    assert 180 <= summary.first_audio_latency_ms <= 500
    # Plain text too: the simulated Asterisk is 22.10, which answers marks in both formats.
    assert summary.marks_processed, "marks must report what the caller heard"


async def test_barge_in_flushes_playout(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    # The caller speaks again 450 ms after a phrase, while its echo is still playing.
    sent = utterances(16000, [(0.2, 1.4), (1.85, 2.8)])
    summary = await run_simulated_call(
        options(services, audio=AudioSource(pcm=sent, sample_rate=16000), seconds=3.5)
    )
    assert summary.ok, summary.errors
    assert summary.commands.get("FLUSH_MEDIA", 0) >= 1
    assert summary.flushes >= 1


async def test_bridge_ended_call_drains_before_hangup(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    sent = utterances(16000, [(0.2, 3.0)])
    records: asyncio.Queue[Any] = asyncio.Queue()
    call = asyncio.create_task(
        run_simulated_call(
            options(
                services,
                call_id="drain-1",
                audio=AudioSource(pcm=sent, sample_rate=16000),
                seconds=10,
                wait_for_bridge_hangup=True,
                records=records,
            )
        )
    )
    # Once the echo is playing, the API side ends the call.
    while True:
        record = await asyncio.wait_for(records.get(), 10)
        if record.kind == "command" and record.name == "START_MEDIA_BUFFERING":
            break
    await asyncio.sleep(0.5)
    assert services.manager.end("drain-1", EndedBy.API) is not None
    summary = await asyncio.wait_for(call, 20)
    assert summary.ok, summary.errors
    assert summary.hangup_by == "bridge"
    names = [r.name for r in summary.records if r.kind == "command"]
    hangup_at = names.index("HANGUP")
    assert "STOP_MEDIA_BUFFERING" in names[:hangup_at]
    assert names[hangup_at - 2 : hangup_at] == ["MARK_MEDIA", "REPORT_QUEUE_DRAINED"]
    assert summary.frames_queued_at_hangup == 0, "the goodbye was clipped"


async def test_terminate_webhook_ends_a_live_call(bridge_factory: StartBridge) -> None:
    services: Services = await bridge_factory()
    call = asyncio.create_task(
        run_simulated_call(options(services, call_id="term-1", seconds=10, wait_for_bridge_hangup=True))
    )
    for _ in range(200):
        session = services.manager.get("term-1")
        if session is not None and session.state is CallState.ACTIVE:
            break
        await asyncio.sleep(0.02)
    assert session is not None
    import aiohttp

    async with aiohttp.ClientSession() as http:
        body = {"callId": "term-1", "event": "terminate", "b_number": "+34987654321"}
        async with http.post(
            f"http://127.0.0.1:{services.http_port}/api/voip/webhook",
            json=body,
            headers={"x-connector-api-key": CONNECTOR_KEY},
        ) as response:
            assert response.status == 200
    summary = await asyncio.wait_for(call, 10)
    assert summary.hangup_by == "bridge"
    assert session.state is CallState.ENDED
    assert session.disconnected_by is EndedBy.CALLER


@pytest.mark.parametrize(
    ("variant", "probes", "estimated"),
    [("22.6", 0, True), ("22.7", 1, True), ("22.10", 1, False)],
)
async def test_plain_text_probes_for_marks(
    bridge_factory: StartBridge, variant: str, probes: int, estimated: bool
) -> None:
    """Plain text is Asterisk's default format: 22.8+ answers marks there too, and one probe finds out."""
    services: Services = await bridge_factory()
    sent = utterances(8000, [(0.2, 1.2), (1.9, 2.6)])
    call_id = f"plain-{variant}"
    summary = await run_simulated_call(
        options(
            services,
            call_id=call_id,
            format="ulaw",
            control="plain",
            plain_variant=variant,
            audio=AudioSource(pcm=sent, sample_rate=8000),
            seconds=4.0,
        )
    )
    assert summary.ok, summary.errors
    marks = summary.commands.get("MARK_MEDIA", 0) + summary.commands.get("<unknown>", 0)
    if variant == "22.10":
        assert marks > probes  # the probe answered: marks every 200 ms from then on
        assert summary.marks_processed
    else:
        assert marks == probes  # 22.6 is never asked; 22.7 once, and only a warning in its log
        assert len(summary.warnings) == probes
    record = await final_record(services, call_id)
    assert record.played_ms_estimated is estimated


async def final_record(services: Services, call_id: str) -> CallRecord:
    """The call's record once the bridge has finished the call (the caller hanging up ends the simulator
    first; the bridge's teardown follows)."""
    for _ in range(200):
        await services.recorder.flush()
        record = await services.store.get("acme", call_id)
        if record is not None and record.is_terminal:
            return record
        await asyncio.sleep(0.025)
    raise AssertionError(f"call {call_id} never ended")
