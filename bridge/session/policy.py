"""What one call must do besides converse: its key rules, guards, closing words and answering-machine plan.

Built once per call from the company's agent and the call itself (messages take the call's
`{{variables}}`, like the first message), so a SIGHUP applies to new calls only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.providers.brief import fill_placeholders
from bridge.session.dtmf import DtmfRules
from bridge.session.session import CallInfo
from bridge.settings_agents import AgentSettings


@dataclass(frozen=True, slots=True)
class CallPolicy:
    dtmf: DtmfRules = field(default_factory=DtmfRules)
    max_call_seconds: float = 0.0  # 0: no limit
    caller_silence_seconds: float = 0.0  # 0: no silence guard
    closing_message: str = ""  # said before a guard hangs up ("" or a provider that cannot speak: none)
    silence_prompt: str = ""
    amd: bool = False  # answering-machine detection was asked for: no verdict reads as "unknown"
    voicemail_message: str = ""  # on "machine": left after the beep ("" hangs up at once)
    outbound: bool = False  # the model may report an answering machine (its tool) on outbound calls


def call_policy(agent: AgentSettings, info: CallInfo) -> CallPolicy:
    rules = agent.dtmf_rules
    outbound = info.direction == "outbound"

    def text(template: str) -> str:
        return fill_placeholders(template, info.variables)[0].strip()

    return CallPolicy(
        dtmf=DtmfRules(
            mode=rules.mode,
            terminator=rules.terminator,
            timeout_ms=rules.timeout_ms,
            max_digits=rules.max_digits,
            digit_map=MappingProxyType(dict(rules.map)),
            respond=rules.respond,
            sensitive=rules.sensitive,
        ),
        max_call_seconds=float(agent.max_call_seconds),
        caller_silence_seconds=float(agent.caller_silence_seconds),
        closing_message=text(agent.closing_message),
        silence_prompt=text(agent.silence_prompt),
        amd=outbound and (agent.amd or info.amd),
        voicemail_message=text(agent.voicemail_message),
        outbound=outbound,
    )
