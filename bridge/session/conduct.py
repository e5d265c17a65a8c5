"""What a call does besides converse: the caller's keys into the conversation, messages the API asks the
bot to say, the guards (call length, caller silence) and the answering-machine outcome.

`CallConduct` is one call's part of the `CallRunner`: the uplink hands it the caller's keys and voice
decisions, the downlink the end of each said text, and the control lane calls `step` whenever it is woken
(`Session.control_waiting`) or a deadline of ours passes. It never ends the call itself: `step` returns
the ending and the runner's lanes do the rest (drain, hang up, record).

A call that ends by a guard or for an answering machine says its last line first (closing message,
voicemail message) and ends once that response is over; the caller's audio no longer reaches the model
meanwhile, so nothing can start a new turn. A provider that cannot speak text just ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from bridge.logging import get_logger
from bridge.providers.base import Provider
from bridge.session.dtmf import DtmfCollector, KeyInput, shown
from bridge.session.guards import QuietWait, SilenceGuard, SilenceVerdict, amd_result
from bridge.session.policy import CallPolicy
from bridge.session.session import EndRequest, Session
from bridge.session.state import EndedBy

VOICEMAIL_QUIET_MS = 1200  # the greeting and its beep are over once the line is this quiet


@dataclass(frozen=True, slots=True)
class ConductTimeouts:
    last_line: float = 20.0  # a closing or voicemail line plays within this, or the call ends anyway
    beep_wait: float = 20.0  # a voicemail greeting gets this long to finish before the message starts


class Stage(Protocol):
    """What the conduct needs of the runner."""

    @property
    def bot_heard(self) -> bool:
        """The caller would hear the bot now (a response is open or audio is queued)."""
        ...

    async def cut_playout(self) -> None:
        """Stop what the bot is saying at once (flush the caller's queue, cut the model's response)."""
        ...

    def wake(self) -> None:
        """Run `step` soon (from the control lane)."""
        ...


class CallConduct:
    def __init__(
        self,
        session: Session,
        provider: Provider,
        stage: Stage,
        policy: CallPolicy,
        *,
        timeouts: ConductTimeouts | None = None,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.session = session
        self.provider = provider
        self.policy = policy
        self.timeouts = timeouts or ConductTimeouts()
        self._stage = stage
        self._log = log or get_logger("call")
        self._keys = DtmfCollector(policy.dtmf)
        seconds = policy.caller_silence_seconds
        self._silence = SilenceGuard(seconds * 1000) if seconds > 0 else None
        self._limit_at: float | None = None  # loop time of max_call_seconds
        self._prompt_due = False
        self._guard_due: EndRequest | None = None
        self._machine_due = False  # an answering machine was detected; its handling starts at the next step
        self._machine = False  # from the detection on, the model never hears the line again
        self._beep: QuietWait | None = None  # waiting for the voicemail greeting to finish
        self._beep_by: float | None = None
        self._beep_over = False
        self._closing: EndRequest | None = None  # the call ends once its last line has played
        self._closing_say: int | None = None
        self._closing_by: float | None = None
        self._said: set[int] = set()

    # -- set-up ------------------------------------------------------------------------------------------

    def start(self, now: float, call_variables: Mapping[str, str]) -> bool:
        """The leg started (the call answered): read the AMD verdict, arm the call limit.

        Returns whether the model should greet: not when an answering machine answered.
        """
        verdict = amd_result(call_variables)
        if verdict is None and self.policy.amd:
            verdict = "unknown"  # asked for, but the dialplan passed none (app_amd missing?)
        if verdict is not None:
            self.session.amd_result = verdict
            self._log.info("amd_result", result=verdict, source="asterisk")
        if self.policy.max_call_seconds > 0:
            self._limit_at = now + self.policy.max_call_seconds
        if verdict == "machine":
            self._machine_due = self._machine = True
            self._stage.wake()
            return False
        return True

    # -- what the lanes report ---------------------------------------------------------------------------

    @property
    def feeding_model(self) -> bool:
        """Whether the caller's audio should reach the model: not once the call is on its last line."""
        return self._closing is None and not self._machine

    async def key(self, digit: str, now: float) -> None:
        """A key the caller pressed (chan_websocket DTMF_END, AudioSocket 0x03)."""
        rules = self.policy.dtmf
        key = shown(digit, sensitive=rules.sensitive)
        self.session.dtmf_digits += key
        self._log.info("dtmf", digit=key)
        if self._silence is not None:
            self._silence.caller_active()
        if not self.feeding_model:
            return
        for key_input in self._keys.press(digit, now):
            await self._send_keys(key_input)
        if self._keys.deadline is not None:
            self._stage.wake()  # the control lane must learn the collection's new deadline

    def voice(self, voiced: Sequence[bool]) -> None:
        """The caller's voice decisions for the frames just received (one per 20 ms)."""
        if self._beep is not None:
            if self._beep.hear(voiced):
                self._beep = None
                self._beep_over = True
                self._stage.wake()
            return
        if self._silence is None or not self.feeding_model:
            return
        verdict = self._silence.hear(voiced, bot_speaking=self._stage.bot_heard)
        if verdict is SilenceVerdict.PROMPT:
            self._prompt_due = True
            self._stage.wake()
        elif verdict is SilenceVerdict.GIVE_UP:
            self._guard_due = EndRequest(EndedBy.TIMEOUT, "caller_silence", guard="caller_silence")
            self._stage.wake()

    def said(self, say_id: int) -> None:
        """The response that spoke say `say_id` is over."""
        self._said.add(say_id)
        if say_id == self._closing_say:
            self._stage.wake()

    def machine_reported(self) -> None:
        """The model heard an answering machine (its tool)."""
        if self._closing is None and not self._machine:
            self.session.amd_result = "machine"
            self._log.info("amd_result", result="machine", source="model")
            self._machine_due = self._machine = True
            self._stage.wake()

    # -- the control lane ----------------------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        """The next loop time `step` must run even if nothing wakes it (only what `step` would act on:
        a deadline it would ignore would have the control lane spin until it is over)."""
        if self._closing is not None:
            return self._closing_by
        if self._machine:
            return self._beep_by
        due = [t for t in (self._keys.deadline, self._limit_at) if t is not None]
        return min(due) if due else None

    async def step(self, now: float) -> EndRequest | None:
        """Do what is due; returns how the call ends when it is time."""
        if not self.feeding_model:
            self._keys.flush()  # keys half entered when the last line began: the model is done listening
        for key_input in self._keys.expire(now):
            await self._send_keys(key_input)
        await self._say_requested()
        if self._closing is not None:
            return self._closing_outcome(now)
        if self._machine_due:
            self._machine_due = False
            ending = await self._answering_machine(now)
            if ending is not None:
                return ending
        if self._beep_over or (self._beep_by is not None and now >= self._beep_by):
            self._beep, self._beep_by, self._beep_over = None, None, False
            return await self._close(EndRequest(EndedBy.BOT), self.policy.voicemail_message, now)
        if self._beep is not None:
            return None
        if self._limit_at is not None and now >= self._limit_at:
            self._limit_at = None
            self._log.info("guard_fired", guard="max_call_seconds")
            limit = EndRequest(EndedBy.TIMEOUT, "max_call_seconds", guard="max_call_seconds")
            return await self._close(limit, self.policy.closing_message, now)
        if self._guard_due is not None:
            self._log.info("guard_fired", guard="caller_silence")
            return await self._close(self._guard_due, self.policy.closing_message, now)
        if self._prompt_due:
            self._prompt_due = False
            if self.provider.speaks_text and self.policy.silence_prompt:
                self._log.info("silence_prompt")
                await self.provider.say(self.policy.silence_prompt, interrupt=False)
        return None

    async def _say_requested(self) -> None:
        requests = self.session.say_requests
        while requests:
            request = requests.popleft()
            if not self.feeding_model or not self.provider.speaks_text:
                self._log.info("say_dropped", reason="call_ending")
                continue
            if request.interrupt:
                await self._stage.cut_playout()
            await self.provider.say(request.text, interrupt=request.interrupt)

    async def _send_keys(self, key_input: KeyInput) -> None:
        self.session.add_line("caller", key_input.transcript)
        self._log.info("dtmf_input", keys=key_input.shown, respond=key_input.respond)
        await self.provider.send_dtmf(key_input.text, respond=key_input.respond)

    async def _answering_machine(self, now: float) -> EndRequest | None:
        """Leave the voicemail message once the greeting is over, or hang up at once."""
        await self._stage.cut_playout()  # whatever the model was telling the machine
        if self.policy.voicemail_message and self.provider.speaks_text:
            self._beep = QuietWait(VOICEMAIL_QUIET_MS)
            self._beep_by = now + self.timeouts.beep_wait
            return None
        return EndRequest(EndedBy.BOT)

    async def _close(self, ending: EndRequest, line: str, now: float) -> EndRequest | None:
        """End after `line` has been said (at once if there is none, or it cannot be said)."""
        self._closing = ending
        if not line or not self.provider.speaks_text:
            return ending
        self._closing_say = await self.provider.say(line, interrupt=False)
        self._closing_by = now + self.timeouts.last_line
        return self._closing_outcome(now)

    def _closing_outcome(self, now: float) -> EndRequest | None:
        ending = self._closing
        if ending is None or self._closing_say is None or self._closing_say in self._said:
            return ending
        if self._closing_by is not None and now >= self._closing_by:
            self._log.warning("last_line_timeout", seconds=self.timeouts.last_line)
            return ending
        return None
