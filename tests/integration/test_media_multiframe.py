"""Multi-frame binary messages to chan_websocket, end to end on loopback.

The strict fake model streams each reply in 40-200 ms deltas, four times faster than real time; the
bridge relays them to the simulated Asterisk (`bridge.simulate`, whose ChannelModel queues each frame
of a message as chan_websocket.c does and counts as an error everything Asterisk would drop, ignore
or reject). What must hold: several whole frames per message, only whole frames outside a response's
buffering bracket, a bounded queue, marks that say what was played, and a barge-in truncated exactly
at what the caller heard.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bridge.app import Services
from bridge.settings import Settings, build_settings
from bridge.simulate import AudioSource, CallSummary, PeerRecord, SimulatedCallOptions, run_simulated_call
from bridge.simulate.options import FormatName
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import ACME_PHONE, CONNECTOR_KEY, raw_config, utterances

StartBridge = Callable[..., Any]
FAKE_KEY = "sk-test-key"
FRAME = {"ulaw": 160, "slin16": 640, "slin24": 960}


def relay_settings(fake: FakeRealtimeServer) -> Settings:
    raw = raw_config()
    raw["companies"][0]["agent"] = {
        "provider": "openai",
        "greeting": "Hello, Acme here.",
        "instructions": "You are the receptionist.",
    }
    raw["providers"] = {"openai": {"api_key": FAKE_KEY, "url": fake.url, "model": "gpt-realtime"}}
    return build_settings(raw)


@pytest.fixture
async def fake_model() -> AsyncIterator[Callable[[Script], Any]]:
    servers: list[FakeRealtimeServer] = []

    async def start(script: Script) -> FakeRealtimeServer:
        server = FakeRealtimeServer(api_key=FAKE_KEY, script=script)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.close()


def options(
    services: Services, fmt: FormatName, audio: AudioSource, seconds: float, **kw: Any
) -> SimulatedCallOptions:
    return SimulatedCallOptions(
        url=f"http://127.0.0.1:{services.http_port}",
        connector_key=CONNECTOR_KEY,
        called=ACME_PHONE,
        format=fmt,
        audio=audio,
        seconds=seconds,
        **kw,
    )


def frames_per_message(summary: CallSummary) -> list[int]:
    frame = FRAME[summary.format]
    return [-(-size // frame) for size, count in summary.message_sizes.items() for _ in range(count)]


@pytest.mark.parametrize("fmt", ["ulaw", "slin16", "slin24"])
async def test_model_replies_go_in_multi_frame_messages_asterisk_accepts(
    bridge_factory: StartBridge, fake_model: Callable[[Script], Any], fmt: FormatName
) -> None:
    fake = await fake_model(Script(greeting_reply_ms=2400, turns=(Turn(reply_ms=1200),)))
    services = await bridge_factory(settings=relay_settings(fake))
    rate = {"ulaw": 8000, "slin16": 16000, "slin24": 24000}[fmt]
    speech = AudioSource(pcm=utterances(rate, [(3.2, 4.0)]), sample_rate=rate)
    summary = await run_simulated_call(options(services, fmt, speech, 7.5))
    assert summary.ok, summary.errors  # no partial frame dropped, nothing fragmented or refused
    fake.assert_clean()
    frame = FRAME[fmt]
    # Whole frames, except a response's short tail at the end of its last message (in its bracket).
    short = sum(count for size, count in summary.message_sizes.items() if size % frame)
    assert short <= len(summary.buffering_completed)
    assert max(summary.message_sizes) <= 8000
    sizes = frames_per_message(summary)
    assert sum(sizes) / len(sizes) >= 5  # several frames per message (200 ms while Asterisk has plenty)
    assert max(sizes) == min(10, 8000 // frame)
    assert summary.max_queue_depth <= 200
    assert summary.frames_received * frame >= 0.95 * (2400 + 1200) * rate / 1000 * (1 if fmt == "ulaw" else 2)
    # A mark after each message that completes 200 ms of audio (so 200-400 ms apart), all reached.
    assert len(summary.marks_processed) >= 3600 // 400


async def test_barge_in_between_multi_frame_messages_truncates_at_what_was_heard(
    bridge_factory: StartBridge, fake_model: Callable[[Script], Any]
) -> None:
    fake = await fake_model(Script(greeting_reply_ms=3000, turns=(Turn(reply_ms=400),)))
    services = await bridge_factory(settings=relay_settings(fake))
    flushes: list[float] = []

    def on_record(record: PeerRecord) -> None:
        if record.kind == "command" and record.name == "FLUSH_MEDIA":
            flushes.append(record.t)

    speech = AudioSource(pcm=utterances(8000, [(1.2, 2.2)]), sample_rate=8000)
    started = time.monotonic()
    summary = await run_simulated_call(options(services, "ulaw", speech, 4.0, on_record=on_record))
    assert summary.ok, summary.errors
    assert time.monotonic() - started < 30
    fake.assert_clean()
    assert sum(frames_per_message(summary)) / len(frames_per_message(summary)) > 1.5
    (truncate,) = fake.last.truncates
    heard = sum(f.size for f in summary.played if f.t < flushes[0]) / 8  # µ-law: 8 bytes per ms
    assert abs(truncate.audio_end_ms - heard) <= 20, (truncate.audio_end_ms, heard)  # one frame
    assert summary.frames_flushed > 0  # there was more queued in Asterisk, and it was dropped
