"""What ends or steers a call besides the conversation: the caller-silence guard, the wait for a voicemail
beep, and Asterisk's answering-machine verdict. Pure: VAD decisions and values in, decisions out.

Silence is counted in VAD frames of the caller's audio, never on a clock: a line that carries no audio
(or a caller whose keys are being read) cannot look silent, and the model's own events play no part.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from typing import Literal

FRAME_MS = 20  # one VAD decision per 20 ms caller frame
SPEECH_MS = 100  # voiced this long in a row is the caller talking (shorter: clicks, line noise)

AmdResult = Literal["human", "machine", "unknown"]
# Asterisk's AMDSTATUS: HUMAN, MACHINE, NOTSURE, HANGUP (the callee hung up while AMD listened).
AMD_STATUSES: Mapping[str, AmdResult] = {"HUMAN": "human", "MACHINE": "machine"}
AMD_VARIABLES = frozenset({"amd", "amdstatus", "bridge_amd", "bridge_amd_status"})


def amd_result(variables: Mapping[str, str]) -> AmdResult | None:
    """The answering-machine verdict the dialplan passed (`amd`, `AMDSTATUS`, inherited `_`/`__` forms
    too); None when it passed none. Anything but HUMAN or MACHINE is `unknown`."""
    for name, value in variables.items():
        if name.lstrip("_").lower() in AMD_VARIABLES:
            return AMD_STATUSES.get(value.strip().upper(), "unknown")
    return None


class SilenceVerdict(enum.Enum):
    PROMPT = "prompt"  # the first silence: ask whether the caller is still there
    GIVE_UP = "give_up"  # the second: end the call


class SilenceGuard:
    """The caller said nothing for `limit_ms` of their audio while the bot was quiet: prompt, then give up.

    Frames heard while the bot speaks count neither way (they may be the bot's own echo). Caller speech
    (or a key) starts over: the next silence is a first one again.
    """

    def __init__(self, limit_ms: float, frame_ms: int = FRAME_MS, speech_ms: int = SPEECH_MS) -> None:
        if limit_ms <= 0:
            raise ValueError("limit_ms must be positive")
        self._limit_frames = max(1, math.ceil(limit_ms / frame_ms))
        self._speech_frames = max(1, math.ceil(speech_ms / frame_ms))
        self._silent = 0
        self._voiced_run = 0
        self._prompted = False
        self._spent = False

    @property
    def prompted(self) -> bool:
        return self._prompted

    def hear(self, voiced: Sequence[bool], *, bot_speaking: bool) -> SilenceVerdict | None:
        """Count these frames' decisions; the verdict they complete, if any (at most one per call of it)."""
        if self._spent or bot_speaking:
            return None
        for frame_voiced in voiced:
            if frame_voiced:
                self._voiced_run += 1
                if self._voiced_run >= self._speech_frames:
                    self.caller_active()
                continue
            self._voiced_run = 0
            self._silent += 1
            if self._silent >= self._limit_frames:
                self._silent = 0
                if self._prompted:
                    self._spent = True
                    return SilenceVerdict.GIVE_UP
                self._prompted = True
                return SilenceVerdict.PROMPT
        return None

    def caller_active(self) -> None:
        """The caller spoke or pressed a key: silence starts over, and the next one is a first one."""
        self._silent = 0
        self._voiced_run = 0
        self._prompted = False


class QuietWait:
    """Waits for the line to go quiet for `quiet_ms` (a voicemail greeting and its beep are over)."""

    def __init__(self, quiet_ms: float, frame_ms: int = FRAME_MS) -> None:
        self._quiet_frames = max(1, math.ceil(quiet_ms / frame_ms))
        self._quiet = 0
        self.frames = 0  # every frame heard, to bound the wait by the audio itself

    def hear(self, voiced: Sequence[bool]) -> bool:
        """Whether the line has now been quiet long enough."""
        for frame_voiced in voiced:
            self.frames += 1
            self._quiet = 0 if frame_voiced else self._quiet + 1
        return self._quiet >= self._quiet_frames
