"""Post-call reports: once a call is over and its record saved, its agent's `analysis_prompt` runs once
on the `[analysis]` text model (OpenAI-compatible chat completions, a JSON-schema answer holding a
`summary` and the agent's `analysis_fields`), and the result is stored in `call_reports`.

Off the call path: a background task per finished call, bounded attempts with backoff, each with the
configured timeout. The row is written "pending" before the model is asked, so a report a crash cut
short is asked again at the next start (`resume`). A call whose agent has no prompt gets no row and no
model call: its report is the transcript and the outcome.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

import aiohttp

from bridge.directory import Directory
from bridge.logging import get_logger
from bridge.session.session import Session
from bridge.settings import AgentSettings, AnalysisSettings
from bridge.store.records import CallRecord, CallStore, StoreWrite
from bridge.store.reports import AnalysisValue, ReportStore, StoredReport

ATTEMPTS: Final = 3
RETRY_DELAY_SECONDS: Final = 2.0  # doubled after each failed attempt
MAX_ERROR_CHARS: Final = 300
_NOT_RETRYABLE: Final = frozenset({400, 401, 403, 404, 422})
_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,),
    "number": (int, float),
    "integer": (int,),
    "boolean": (bool,),
}


class AnalysisFailed(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message[:MAX_ERROR_CHARS])
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Analysis:
    summary: str
    fields: Mapping[str, AnalysisValue]


def response_format(fields: Mapping[str, str]) -> dict[str, Any]:
    """The JSON schema the model must answer in: a summary plus the agent's declared fields."""
    properties: dict[str, Any] = {"summary": {"type": "string", "description": "A short summary of the call"}}
    properties.update({name: {"type": kind} for name, kind in fields.items() if name != "summary"})
    schema = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {"name": "post_call_report", "strict": True, "schema": schema},
    }


def call_text(record: CallRecord) -> str:
    """The transcript and the outcome, as the text model reads them."""
    lines = [f"{'Caller' if line.role == 'caller' else 'Agent'}: {line.text}" for line in record.transcript]
    outcome = [
        f"direction: {record.direction}",
        f"status: {record.status}",
        f"disconnected_by: {record.disconnected_by}",
        f"error_code: {record.error_code}",
        f"duration_seconds: {record.duration_seconds}",
    ]
    if record.call_objective:
        outcome.append(f"call_objective: {record.call_objective}")
    if record.amd_result:
        outcome.append(f"answering_machine_detection: {record.amd_result}")
    if record.transferred_to:
        outcome.append(f"transferred_to: {record.transferred_to}")
    transcript = "\n".join(lines) if lines else "(nothing was said)"
    return f"Transcript:\n{transcript}\n\nOutcome:\n" + "\n".join(outcome)


def parse_analysis(body: Any, fields: Mapping[str, str]) -> Analysis:
    """The chat completion's JSON content, checked against the declared fields."""
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        raise AnalysisFailed("the text model's answer has no choices[0].message", retryable=True) from None
    if isinstance(message, dict) and message.get("refusal"):
        raise AnalysisFailed(f"the text model refused: {message['refusal']}", retryable=False)
    content = message.get("content") if isinstance(message, dict) else None
    try:
        data = json.loads(content) if isinstance(content, str) else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("summary"), str):
        raise AnalysisFailed("the text model's content is not the requested JSON", retryable=True)
    values: dict[str, AnalysisValue] = {}
    for name, kind in fields.items():
        value = data.get(name)
        if name == "summary":
            continue
        if (isinstance(value, bool) and kind != "boolean") or not isinstance(value, _JSON_TYPES[kind]):
            raise AnalysisFailed(f"the text model's field {name!r} is not a {kind}", retryable=True)
        values[name] = cast(AnalysisValue, value)
    return Analysis(data["summary"], values)


