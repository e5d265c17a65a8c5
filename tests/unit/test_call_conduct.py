"""The runner's telephony (bridge/session/conduct.py) against in-memory stand-ins: the caller's keys into
the conversation, said messages, cancel, the guards and answering machines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import MappingProxyType

import structlog

from bridge.providers.base import (
    AudioOut,
    ProviderEvent,
    ResponseAudioDone,
    ResponseDone,
    SayFinished,
    ToolCall,
)
from bridge.session.call import CallPlan, CallRunner
from bridge.session.conduct import CallConduct, ConductTimeouts
from bridge.session.dtmf import DtmfRules
from bridge.session.leg import AudioIn, DtmfIn
from bridge.session.policy import CallPolicy, call_policy
from bridge.session.session import CallInfo, Session
from bridge.session.state import CallState, EndedBy
from bridge.session.tools import ToolBox
from bridge.settings_agents import AgentSettings
from tests.helpers import utterances
from tests.unit.test_call_runner import MemoryLeg, ScriptedProvider, session

SILENT_FRAME = b"\x00\x00" * 320  # 20 ms of SLIN16 silence


class PlayingLeg(MemoryLeg):
    """A leg whose queue empties when the response ends (MemoryLeg plays forever)."""

    def __init__(self) -> None:
        super().__init__()
        self.queued = False
        self.log: list[str] = []  # what happened, in order: "play", "interrupt", "hangup(drain)"

    def play(self, data: bytes, received_at: float | None = None) -> None:
        super().play(data, received_at)
        self.queued = True
        self.log.append("play")

    def end_response(self) -> None:
        self.queued = False

    @property
    def is_playing(self) -> bool:
        return self.queued

    def interrupt(self) -> float:
        self.queued = False
        self.log.append("interrupt")
        return super().interrupt()

    async def hangup(self, *, drain: bool) -> None:
        self.log.append(f"hangup({drain})")
        await super().hangup(drain=drain)


class SayingProvider(ScriptedProvider):
    """A model that can say a given text: each say becomes one short response, then SayFinished."""

    speaks_text = True

    def __init__(self, script: list[ProviderEvent] | None = None) -> None:
        super().__init__(script or [])
        self.says: list[tuple[str, bool]] = []

    async def say(self, text: str, *, interrupt: bool) -> int:
        self.says.append((text, interrupt))
        say_id, response = len(self.says), f"say-{len(self.says)}"
        for event in (
            AudioOut(b"\x07\x00" * 320, response),
            ResponseAudioDone(response),
            ResponseDone(response),
            SayFinished(say_id),
        ):
            self.events_to_send.put_nowait(event)
        return say_id


async def until(condition: Callable[[], object], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


def start(call: Session, leg: MemoryLeg, provider: ScriptedProvider, **plan: object) -> asyncio.Task[None]:
    return asyncio.create_task(CallRunner(call, leg, CallPlan(provider, **plan)).run())  # type: ignore[arg-type]


# -- keys ------------------------------------------------------------------------------------------------


async def test_each_key_reaches_the_model_and_the_transcript() -> None:
    leg, call, provider = MemoryLeg(), session(), ScriptedProvider([])
    task = start(call, leg, provider)
    for digit in "4#":
        leg.inbound_items.put_nowait(DtmfIn(digit))
    await until(lambda: len(provider.keys) == 2)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.keys == [("DTMF: 4", True), ("DTMF: #", True)]
    assert [(line.role, line.text) for line in call.transcript] == [
        ("caller", "[DTMF 4]"),
        ("caller", "[DTMF #]"),
    ]
    assert call.record().dtmf == "4#"


async def test_collected_keys_go_at_the_terminator_or_when_the_caller_stops() -> None:
    leg, call, provider = MemoryLeg(), session(), ScriptedProvider([])
    policy = CallPolicy(dtmf=DtmfRules(mode="collect", timeout_ms=300, respond=False))
    task = start(call, leg, provider, policy=policy)
    for digit in "1234#":
        leg.inbound_items.put_nowait(DtmfIn(digit))
    await until(lambda: provider.keys)
    for digit in "56":
        leg.inbound_items.put_nowait(DtmfIn(digit))
    await until(lambda: len(provider.keys) == 2)  # no terminator: the collection's deadline passed
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.keys == [("DTMF: 1234", False), ("DTMF: 56", False)]
    assert [line.text for line in call.transcript] == ["[DTMF 1234]", "[DTMF 56]"]


async def test_a_digit_map_sends_the_meaning() -> None:
    leg, call, provider = MemoryLeg(), session(), ScriptedProvider([])
    rules = DtmfRules(mode="map", digit_map=MappingProxyType({"1": "sales", "2": "support"}))
    task = start(call, leg, provider, policy=CallPolicy(dtmf=rules))
    for digit in "29":
        leg.inbound_items.put_nowait(DtmfIn(digit))
    await until(lambda: len(provider.keys) == 2)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.keys == [("support", True), ("DTMF: 9", True)]
    assert [line.text for line in call.transcript] == ["[DTMF 2: support]", "[DTMF 9]"]


async def test_sensitive_keys_are_masked_everywhere_but_for_the_model() -> None:
    leg, call, provider = MemoryLeg(), session(), ScriptedProvider([])
    policy = CallPolicy(dtmf=DtmfRules(mode="collect", sensitive=True))
    with structlog.testing.capture_logs() as logs:
        task = start(call, leg, provider, policy=policy)
        for digit in "4921#":
            leg.inbound_items.put_nowait(DtmfIn(digit))
        await until(lambda: provider.keys)
        call.request_end(EndedBy.API)
        await asyncio.wait_for(task, 5)
    assert provider.keys == [("DTMF: 4921", True)]
    assert [line.text for line in call.transcript] == ["[DTMF ****]"]
    assert call.record().dtmf == "*****"
    logged = repr(logs)
    assert "dtmf" in logged
    assert not any(digit in logged for digit in ("4921", "'4'", "'9'", "'2'", "'1'")), logged


# -- say and cancel ----------------------------------------------------------------------------------


async def test_a_queued_say_is_spoken_after_the_bot_and_an_interrupting_one_cuts_it() -> None:
    leg, call = PlayingLeg(), session()
    provider = SayingProvider([AudioOut(b"\x01\x00" * 320, "r1")])
    task = start(call, leg, provider)
    await until(lambda: leg.played)
    call.ask_to_say("Your order ships today.", interrupt=False)
    await until(lambda: provider.says)
    assert leg.interrupts == 0  # queued: what the bot was saying goes on
    provider.events_to_send.put_nowait(AudioOut(b"\x02\x00" * 320, "r2"))  # the bot speaks again
    await until(lambda: leg.is_playing)
    call.ask_to_say("Sorry, one moment.", interrupt=True)
    await until(lambda: len(provider.says) == 2)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.says == [("Your order ships today.", False), ("Sorry, one moment.", True)]
    assert leg.interrupts == 1
    assert len(provider.truncated_at) == 1
    assert call.barge_ins == 0  # the bridge cut the bot, not the caller


async def test_a_provider_that_cannot_speak_text_says_so_on_the_session() -> None:
    call = session()
    CallRunner(call, MemoryLeg(), ScriptedProvider([]))
    assert not call.speaks_text
    other = session()
    CallRunner(other, MemoryLeg(), SayingProvider())
    assert other.speaks_text


async def test_cancel_hangs_up_at_once_and_fails_the_call() -> None:
    leg, call = PlayingLeg(), session()
    provider = SayingProvider([AudioOut(b"\x01\x00" * 320, "r1")])
    task = start(call, leg, provider)
    await until(lambda: call.state is CallState.ACTIVE and leg.played)
    call.request_end(EndedBy.API, "cancelled", cancelled=True)
    await asyncio.wait_for(task, 5)
    assert leg.hangups == [False]  # no drain: the goodbye is not owed
    record = call.record()
    assert (record.status, record.disconnected_by, record.error_code) == ("failed", "api", "cancelled")


async def test_cancel_of_a_call_nobody_runs_fails_it_too() -> None:
    call = Session(CallInfo("c2", "acme", "outbound", "+34987", "+1555"))
    call.request_end(EndedBy.API, "cancelled", cancelled=True)
    assert (call.state, call.error_code) == (CallState.FAILED, "cancelled")


# -- guards --------------------------------------------------------------------------------------------


async def test_max_call_seconds_says_the_closing_line_then_hangs_up_drained() -> None:
    leg, call, provider = PlayingLeg(), session(), SayingProvider()
    policy = CallPolicy(max_call_seconds=0.2, closing_message="We have to end now. Goodbye.")
    await asyncio.wait_for(start(call, leg, provider, policy=policy), 5)
    assert provider.says == [("We have to end now. Goodbye.", False)]
    assert leg.log == ["play", "hangup(True)"]  # the line played, then the drained hang-up
    record = call.record()
    assert (record.status, record.disconnected_by, record.error_code) == (
        "ended",
        "timeout",
        "max_call_seconds",
    )
    assert record.ended_by_guard == "max_call_seconds"


async def test_max_call_seconds_without_a_voice_for_text_just_hangs_up() -> None:
    leg, call, provider = PlayingLeg(), session(), ScriptedProvider([])
    policy = CallPolicy(max_call_seconds=0.1, closing_message="Goodbye.")
    await asyncio.wait_for(start(call, leg, provider, policy=policy), 5)
    assert leg.log == ["hangup(True)"]
    assert (call.disconnected_by, call.ended_by_guard) == (EndedBy.TIMEOUT, "max_call_seconds")


async def test_a_silent_caller_is_prompted_then_hears_the_closing_line() -> None:
    leg, call, provider = PlayingLeg(), session(), SayingProvider()
    policy = CallPolicy(
        caller_silence_seconds=0.4, silence_prompt="Are you still there?", closing_message="Bye."
    )
    task = start(call, leg, provider, policy=policy)
    for _ in range(20):  # 400 ms of silence: the prompt
        leg.inbound_items.put_nowait(AudioIn(SILENT_FRAME))
    await until(lambda: provider.says)
    await until(lambda: not leg.is_playing)
    assert not task.done()
    for _ in range(19):  # not quite a second silence
        leg.inbound_items.put_nowait(AudioIn(SILENT_FRAME))
    await until(leg.inbound_items.empty)
    await asyncio.sleep(0.05)
    assert len(provider.says) == 1
    for _ in range(5):
        leg.inbound_items.put_nowait(AudioIn(SILENT_FRAME))
    await asyncio.wait_for(task, 5)
    assert provider.says == [("Are you still there?", False), ("Bye.", False)]
    assert leg.log == ["play", "play", "hangup(True)"]
    record = call.record()
    assert (record.disconnected_by, record.error_code, record.ended_by_guard) == (
        "timeout",
        "caller_silence",
        "caller_silence",
    )


async def test_a_caller_who_speaks_is_never_prompted() -> None:
    leg, call, provider = PlayingLeg(), session(), SayingProvider()
    task = start(call, leg, provider, policy=CallPolicy(caller_silence_seconds=0.4, silence_prompt="Hello?"))
    speech = utterances(16000, [(0.0, 0.3), (0.35, 0.65), (0.7, 1.0), (1.05, 1.35)])
    for offset in range(0, len(speech), 640):
        leg.inbound_items.put_nowait(AudioIn(speech[offset : offset + 640]))
    await until(lambda: len(provider.heard) == -(-len(speech) // 640))
    await asyncio.sleep(0.05)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert provider.says == []


# -- answering machines ---------------------------------------------------------------------------------


def outbound() -> Session:
    call = Session(CallInfo("o1", "acme", "outbound", "+34987", "+1555", variables={"name": "Ana"}))
    call.attach_owner()
    return call


async def test_a_machine_gets_the_voicemail_after_the_beep_and_no_greeting() -> None:
    leg, call, provider = PlayingLeg(), outbound(), SayingProvider()
    leg.variables["amd"] = "MACHINE"
    agent = AgentSettings.model_validate({"voicemail_message": "Hello {{name}}, please call Acme back."})
    task = start(call, leg, provider, policy=call_policy(agent, call.info))
    greeting = utterances(16000, [(0.0, 0.8)])  # the machine's greeting (and its beep)
    for offset in range(0, len(greeting), 640):
        leg.inbound_items.put_nowait(AudioIn(greeting[offset : offset + 640]))
    await until(leg.inbound_items.empty)
    await asyncio.sleep(0.05)
    assert provider.says == []  # the greeting is still playing
    for _ in range(70):  # the line goes quiet
        leg.inbound_items.put_nowait(AudioIn(SILENT_FRAME))
    await asyncio.wait_for(task, 5)
    assert provider.greeted is False
    assert provider.heard == []  # the model never heard the machine: no conversation with it
    assert provider.says == [("Hello Ana, please call Acme back.", False)]
    assert leg.log == ["play", "hangup(True)"]
    record = call.record()
    assert (record.amd_result, record.disconnected_by, record.status) == ("machine", "bot", "ended")


async def test_a_machine_with_no_voicemail_message_is_hung_up_on_at_once() -> None:
    leg, call, provider = PlayingLeg(), outbound(), SayingProvider()
    leg.variables["amd"] = "MACHINE"
    await asyncio.wait_for(start(call, leg, provider, policy=CallPolicy(amd=True)), 5)
    assert (provider.greeted, provider.says, leg.log) == (False, [], ["hangup(True)"])
    assert (call.amd_result, call.disconnected_by) == ("machine", EndedBy.BOT)


async def test_a_person_gets_the_conversation() -> None:
    leg, call, provider = PlayingLeg(), outbound(), SayingProvider()
    leg.variables["amd"] = "HUMAN"
    task = start(call, leg, provider, policy=CallPolicy(amd=True, voicemail_message="Call us back."))
    leg.inbound_items.put_nowait(AudioIn(SILENT_FRAME))
    await until(lambda: provider.heard)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert (provider.greeted, provider.says, call.amd_result) == (True, [], "human")


async def test_amd_asked_for_without_a_verdict_is_unknown() -> None:
    leg, call, provider = PlayingLeg(), outbound(), SayingProvider()
    task = start(call, leg, provider, policy=CallPolicy(amd=True))
    await until(lambda: call.state is CallState.ACTIVE)
    call.request_end(EndedBy.API)
    await asyncio.wait_for(task, 5)
    assert (provider.greeted, call.amd_result) == (True, "unknown")


async def test_the_model_can_report_a_machine_itself() -> None:
    leg, call = PlayingLeg(), outbound()
    provider = SayingProvider([ToolCall("t1", "report_answering_machine", "{}", "r1")])
    agent = AgentSettings.model_validate({"provider": "echo", "voicemail_message": "Please call back."})
    tools = ToolBox(agent, outbound=True)
    assert "report_answering_machine" in [spec.name for spec in tools.specs()]
    assert "report_answering_machine" not in [spec.name for spec in ToolBox(agent).specs()]
    task = start(call, leg, provider, tools=tools, policy=call_policy(agent, call.info))
    await until(lambda: call.amd_result == "machine")
    for _ in range(70):
        leg.inbound_items.put_nowait(AudioIn(SILENT_FRAME))
    await asyncio.wait_for(task, 5)
    assert provider.tool_results == [("t1", '{"ok": true}', False)]
    assert provider.says == [("Please call back.", False)]
    assert call.disconnected_by is EndedBy.BOT


class QuietStage:
    """A runner with nothing playing, counting how often the conduct asks to be stepped."""

    def __init__(self) -> None:
        self.wakes = 0

    @property
    def bot_heard(self) -> bool:
        return False

    async def cut_playout(self) -> None:
        return None

    def wake(self) -> None:
        self.wakes += 1


async def test_only_deadlines_the_conduct_acts_on_are_asked_for() -> None:
    """A deadline `step` would ignore would have the control lane spin: e.g. the call limit passing while
    the silence guard's closing line plays, or while the bridge waits for a voicemail beep."""
    provider = SayingProvider()
    policy = CallPolicy(
        max_call_seconds=10,
        caller_silence_seconds=0.1,
        silence_prompt="Are you still there?",
        closing_message="Bye.",
    )
    conduct = CallConduct(session(), provider, QuietStage(), policy, timeouts=ConductTimeouts(last_line=20))
    assert conduct.start(100.0, {})
    assert conduct.deadline == 110.0  # the call limit
    conduct.voice([False] * 5)
    assert await conduct.step(101.0) is None  # the prompt
    conduct.voice([False] * 5)
    assert await conduct.step(102.0) is None  # the closing line, now playing
    assert provider.says == [("Are you still there?", False), ("Bye.", False)]
    assert conduct.deadline == 122.0  # the line's own bound, not the limit
    assert await conduct.step(111.0) is None  # the limit passed: still waiting for the line
    conduct.said(2)
    ending = await conduct.step(112.0)
    assert ending is not None
    assert ending.guard == "caller_silence"

    machine = CallConduct(
        outbound(), SayingProvider(), QuietStage(), CallPolicy(max_call_seconds=1, voicemail_message="Hi.")
    )
    assert not machine.start(100.0, {"amd": "MACHINE"})
    assert await machine.step(100.0) is None  # waiting for the beep
    assert machine.deadline == 120.0  # the beep wait, not the call limit at 101
