"""RealtimeProvider against the strict fake model: uplink batching, latency hooks, rotation, and more
simultaneous model sockets than aiohttp's default pool would allow."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.app import model_client
from bridge.audio import g711
from bridge.audio.formats import ULAW
from bridge.logging import configure_logging
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    ModelFormats,
    ModelReconnected,
    ProviderEvent,
    ResponseDone,
)
from bridge.providers.brief import AgentBrief
from bridge.providers.factory import provider_for
from bridge.providers.openai.client import RealtimeProvider
from bridge.providers.openai.dialect import OPENAI
from bridge.settings import AgentSettings, build_settings
from bridge.settings_agents import OpenAISettings
from tests.fakes.openai_realtime import FakeRealtimeServer, Script, Turn
from tests.helpers import raw_config, utterances

FAKE_KEY = "sk-test-key"
FORMATS = ModelFormats(ULAW, ULAW)
SILENCE = b"\xff" * 160  # 20 ms of µ-law silence


def ulaw_frames(seconds: float, spans: list[tuple[float, float]]) -> list[bytes]:
    """Speech (as the fake's VAD hears it) in `spans`, as 20 ms µ-law frames."""
    audio = g711.ulaw_encode(utterances(8000, spans))
    audio += SILENCE * round(max(0.0, seconds - len(audio) / 8000) * 50)
    return [audio[i : i + 160] for i in range(0, len(audio) - 159, 160)]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    session = model_client()
    yield session
    await session.close()


def make_provider(
    fake: FakeRealtimeServer, http: aiohttp.ClientSession, *, batch_ms: int = 20, **settings: Any
) -> RealtimeProvider:
    section = OpenAISettings(api_key=FAKE_KEY, url=fake.url, uplink_batch_ms=batch_ms, **settings)
    return RealtimeProvider(dialect=OPENAI, settings=section, brief=AgentBrief(), http=http)


def appends(fake: FakeRealtimeServer, connection: int = 0) -> list[tuple[int, int]]:
    """(messages, bytes) of each run of consecutive appends the fake received on a connection."""
    events = fake.connections[connection].events
    return [(e.data["count"], e.data["bytes"]) for e in events if e.type == "input_audio_buffer.append"]


async def settle(fake: FakeRealtimeServer, connection: int, nbytes: int) -> None:
    """Until the fake has read `nbytes` of caller audio on a connection (it reads asynchronously)."""
    for _ in range(200):
        if len(fake.connections) > connection and fake.connections[connection].input_audio_bytes >= nbytes:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the fake never got {nbytes} bytes of audio")


async def next_event(events: AsyncIterator[ProviderEvent], kind: type[Any]) -> Any:
    async with asyncio.timeout(5):
        async for event in events:
            if isinstance(event, kind):
                return event
    raise AssertionError(f"no {kind.__name__}")


async def test_batched_frames_go_out_as_one_append_and_report_the_oldest_frame(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeRealtimeServer(api_key=FAKE_KEY) as fake:
        model = make_provider(fake, http, batch_ms=60)
        sent_for: list[float] = []
        model.on_uplink_sent = sent_for.append
        await model.connect()
        await model.start(FORMATS)
        for n in range(7):
            await model.send_audio(SILENCE, received_at=100.0 + n)
        # Two whole batches went out; the seventh frame waits for two more.
        assert sent_for == [100.0, 103.0]
        await settle(fake, 0, 6 * 160)
        assert appends(fake) == [(2, 6 * 160)]
        await model.close()  # the call ends: the held frame goes out before the socket closes
        await settle(fake, 0, 7 * 160)
        assert sent_for == [100.0, 103.0, 106.0]
        assert appends(fake) == [(3, 7 * 160)]
    fake.assert_clean()


async def test_without_batching_each_frame_is_an_append_and_unknown_read_times_are_not_reported(
    http: aiohttp.ClientSession,
) -> None:
    async with FakeRealtimeServer(api_key=FAKE_KEY) as fake:
        model = make_provider(fake, http, batch_ms=20)
        sent_for: list[float] = []
        model.on_uplink_sent = sent_for.append
        await model.connect()
        await model.start(FORMATS)
        await model.send_audio(SILENCE, received_at=1.5)
        await model.send_audio(SILENCE)  # read time unknown: no latency sample
        await model.send_audio(SILENCE, received_at=2.5)
        assert sent_for == [1.5, 2.5]
        await settle(fake, 0, 3 * 160)
        assert appends(fake) == [(3, 3 * 160)]
        await model.close()
    fake.assert_clean()


async def test_audio_out_carries_the_loop_time_its_message_was_read(http: aiohttp.ClientSession) -> None:
    script = Script(turns=(Turn(reply_ms=600),), speed=2.0)
    async with FakeRealtimeServer(api_key=FAKE_KEY, script=script) as fake:
        model = make_provider(fake, http)
        await model.connect()
        await model.start(FORMATS)
        loop = asyncio.get_running_loop()
        for frame in ulaw_frames(1.6, [(0.2, 0.7)]):
            await model.send_audio(frame)
        deltas: list[tuple[AudioOut, float]] = []
        events = model.events()
        async with asyncio.timeout(5):
            async for event in events:
                if isinstance(event, AudioOut):
                    deltas.append((event, loop.time()))
                if isinstance(event, ResponseDone):
                    break
        await model.close()
    fake.assert_clean()
    assert len(deltas) >= 3
    first_sent = fake.last.responses[0].first_delta_t
    assert first_sent is not None
    # The default loop's clock is time.monotonic, the fake's too: read after it was sent, and no
    # later than it reached us.
    assert first_sent <= (deltas[0][0].received_at or 0.0) <= deltas[0][1]
    for event, seen_at in deltas:
        assert event.received_at is not None
        assert event.received_at <= seen_at
    stamps = [event.received_at or 0.0 for event, _ in deltas]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) > 1  # each message its own read time, not one per call


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_ignored_events_are_noted_only_when_debug_logging_is_on(
    http: aiohttp.ClientSession, level: str
) -> None:
    stream = io.StringIO()
    configure_logging(level, "json", stream)
    async with FakeRealtimeServer(api_key=FAKE_KEY) as fake:
        model = make_provider(fake, http)
        await model.connect()
        await model.start(FORMATS)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.3):  # session.created and session.updated: nothing to yield
                async for _ in model.events():
                    pass
        await model.close()
    assert fake.last.types()[0] == "session.update"
    noted = stream.getvalue().count('"model_protocol_note"')
    assert noted == (2 if level == "debug" else 0)


