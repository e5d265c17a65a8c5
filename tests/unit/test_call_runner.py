"""The call runner against in-memory stand-ins: lane endings, outcomes, live counters, barge-in fencing,
teardown."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import pytest

from bridge.audio.formats import SLIN16, AudioFormat
from bridge.errors import Unavailable
from bridge.providers.base import (
    AudioOut,
    CallerSpeechStarted,
    CallerSpeechStopped,
    HangupRequested,
    ModelFormats,
    Provider,
    ProviderError,
    ProviderEvent,
    ProviderUnavailable,
    ResponseDone,
    ToolCall,
    TranscriptLine,
    Usage,
)
from bridge.providers.factory import provider_for
from bridge.session.barge_in import CallerVoice
from bridge.session.call import CallPlan, CallRunner, CallTimeouts, provider_or_refuse
from bridge.session.control import ChannelRef, ControllerHealth, DialOutcome, DialResult, OriginateRequest
from bridge.session.costs import PriceTable
from bridge.session.leg import AudioIn, CallerAudioTaker, LegGone, LegInput, LegStats
from bridge.session.manager import call_outcome
from bridge.session.session import MAX_RESPONSE_LATENCIES, CallInfo, EndRequest, Session
from bridge.session.state import CallState, EndedBy
from bridge.session.tools import ToolBox, ToolOutcome
from bridge.settings_agents import AgentSettings, ModelPrice
from tests.helpers import make_settings, utterances


class MemoryLeg:
    on_downlink_sent: Callable[[float], None] | None = None
    on_caller_audio: CallerAudioTaker | None = None  # set by the runner; this leg queues everything

    def __init__(self, closing: EndRequest | None = None) -> None:
        self.inbound_items: asyncio.Queue[LegInput | None] = asyncio.Queue()
        self.played: list[bytes] = []
        self.interrupts = 0
        self.hangups: list[bool] = []
        self.closing = closing or EndRequest(EndedBy.CALLER)  # why the peer goes, when it goes
        self._gone: EndRequest | None = None
        self.gone = asyncio.Event()
        self.variables: dict[str, str] = {}  # what the dialplan passed (e.g. amd)
        self.counters = LegStats(
            frames_in=1, frames_out=2, drops=0, protocol_errors=0, played_ms_estimated=False
        )

    async def wait_started(self) -> AudioFormat:
        return SLIN16

    async def inbound(self) -> AsyncIterator[LegInput]:
        while (item := await self.inbound_items.get()) is not None:
            yield item
        self._gone = self.closing
        self.gone.set()

    async def wait_gone(self) -> None:
        await self.gone.wait()

    @property
    def channel_name(self) -> str:
        return "WebSocket/test-0001"

    @property
    def call_variables(self) -> Mapping[str, str]:
        return self.variables

    @property
    def end_reason(self) -> EndRequest | None:
        return self._gone

    def play(self, data: bytes, received_at: float | None = None) -> None:
        self.played.append(data)

    def end_response(self) -> None:
        pass

    @property
    def is_playing(self) -> bool:
        return bool(self.played)

    def interrupt(self) -> float:
        self.interrupts += 1
        self.played.clear()
        return 120.0

    async def hangup(self, *, drain: bool) -> None:
        self.hangups.append(drain)

    def stats(self) -> LegStats:
        return self.counters


class BrokenLeg(MemoryLeg):
    """A peer that broke the protocol before it said its audio format."""

    async def wait_started(self) -> AudioFormat:
        self._gone = EndRequest(EndedBy.ERROR, "protocol_error")
        self.gone.set()
        raise LegGone("the peer left before announcing its audio format")


class SilentLeg(MemoryLeg):
    """A peer that never sends MEDIA_START."""

    async def wait_started(self) -> AudioFormat:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class ScriptedProvider(Provider):
    name = "scripted"

    def __init__(self, script: list[ProviderEvent]) -> None:
        self.events_to_send: asyncio.Queue[ProviderEvent | None] = asyncio.Queue()
        for event in script:
            self.events_to_send.put_nowait(event)
        self.heard: list[bytes] = []
        self.truncated_at: list[float] = []
        self.tool_results: list[tuple[str, str, bool]] = []
        self.keys: list[tuple[str, bool]] = []
        self.greeted: bool | None = None
        self.closed = False

    def negotiate(self, leg: AudioFormat) -> ModelFormats:
        return ModelFormats(leg, leg)

    async def start(self, formats: ModelFormats, *, greet: bool = True) -> None:
        self.greeted = greet

    async def send_dtmf(self, text: str, *, respond: bool) -> None:
        self.keys.append((text, respond))

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        self.heard.append(data)

    async def events(self) -> AsyncIterator[ProviderEvent]:
        while (event := await self.events_to_send.get()) is not None:
            yield event

    async def interrupt(self, played_ms: float, *, cancel_response: bool = False) -> None:
        self.truncated_at.append(played_ms)

    async def send_tool_result(self, call_id: str, output: str, *, respond: bool = True) -> None:
        self.tool_results.append((call_id, output, respond))

    async def close(self) -> None:
        self.closed = True


class UnreachableProvider(ScriptedProvider):
    """A model whose socket cannot be opened."""

    async def connect(self) -> None:
        raise ProviderUnavailable("cannot reach the model: ClientConnectorError")


def session() -> Session:
    s = Session(CallInfo("c1", "acme", "inbound", "+34600", "+34987"))
    s.attach_owner()
    return s


async def test_model_hangup_ends_the_call_by_bot_with_a_drained_hangup() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([AudioOut(b"\x01\x00" * 320, "r1"), HangupRequested("done")])
    await asyncio.wait_for(CallRunner(call, leg, provider).run(), 5)
    assert call.state is CallState.ENDED
    assert call.disconnected_by is EndedBy.BOT
    assert leg.hangups == [True]
    assert provider.closed
    assert call.stats.frames_out == 2


async def test_barge_in_flushes_truncates_and_fences_stale_audio() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([AudioOut(b"\x01\x00" * 320, "r1"), CallerSpeechStarted()])
    runner = CallRunner(call, leg, provider)
    task = asyncio.create_task(runner.run())
    for _ in range(100):
        if leg.interrupts:
            break
        await asyncio.sleep(0.01)
    provider.events_to_send.put_nowait(AudioOut(b"\x02\x00" * 320, "r1"))  # late delta of the cut response
    provider.events_to_send.put_nowait(AudioOut(b"\x03\x00" * 320, "r2"))
    await asyncio.sleep(0.05)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert leg.interrupts == 1
    assert provider.truncated_at == [120.0]
    assert leg.played == [b"\x03\x00" * 320]
    assert call.barge_ins == 1
    assert call.disconnected_by is EndedBy.API
    assert leg.hangups == [True]


async def test_caller_hangup_ends_without_hanging_up_again() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([])
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    leg.inbound_items.put_nowait(AudioIn(b"\x00\x00" * 320))
    leg.inbound_items.put_nowait(None)
    await asyncio.wait_for(task, 5)
    assert provider.heard == [b"\x00\x00" * 320]
    assert call.disconnected_by is EndedBy.CALLER
    assert leg.hangups == []


async def test_a_fatal_model_error_after_active_ends_the_call_as_an_error() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([ProviderError("insufficient_quota", "no credit", fatal=True)])
    await asyncio.wait_for(CallRunner(call, leg, provider, CallTimeouts(hangup=1)).run(), 5)
    assert call.answered_at is not None  # it was a conversation
    assert (call.state, call.disconnected_by, call.error_code) == (
        CallState.ENDED,
        EndedBy.ERROR,
        "insufficient_quota",
    )
    assert leg.hangups == [False]  # no drain after an error


async def test_a_protocol_error_before_active_fails_the_call() -> None:
    leg, call = BrokenLeg(), session()
    provider = ScriptedProvider([])
    await asyncio.wait_for(CallRunner(call, leg, provider).run(), 5)
    assert (call.state, call.disconnected_by, call.error_code) == (
        CallState.FAILED,
        EndedBy.ERROR,
        "protocol_error",
    )
    assert call.answered_at is None
    assert provider.closed


async def test_a_protocol_error_after_active_ends_the_call_as_an_error() -> None:
    leg, call = MemoryLeg(closing=EndRequest(EndedBy.ERROR, "protocol_error")), session()
    task = asyncio.create_task(CallRunner(call, leg, ScriptedProvider([])).run())
    leg.inbound_items.put_nowait(AudioIn(b"\x00\x00" * 320))
    leg.inbound_items.put_nowait(None)  # the peer breaks the protocol and the driver closes the socket
    await asyncio.wait_for(task, 5)
    assert (call.state, call.disconnected_by, call.error_code) == (
        CallState.ENDED,
        EndedBy.ERROR,
        "protocol_error",
    )
    assert leg.hangups == []  # the socket is already gone


async def test_no_media_start_fails_the_call_with_its_code() -> None:
    leg, call = SilentLeg(), session()
    await asyncio.wait_for(
        CallRunner(call, leg, ScriptedProvider([]), CallTimeouts(media_start=0.05)).run(), 5
    )
    assert (call.state, call.disconnected_by, call.error_code) == (
        CallState.FAILED,
        EndedBy.ERROR,
        "media_start_timeout",
    )


async def test_a_caller_who_hangs_up_before_active_ends_the_call_without_an_error() -> None:
    class HangsUpFirst(MemoryLeg):
        async def wait_started(self) -> AudioFormat:
            self._gone = EndRequest(EndedBy.CALLER)
            self.gone.set()
            raise LegGone("the caller hung up before media started")

    call = session()
    await asyncio.wait_for(CallRunner(call, HangsUpFirst(), ScriptedProvider([])).run(), 5)
    assert (call.state, call.disconnected_by, call.error_code) == (CallState.ENDED, EndedBy.CALLER, None)


# --- the provider's name, even when it never answered ------------------------------------------


async def test_a_model_that_cannot_be_reached_still_names_its_provider() -> None:
    leg, call = MemoryLeg(), session()
    await asyncio.wait_for(CallRunner(call, leg, UnreachableProvider([])).run(), 5)
    record = call.record()
    assert (record.status, record.error_code, record.provider) == (
        "failed",
        "provider_unavailable",
        "scripted",
    )


async def test_a_provider_that_cannot_be_built_is_named_and_the_call_refused() -> None:
    call = session()
    agent = AgentSettings.model_validate({"provider": "openai"})  # no [providers.openai] api_key
    settings = make_settings()
    async with aiohttp.ClientSession() as http:

        def plan(_: Session) -> CallPlan:
            return CallPlan(provider_for(agent, settings, http=http))

        with pytest.raises(Unavailable) as refused:
            provider_or_refuse(call, plan)
    assert refused.value.code == "provider_not_configured"
    record = call.record()
    assert (record.status, record.disconnected_by, record.error_code, record.provider) == (
        "failed",
        "error",
        "provider_not_configured",
        "openai",
    )


# --- live counters -------------------------------------------------------------------------------


async def test_a_live_call_record_shows_the_leg_counters_and_barge_ins_as_they_move() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([AudioOut(b"\x01\x00" * 320, "r1"), CallerSpeechStarted()])
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    for _ in range(200):
        if leg.interrupts:
            break
        await asyncio.sleep(0.01)
    leg.counters = LegStats(frames_in=50, frames_out=40, drops=3, protocol_errors=0, played_ms_estimated=True)
    live = call.record()
    assert (live.status, live.frames_in, live.frames_out, live.drops) == ("active", 50, 40, 3)
    assert (live.barge_ins, live.played_ms_estimated) == (1, True)
    assert live.duration_seconds >= 0
    leg.counters = LegStats(frames_in=75, frames_out=60, drops=3, protocol_errors=1, played_ms_estimated=True)
    assert (call.record().frames_in, call.record().frames_out) == (75, 60)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    leg.counters = LegStats(
        frames_in=999, frames_out=999, drops=0, protocol_errors=0, played_ms_estimated=False
    )
    final = call.record()  # the leg is over: the counts it had at the end stay
    assert (final.status, final.frames_in, final.frames_out, final.barge_ins) == ("ended", 75, 60, 1)
    assert (call.stats.frames_in, call.stats.protocol_errors) == (75, 1)


class RecordingController:
    """A CallController that records what it is asked (the AMI/ARI ones have their own wire tests)."""

    def __init__(self) -> None:
        self.transfers: list[tuple[ChannelRef, str]] = []
        self.dtmf: list[tuple[ChannelRef, str]] = []

    @property
    def health(self) -> ControllerHealth:
        return ControllerHealth.OK

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def originate(self, request: OriginateRequest) -> DialResult:
        return DialResult(DialOutcome.ANSWERED)

    async def hangup(self, ref: ChannelRef) -> None:
        return None

    async def transfer(self, ref: ChannelRef, target: str) -> None:
        self.transfers.append((ref, target))

    async def send_dtmf(self, ref: ChannelRef, digits: str) -> None:
        self.dtmf.append((ref, digits))


def agent(**overrides: Any) -> AgentSettings:
    return AgentSettings.model_validate(
        {"provider": "echo", "transfer_targets": ["+34911222333"], **overrides}
    )


async def test_end_call_tool_waits_for_the_goodbye_response_to_finish() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider(
        [
            AudioOut(b"\x01\x00" * 320, "r1"),
            ToolCall("t1", "end_call", "{}", "r1"),
            AudioOut(b"\x02\x00" * 320, "r1"),  # the goodbye goes on after the call: still played
            ResponseDone("r1"),
        ]
    )
    plan = CallPlan(provider, tools=ToolBox(agent()))
    await asyncio.wait_for(CallRunner(call, leg, plan).run(), 5)
    assert call.disconnected_by is EndedBy.BOT
    assert leg.played == [b"\x01\x00" * 320, b"\x02\x00" * 320]
    assert leg.hangups == [True]  # drained
    assert provider.tool_results == [("t1", '{"ok": true}', False)]


async def test_transfer_tool_redirects_after_the_last_words_and_records_the_target() -> None:
    leg, call = MemoryLeg(), session()
    controller = RecordingController()
    provider = ScriptedProvider(
        [ToolCall("t1", "transfer_call", '{"to": "+34911222333"}', "r1"), ResponseDone("r1")]
    )
    plan = CallPlan(provider, tools=ToolBox(agent(), controller=controller), controller=controller)
    timeouts = CallTimeouts(transfer_leave=0.1)
    await asyncio.wait_for(CallRunner(call, leg, plan, timeouts).run(), 5)
    assert [(ref.call_id, ref.media_channel, target) for ref, target in controller.transfers] == [
        ("c1", "WebSocket/test-0001", "+34911222333")
    ]
    assert call.transferred_to == "+34911222333"
    assert call.disconnected_by is EndedBy.BOT


async def test_transfer_to_a_target_not_configured_is_refused_to_the_model() -> None:
    leg, call = MemoryLeg(), session()
    controller = RecordingController()
    provider = ScriptedProvider(
        [ToolCall("t1", "transfer_call", '{"to": "+1555"}', "r1"), ResponseDone("r1")]
    )
    plan = CallPlan(provider, tools=ToolBox(agent(), controller=controller), controller=controller)
    task = asyncio.create_task(CallRunner(call, leg, plan).run())
    for _ in range(100):
        if provider.tool_results:
            break
        await asyncio.sleep(0.01)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert controller.transfers == []
    assert json.loads(provider.tool_results[0][1])["ok"] is False


async def test_transcripts_usage_and_cost_accumulate_on_the_session() -> None:
    leg, call = MemoryLeg(), session()
    usage = Usage(input_audio_tokens=1_000_000, output_audio_tokens=500_000, responses=1)
    provider = ScriptedProvider(
        [
            TranscriptLine("caller", "hello", "u1"),
            TranscriptLine("bot", "hi, how can I help", "a1"),
            TranscriptLine("bot", "hi, how", "a1", truncated=True),  # cut by a barge-in: replaces
            usage,
            usage,
            HangupRequested(),
        ]
    )
    prices = PriceTable(ModelPrice(input_audio=32.0, output_audio=64.0), None)
    await asyncio.wait_for(CallRunner(call, leg, CallPlan(provider, prices=prices)).run(), 5)
    assert [(line.role, line.text, line.truncated) for line in call.transcript] == [
        ("caller", "hello", False),
        ("bot", "hi, how", True),
    ]
    assert call.usage.input_audio_tokens == 2_000_000
    assert call.usage.responses == 2
    assert call.cost_usd == pytest.approx(2 * (32.0 + 32.0))


async def test_a_slow_tool_does_not_stall_the_conversation() -> None:
    leg, call = MemoryLeg(), session()
    release = asyncio.Event()

    class SlowTools(ToolBox):
        async def run(self, call_: ToolCall, session_: Session) -> ToolOutcome:
            await release.wait()
            return ToolOutcome('{"ok": true}')

    provider = ScriptedProvider([ToolCall("t1", "lookup", "{}", "r1"), AudioOut(b"\x05\x00" * 320, "r2")])
    task = asyncio.create_task(CallRunner(call, leg, CallPlan(provider, tools=SlowTools(agent()))).run())
    for _ in range(100):
        if leg.played:
            break
        await asyncio.sleep(0.01)
    assert leg.played == [b"\x05\x00" * 320]  # audio flowed while the tool was still running
    assert provider.tool_results == []
    release.set()
    for _ in range(100):
        if provider.tool_results:
            break
        await asyncio.sleep(0.01)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.tool_results == [("t1", '{"ok": true}', True)]


async def test_local_barge_in_interrupts_the_bot_after_the_debounce() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider([AudioOut(b"\x01\x00" * 320, "r1")])
    plan = CallPlan(provider, local_barge_in_ms=100)
    task = asyncio.create_task(CallRunner(call, leg, plan).run())
    for _ in range(100):
        if leg.played:
            break
        await asyncio.sleep(0.01)
    speech = utterances(16000, [(0.0, 0.6)])
    for offset in range(0, len(speech), 640):
        leg.inbound_items.put_nowait(AudioIn(speech[offset : offset + 640]))
    for _ in range(200):
        if leg.interrupts:
            break
        await asyncio.sleep(0.01)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert leg.interrupts == 1
    assert provider.truncated_at == [120.0]


async def test_greeting_and_reply_latencies_are_recorded_on_the_session() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider(
        [AudioOut(b"\x01\x00" * 320, "r1"), ResponseDone("r1"), CallerSpeechStopped()]
    )
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    await asyncio.sleep(0.05)  # the model thinks
    provider.events_to_send.put_nowait(AudioOut(b"\x02\x00" * 320, "r2"))
    provider.events_to_send.put_nowait(AudioOut(b"\x03\x00" * 320, "r2"))  # same reply: not a new turn
    provider.events_to_send.put_nowait(HangupRequested())
    await asyncio.wait_for(task, 5)
    assert call.first_audio_s is not None
    assert 0 <= call.first_audio_s < 1.0  # immediate here; loose so a loaded machine cannot flake it
    assert len(call.response_latencies_s) == 1
    assert call.response_latencies_s[0] >= 0.04


async def test_a_caller_who_speaks_again_before_the_reply_restarts_the_turn() -> None:
    leg, call = MemoryLeg(), session()
    provider = ScriptedProvider(
        [
            AudioOut(b"\x01\x00" * 320, "r1"),
            CallerSpeechStopped(),
            CallerSpeechStarted(),  # barge-in before any reply audio: the turn is not over
            AudioOut(b"\x02\x00" * 320, "r1"),  # late delta of the cut response: never played
            AudioOut(b"\x03\x00" * 320, "r2"),  # audio while the caller talks: no turn to time
        ]
    )
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    await asyncio.sleep(0.02)
    assert call.response_latencies_s == []
    provider.events_to_send.put_nowait(CallerSpeechStopped())
    await asyncio.sleep(0.03)
    provider.events_to_send.put_nowait(AudioOut(b"\x04\x00" * 320, "r3"))
    provider.events_to_send.put_nowait(HangupRequested())
    await asyncio.wait_for(task, 5)
    assert call.barge_ins == 1
    assert len(call.response_latencies_s) == 1
    assert call.response_latencies_s[0] >= 0.02


def test_response_latencies_are_bounded_per_call() -> None:
    call = session()
    for _ in range(MAX_RESPONSE_LATENCIES + 5):
        call.add_response_latency(0.5)
    assert len(call.response_latencies_s) == MAX_RESPONSE_LATENCIES


# --- per-direction latency: the runner wires the provider's and the leg's write hooks ------------------


class WritingProvider(ScriptedProvider):
    """Writes each caller chunk "to the model" after `write_delay` and says so, like a socket provider."""

    def __init__(self, script: list[ProviderEvent], write_delay: float) -> None:
        super().__init__(script)
        self.write_delay = write_delay
        self.received_at: list[float | None] = []

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        self.received_at.append(received_at)
        await asyncio.sleep(self.write_delay)
        if received_at is not None and self.on_uplink_sent is not None:
            self.on_uplink_sent(received_at)
        await super().send_audio(data, received_at)


class WritingLeg(MemoryLeg):
    """Writes the first frame of each `play` chunk "to Asterisk" at once and says so, like a transport."""

    def __init__(self) -> None:
        super().__init__()
        self.play_received_at: list[float | None] = []

    def play(self, data: bytes, received_at: float | None = None) -> None:
        self.play_received_at.append(received_at)
        if received_at is not None and self.on_downlink_sent is not None:
            self.on_downlink_sent(received_at)
        super().play(data, received_at)


async def test_both_directions_are_timed_from_the_read_to_the_write() -> None:
    leg, call = WritingLeg(), session()
    loop = asyncio.get_running_loop()
    model_read_at = loop.time() - 0.004  # the model's message was read 4 ms ago
    provider = WritingProvider([AudioOut(b"\x01\x00" * 320, "r1", received_at=model_read_at)], 0.002)
    task = asyncio.create_task(CallRunner(call, leg, provider).run())
    stamps = [loop.time() - 0.001 * n for n in range(3)]
    for stamp in stamps:
        leg.inbound_items.put_nowait(AudioIn(b"\x00\x00" * 320, received_at=stamp))
    leg.inbound_items.put_nowait(AudioIn(b"\x00\x00" * 320))  # a transport that did not stamp it
    leg.inbound_items.put_nowait(None)
    await asyncio.wait_for(task, 5)
    assert provider.received_at == [*stamps, None]
    assert leg.play_received_at == [model_read_at]
    uplink, downlink = call.uplink_latency, call.downlink_latency
    assert uplink.count == 3  # the unstamped frame is not timed
    assert 0.002 <= uplink.total / 3 < 1.0  # at least the provider's write delay; loose for a slow machine
    assert downlink.count == 1
    assert 0.004 <= downlink.total < 1.0
    # The finished call's tallies reach the manager's histograms (see test_metrics for the export).
    outcome = call_outcome(call)
    assert (outcome.uplink, outcome.downlink) == (uplink, downlink)


# --- local barge-in shares the provider's VAD when it has one --------------------------------------------


class VoiceReportingProvider(ScriptedProvider):
    """A model that classifies the caller's audio itself and reports every frame as voiced."""

    reports_caller_voice = True

    async def send_audio(self, data: bytes, received_at: float | None = None) -> None:
        if self.on_caller_voice is not None:
            self.on_caller_voice([True] * (len(data) // 640))  # 20 ms frames of SLIN16
        await super().send_audio(data, received_at)


@pytest.mark.parametrize("reports", [True, False])
async def test_local_barge_in_counts_the_providers_voice_decisions_instead_of_its_own(reports: bool) -> None:
    leg, call = MemoryLeg(), session()
    provider_type = VoiceReportingProvider if reports else ScriptedProvider
    provider = provider_type([AudioOut(b"\x01\x00" * 320, "r1")])
    task = asyncio.create_task(CallRunner(call, leg, CallPlan(provider, local_barge_in_ms=100)).run())
    for _ in range(100):
        if leg.played:
            break
        await asyncio.sleep(0.01)
    # Silence: our own VAD never hears speech in it; the reporting provider says every frame is voiced.
    silence = b"\x00\x00" * 320
    for _ in range(10):
        leg.inbound_items.put_nowait(AudioIn(silence))
    for _ in range(50):
        if leg.interrupts or len(provider.heard) == 10:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert len(provider.heard) == 10
    assert leg.interrupts == (1 if reports else 0)
    assert (provider.on_caller_voice is not None) is reports


def test_local_barge_in_runs_its_own_vad_only_for_a_provider_without_one() -> None:
    assert CallerVoice(VoiceReportingProvider([]), SLIN16).shares_provider_vad
    assert not CallerVoice(ScriptedProvider([]), SLIN16).shares_provider_vad