class ReportService:
    def __init__(
        self,
        reports: ReportStore,
        calls: CallStore,
        directory: Callable[[], Directory],
        settings: AnalysisSettings,
        http: aiohttp.ClientSession,
        *,
        saved: Callable[[], Awaitable[None]] | None = None,
        agents: Callable[[str, str], AgentSettings | None] | None = None,
        finished: Callable[[str, str], StoreWrite] | None = None,
        attempts: int = ATTEMPTS,
        retry_delay_seconds: float = RETRY_DELAY_SECONDS,
    ) -> None:
        self.reports = reports
        self.calls = calls
        self.directory = directory
        self.settings = settings
        self.http = http
        self._saved = saved  # waits for the record saves issued so far (the call's final one)
        self._agents = agents  # (company_id, agent_id) -> the profile of the agent that ran the call
        # (call_id, company_id): rows to commit with the final report (the webhook outbox's call_completed)
        self._finished = finished
        self.attempts = attempts
        self.retry_delay_seconds = retry_delay_seconds
        self._running: dict[str, asyncio.Task[None]] = {}
        self._log = get_logger("reports")

    def agent_of(self, company_id: str, agent_id: str = "") -> AgentSettings | None:
        """The agent that ran the call ("": the company's default); None when it no longer exists."""
        if self._agents is not None:
            return self._agents(company_id, agent_id)
        company = self.directory().companies.get(company_id)
        return company.settings.agent if company is not None else None

    def requested(self, company_id: str, agent_id: str = "") -> bool:
        """Whether the call gets an analysis (its agent has a prompt)."""
        agent = self.agent_of(company_id, agent_id)
        return agent is not None and bool(agent.analysis_prompt.strip())

    def in_progress(self, call_id: str) -> bool:
        return call_id in self._running

    def track(self, session: Session) -> None:
        session.on_end(self._ended)

    def will_report(self, session: Session) -> bool:
        """Whether this call gets an analysis once it is over (the webhook outbox's call_completed waits)."""
        # A call that never had media said nothing: there is nothing to analyse.
        return session.connected_at is not None and self.requested(session.company_id, session.info.agent_id)

    def _also(self, call_id: str, company_id: str) -> StoreWrite | None:
        return None if self._finished is None else self._finished(call_id, company_id)

    def _ended(self, session: Session) -> None:
        if self.will_report(session):
            self._start(session.call_id, session.company_id)

    async def resume(self, untouched_since: float | None = None) -> int:
        """Ask again for every report a previous process left pending; how many. `untouched_since`
        (a fleet, where other live nodes have reports of their own in hand): only those not updated
        since then, whose node is gone."""
        pending = await self.reports.all_pending()
        for report in pending:
            if untouched_since is None or report.updated_at < untouched_since:
                self._start(report.call_id, report.company_id)
        return len(pending)

    async def get(self, company_id: str, call_id: str) -> StoredReport | None:
        return await self.reports.get(company_id, call_id)

    def _start(self, call_id: str, company_id: str) -> None:
        if call_id in self._running:
            return
        task = asyncio.ensure_future(self._run(call_id, company_id))
        self._running[call_id] = task
        task.add_done_callback(lambda _: self._running.pop(call_id, None))

    async def _run(self, call_id: str, company_id: str) -> None:
        try:
            if self._saved is not None:
                await self._saved()
            record = await self.calls.get(company_id, call_id)
            if record is None:
                return
            await self.reports.pending(call_id, company_id, time.time())
            agent = self.agent_of(company_id, record.agent_id or "")
            if agent is None or not agent.analysis_prompt.strip():
                await self.reports.failed(
                    call_id,
                    "the agent no longer has an analysis_prompt",
                    time.time(),
                    self._also(call_id, company_id),
                )
                return
            await self._analyse(record, agent)
        except asyncio.CancelledError:
            raise  # shutdown: the row stays pending and the next start asks again
        except Exception as exc:  # the store failing must not leave an unobserved task error
            self._log.error("report_error", call_id=call_id, error=type(exc).__name__)

    async def _analyse(self, record: CallRecord, agent: AgentSettings) -> None:
        call_id = record.call_id
        for attempt in range(1, self.attempts + 1):
            try:
                analysis = await self._ask(record, agent)
            except AnalysisFailed as exc:
                await self.reports.attempted(call_id, str(exc), time.time())
                if not exc.retryable or attempt == self.attempts:
                    await self.reports.failed(
                        call_id, str(exc), time.time(), self._also(call_id, record.company_id)
                    )
                    self._log.warning("report_failed", call_id=call_id, attempts=attempt, error=str(exc))
                    return
                await asyncio.sleep(self.retry_delay_seconds * 2 ** (attempt - 1))
                continue
            await self.reports.attempted(call_id, None, time.time())
            await self.reports.done(
                call_id,
                analysis.summary,
                analysis.fields,
                time.time(),
                self._also(call_id, record.company_id),
            )
            self._log.info("report_done", call_id=call_id, attempts=attempt)
            return

    async def _ask(self, record: CallRecord, agent: AgentSettings) -> Analysis:
        body = {
            "model": self.settings.model,
            "messages": [
                {"role": "system", "content": agent.analysis_prompt},
                {"role": "user", "content": call_text(record)},
            ],
            "response_format": response_format(agent.analysis_fields),
        }
        headers = {"Authorization": f"Bearer {self.settings.api_key.get_secret_value()}"}
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout_seconds)
        try:
            async with self.http.post(
                self.settings.url, json=body, headers=headers, timeout=timeout
            ) as reply:
                text = await reply.text()
                if reply.status != 200:
                    raise AnalysisFailed(
                        f"the text model answered {reply.status}: {text[:200]}",
                        retryable=reply.status not in _NOT_RETRYABLE,
                    )
                try:
                    answer = json.loads(text)
                except ValueError:
                    raise AnalysisFailed("the text model's answer is not JSON", retryable=True) from None
        except TimeoutError:
            raise AnalysisFailed(
                f"the text model did not answer within {self.settings.timeout_seconds:g} s", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise AnalysisFailed(
                f"cannot reach the text model: {type(exc).__name__}", retryable=True
            ) from None
        return parse_analysis(answer, agent.analysis_fields)

    async def close(self) -> None:
        running = list(self._running.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
