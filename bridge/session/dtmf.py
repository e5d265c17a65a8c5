"""The caller's keys (DTMF) as conversation input, by the agent's `dtmf_rules`. Pure: keys and times in,
inputs out; no clock inside (the runner asks `deadline` and calls `expire` when it passes).

- `pass_through`: each key goes to the model at once ("DTMF: 4").
- `collect`: keys gather until the terminator (`#`), `max_digits`, or `timeout_ms` without a new key; then
  one input ("DTMF: 1234", the terminator left out). A terminator alone passes through ("DTMF: #").
- `map`: a key's meaning from the map goes to the model ("sales"); a key the map does not name passes
  through ("DTMF: 5") so the model can say it is not an option.

`sensitive` (card numbers, PINs): the model still gets the digits, but everything shown to people
(transcript, record, logs) has each key replaced by `*`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

DTMF_KEYS = frozenset("0123456789*#ABCD")
MASK = "*"
DtmfMode = Literal["pass_through", "collect", "map"]


@dataclass(frozen=True, slots=True)
class DtmfRules:
    mode: DtmfMode = "pass_through"
    terminator: str = "#"  # collect: ends the input at once ("" for none)
    timeout_ms: int = 3000  # collect: no new key this long ends the input
    max_digits: int = 16  # collect: this many keys end the input
    digit_map: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    respond: bool = True  # ask the model to answer each input
    sensitive: bool = False

    def __post_init__(self) -> None:
        if self.max_digits < 1 or self.timeout_ms < 1:
            raise ValueError("max_digits and timeout_ms must be positive")
        if self.terminator and self.terminator not in DTMF_KEYS:
            raise ValueError(f"terminator must be one DTMF key, got {self.terminator!r}")


@dataclass(frozen=True, slots=True)
class KeyInput:
    """One input for the model."""

    digits: str  # the keys it stands for, as pressed (the terminator left out)
    text: str  # what the model gets
    shown: str  # the keys as logs show them (masked when sensitive)
    respond: bool
    meaning: str = ""  # map: what the key stands for (kept out of the transcript when sensitive)

    @property
    def transcript(self) -> str:
        """The caller's transcript line for it: "[DTMF 4]", "[DTMF ****]", "[DTMF 1: sales]"."""
        return f"[DTMF {self.shown}: {self.meaning}]" if self.meaning else f"[DTMF {self.shown}]"


def shown(keys: str, *, sensitive: bool) -> str:
    """`keys` as people may see them."""
    return MASK * len(keys) if sensitive else keys


class DtmfCollector:
    """Feed it the caller's keys; it says what the model gets, and when."""

    def __init__(self, rules: DtmfRules) -> None:
        self.rules = rules
        self._buffer = ""
        self._deadline: float | None = None

    @property
    def deadline(self) -> float | None:
        """When a collected input is due if no key comes first (same clock as `now`); None: none waiting."""
        return self._deadline

    @property
    def pending(self) -> str:
        """Keys collected and not yet sent."""
        return self._buffer

    def press(self, key: str, now: float) -> list[KeyInput]:
        """A key the caller pressed at `now` (seconds); unknown keys are ignored."""
        key = key.upper()
        if len(key) != 1 or key not in DTMF_KEYS:
            return []
        rules = self.rules
        if rules.mode == "pass_through":
            return [self._input(key)]
        if rules.mode == "map":
            meaning = rules.digit_map.get(key)
            if meaning is None:
                return [self._input(key)]
            if rules.sensitive:
                return [KeyInput(key, meaning, MASK, rules.respond)]
            return [KeyInput(key, meaning, key, rules.respond, meaning=meaning)]
        if key == rules.terminator:
            return self.flush() if self._buffer else [self._input(key)]
        self._buffer += key
        if len(self._buffer) >= rules.max_digits:
            return self.flush()
        self._deadline = now + rules.timeout_ms / 1000
        return []

    def expire(self, now: float) -> list[KeyInput]:
        """The collected input, if its deadline has passed at `now`."""
        if self._deadline is None or now < self._deadline:
            return []
        return self.flush()

    def flush(self) -> list[KeyInput]:
        """Whatever was collected, now (e.g. at the terminator)."""
        keys, self._buffer, self._deadline = self._buffer, "", None
        return [self._input(keys)] if keys else []

    def _input(self, keys: str) -> KeyInput:
        sensitive = self.rules.sensitive
        return KeyInput(keys, f"DTMF: {keys}", shown(keys, sensitive=sensitive), self.rules.respond)