async def test_held_audio_is_dropped_not_replayed_after_a_model_reconnect(
    http: aiohttp.ClientSession,
) -> None:
    script = Script(drop_after_s=0.3)
    async with FakeRealtimeServer(api_key=FAKE_KEY, script=script) as fake:
        model = make_provider(fake, http, batch_ms=100)
        await model.connect()
        await model.start(FORMATS)
        await model.send_audio(SILENCE, received_at=1.0)
        await model.send_audio(SILENCE, received_at=1.0)  # two frames held, three short of a batch
        events = model.events()
        reconnected = await next_event(events, ModelReconnected)
        assert not reconnected.rotated
        for _ in range(5):
            await model.send_audio(SILENCE)
        await settle(fake, 1, 5 * 160)
        await model.close()
    fake.assert_clean()
    first = fake.connections[0]
    assert len(fake.connections) == 2
    assert first.input_audio_bytes == 0  # the held frames were never sent to the socket that died
    assert appends(fake, 1) == [(1, 5 * 160)]  # ... nor replayed into the new session
    assert model.audio_dropped == 2


async def test_a_rotation_sends_held_audio_at_once_after_the_new_session_is_configured(
    http: aiohttp.ClientSession,
) -> None:
    script = Script(max_session_s=0.3)  # the fake says session_expired, then closes
    async with FakeRealtimeServer(api_key=FAKE_KEY, script=script) as fake:
        model = make_provider(fake, http, batch_ms=100)
        await model.connect()
        await model.start(FORMATS)
        for _ in range(2):
            await model.send_audio(SILENCE)
        events = model.events()
        rotated = await next_event(events, ModelReconnected)
        assert rotated.rotated
        await settle(fake, 1, 2 * 160)
        await model.close()
    fake.assert_clean()
    second = fake.connections[1]
    assert second.types()[:2] == ["session.update", "input_audio_buffer.append"]
    assert appends(fake, 1) == [(1, 2 * 160)]
    assert second.session["audio"]["input"]["format"] == {"type": "audio/pcmu"}


async def test_a_quiet_socket_is_rotated_when_due(http: aiohttp.ClientSession) -> None:
    """No server event and no timeout per receive: the heartbeat's pong is when rotation is checked."""
    async with FakeRealtimeServer(api_key=FAKE_KEY) as fake:
        section = OpenAISettings(api_key=FAKE_KEY, url=fake.url, max_session_minutes=0.5 / 60)
        model = RealtimeProvider(
            dialect=OPENAI, settings=section, brief=AgentBrief(), http=http, heartbeat_seconds=0.2
        )
        await model.connect()
        await model.start(FORMATS)
        rotated = await next_event(model.events(), ModelReconnected)
        assert rotated.rotated
        await model.close()
    fake.assert_clean()
    assert len(fake.connections) == 2
    assert fake.connections[1].types()[0] == "session.update"
    assert fake.connections[0].closed_by == "client"


async def test_more_model_sockets_at_once_than_aiohttps_default_pool(http: aiohttp.ClientSession) -> None:
    """120 calls' providers, built as the app builds them, all connected at once, each exchanging a turn."""
    calls = 120
    raw = raw_config()
    script = Script(turns=(Turn(reply_ms=200),), speed=0)
    async with FakeRealtimeServer(api_key=FAKE_KEY, script=script) as fake:
        raw["providers"] = {"openai": {"api_key": FAKE_KEY, "url": fake.url}}
        settings = build_settings(raw)
        agent = AgentSettings(provider="openai", silence_duration_ms=200)
        frames = ulaw_frames(0.8, [(0.1, 0.4)])
        all_connected = asyncio.Barrier(calls)

        async def call() -> tuple[int, bool]:
            model = provider_for(agent, settings, http=http)
            try:
                # What CallRunner allows a model to answer in; a pool slot never freed would hit it.
                async with asyncio.timeout(5):
                    await model.connect()
                    await all_connected.wait()
                await model.start(FORMATS)
                for frame in frames:
                    await model.send_audio(frame)
                heard, audio = False, 0
                async with asyncio.timeout(10):
                    async for event in model.events():
                        heard |= isinstance(event, CallerSpeechStarted)
                        if isinstance(event, AudioOut):
                            audio += len(event.data)
                        if isinstance(event, ResponseDone):
                            break
                return audio, heard
            finally:
                await model.close()

        results = await asyncio.gather(*(call() for _ in range(calls)))
    fake.assert_clean()
    assert len(fake.connections) == calls
    assert all(heard for _, heard in results)
    assert all(audio == 200 * 8 for audio, _ in results)  # every reply whole: 200 ms of µ-law
