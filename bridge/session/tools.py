"""The functions a voice agent may call: the built-in call controls and the company's HTTP tools.

A tool never stalls the call: it runs beside the conversation, bounded by its timeout,
and whatever goes wrong goes back to the model as an error result it can talk about.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from bridge.logging import get_logger
from bridge.providers.base import ToolCall, ToolSpec
from bridge.session.control import CallController, ControlError
from bridge.session.session import Session
from bridge.settings_agents import AgentSettings, HttpTool

MAX_OUTPUT_CHARS = 16_000  # what goes back to the model; a huge CRM reply would only cost tokens
DTMF_DIGITS = re.compile(r"^[0-9A-D*#]{1,32}$")


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    output: str  # JSON text for the model
    respond: bool = True  # let the model speak about the result
    end_call: bool = False  # hang up once the current response (the goodbye) has played
    transfer_to: str | None = None  # transfer the caller once the current response has played
    answering_machine: bool = False  # the model hears a machine: leave the voicemail message, hang up


def _error(message: str) -> str:
    return json.dumps({"ok": False, "error": message})


def _arguments(call: ToolCall) -> dict[str, Any] | str:
    """The call's arguments, or the error result to send back."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        return _error("the arguments are not valid JSON")
    if not isinstance(arguments, dict):
        return _error("the arguments must be a JSON object")
    return arguments


ANSWERING_MACHINE_TOOL = ToolSpec(
    "report_answering_machine",
    "Call this at once, saying nothing, if the call was answered by an answering machine or voicemail "
    "greeting instead of a person. The bridge then leaves the voicemail message (or hangs up).",
    {"type": "object", "properties": {}},
)


def builtin_specs(agent: AgentSettings, *, outbound: bool = False) -> list[ToolSpec]:
    specs = []
    if agent.end_call_tool:
        specs.append(
            ToolSpec(
                "end_call",
                "Hang up the call. Say goodbye first; the call ends once your goodbye has been heard.",
                {"type": "object", "properties": {"reason": {"type": "string"}}},
            )
        )
    if agent.transfer_targets:
        specs.append(
            ToolSpec(
                "transfer_call",
                "Transfer the caller to a person or department. Tell the caller first.",
                {
                    "type": "object",
                    "properties": {"to": {"type": "string", "enum": list(agent.transfer_targets)}},
                    "required": ["to"],
                },
            )
        )
    if agent.dtmf_tool:
        specs.append(
            ToolSpec(
                "send_dtmf",
                "Press telephone keys (DTMF) on the call, e.g. to navigate a phone menu.",
                {
                    "type": "object",
                    "properties": {"digits": {"type": "string", "pattern": "^[0-9A-D*#]{1,32}$"}},
                    "required": ["digits"],
                },
            )
        )
    if outbound:  # only a call we placed can reach a machine
        specs.append(ANSWERING_MACHINE_TOOL)
    return specs


class ToolBox:
    def __init__(
        self,
        agent: AgentSettings,
        *,
        controller: CallController | None = None,
        http: aiohttp.ClientSession | None = None,
        outbound: bool = False,
    ) -> None:
        self._agent = agent
        self._controller = controller
        self._http = http
        self._outbound = outbound
        self._http_tools: Mapping[str, HttpTool] = {tool.name: tool for tool in agent.tools}
        self._log = get_logger("tools")

    def specs(self) -> list[ToolSpec]:
        return builtin_specs(self._agent, outbound=self._outbound) + [
            ToolSpec(tool.name, tool.description, tool.parameters) for tool in self._agent.tools
        ]

    def ending(self, call: ToolCall) -> ToolOutcome | None:
        """end_call, transfer_call and report_answering_machine, decided at once (they act after the
        current response, or at once)."""
        if call.name == "end_call" and self._agent.end_call_tool:
            self._log.info("tool_called", tool=call.name)
            return ToolOutcome(json.dumps({"ok": True}), respond=False, end_call=True)
        if call.name == ANSWERING_MACHINE_TOOL.name and self._outbound:
            self._log.info("tool_called", tool=call.name)
            return ToolOutcome(json.dumps({"ok": True}), respond=False, answering_machine=True)
        if call.name == "transfer_call" and self._agent.transfer_targets:
            self._log.info("tool_called", tool=call.name)
            arguments = _arguments(call)
            if isinstance(arguments, str):
                return ToolOutcome(arguments)
            return self._transfer(arguments)
        return None

    async def run(self, call: ToolCall, session: Session) -> ToolOutcome:
        """Any other tool: may take up to its timeout; runs beside the conversation."""
        arguments = _arguments(call)
        if isinstance(arguments, str):
            return ToolOutcome(arguments)
        self._log.info("tool_called", tool=call.name)
        if call.name == "send_dtmf" and self._agent.dtmf_tool:
            return await self._dtmf(arguments, session)
        tool = self._http_tools.get(call.name)
        if tool is None:
            return ToolOutcome(_error(f"there is no tool named {call.name!r}"))
        return ToolOutcome(await self._post(tool, arguments))

    def _transfer(self, arguments: dict[str, Any]) -> ToolOutcome:
        target = arguments.get("to")
        if target not in self._agent.transfer_targets:
            return ToolOutcome(_error(f"transfers go only to {', '.join(self._agent.transfer_targets)}"))
        if self._controller is None:
            return ToolOutcome(_error("call transfer is not available on this line"))
        return ToolOutcome(json.dumps({"ok": True}), respond=False, transfer_to=str(target))

    async def _dtmf(self, arguments: dict[str, Any], session: Session) -> ToolOutcome:
        digits = arguments.get("digits")
        if not isinstance(digits, str) or not DTMF_DIGITS.match(digits):
            return ToolOutcome(_error("digits must be 1 to 32 of 0-9, A-D, * and #"))
        if self._controller is None:
            return ToolOutcome(_error("sending keys is not available on this line"))
        try:
            await self._controller.send_dtmf(session.channel_ref(), digits)
        except ControlError as exc:
            return ToolOutcome(_error(f"the keys could not be sent ({exc.code})"))
        return ToolOutcome(json.dumps({"ok": True, "sent": digits}))

    async def _post(self, tool: HttpTool, arguments: dict[str, Any]) -> str:
        if self._http is None:
            return _error("HTTP tools are not available")
        headers = {name: value.get_secret_value() for name, value in tool.headers.items()}
        try:
            async with asyncio.timeout(tool.timeout_seconds):
                async with self._http.post(tool.url, json=arguments, headers=headers) as reply:
                    body = await reply.text()
                    if reply.status >= 400:
                        self._log.warning("tool_failed", tool=tool.name, status=reply.status)
                        return _error(f"the service answered HTTP {reply.status}")
        except TimeoutError:
            self._log.warning("tool_timeout", tool=tool.name, timeout=tool.timeout_seconds)
            return _error(f"the service did not answer within {tool.timeout_seconds:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            self._log.warning("tool_failed", tool=tool.name, error=type(exc).__name__)
            return _error("the service could not be reached")
        try:
            json.loads(body)
        except ValueError:
            return _error("the service did not answer with JSON")
        if len(body) > MAX_OUTPUT_CHARS:
            return json.dumps({"ok": True, "partial_result": body[:MAX_OUTPUT_CHARS]})
        return body
