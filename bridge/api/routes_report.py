"""GET /api/calls/{call_id}/report: what the call was (transcript, outcome) and, when its agent has an
`analysis_prompt`, what the text model made of it (summary, post_call_analysis)."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field

from bridge.api.appkeys import CALLS, COMPANY
from bridge.api.envelope import ok
from bridge.api.openapi import Operation, register
from bridge.api.routes_calls import Status, TranscriptLineOut
from bridge.errors import BadRequest
from bridge.integrations.report import ReportService
from bridge.session.admission import valid_call_id

REPORTS = web.AppKey("reports", ReportService)

ReportStatus = Literal["call_in_progress", "not_requested", "pending", "done", "failed"]
AnalysisValue = str | int | float | bool | None


class OutcomeOut(BaseModel):
    status: Status
    disconnected_by: str | None = Field(description="caller, bot, api, timeout, error, shutdown")
    error_code: str | None
    duration_seconds: float
    amd_result: str | None
    transferred_to: str | None


class ReportOut(BaseModel):
    call_id: str
    report_status: ReportStatus = Field(
        description="call_in_progress: the call is not over; not_requested: its agent has no "
        "analysis_prompt (the report is the transcript and the outcome); pending: the text model is "
        "being asked; done; failed (see `error`)"
    )
    summary: str | None
    post_call_analysis: dict[str, AnalysisValue] | None = Field(
        description="The agent's analysis_fields, as the text model filled them"
    )
    error: str | None
    attempts: int = Field(description="How many times the text model was asked")
    transcript: list[TranscriptLineOut]
    outcome: OutcomeOut


async def get_report(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    if not valid_call_id(call_id):
        raise BadRequest("call_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
    company_id = request[COMPANY].id
    record = await request.app[CALLS].record(company_id, call_id)  # 404 unless it is theirs
    reports = request.app[REPORTS]
    stored = await reports.get(company_id, call_id)
    status: ReportStatus
    if record.status not in ("ended", "failed"):
        status = "call_in_progress"
    elif stored is not None:
        status = stored.status
    elif reports.in_progress(call_id):
        status = "pending"  # its row is being written
    else:
        status = "not_requested"
    report = ReportOut(
        call_id=record.call_id,
        report_status=status,
        summary=stored.summary if stored else None,
        post_call_analysis=dict(stored.post_call_analysis)
        if stored and stored.post_call_analysis is not None
        else None,
        error=stored.error if stored else None,
        attempts=stored.attempts if stored else 0,
        transcript=[TranscriptLineOut.model_validate(line) for line in record.transcript_api()],
        outcome=OutcomeOut(
            status=record.status,
            disconnected_by=record.disconnected_by,
            error_code=record.error_code,
            duration_seconds=record.duration_seconds,
            amd_result=record.amd_result,
            transferred_to=record.transferred_to,
        ),
    )
    return ok(report)


OPERATIONS = (
    Operation(
        "GET",
        "/api/calls/{call_id}/report",
        get_report,
        "The post-call report: transcript, outcome, summary and post_call_analysis",
        "calls",
        response=ReportOut,
        errors=(404,),
    ),
)


def setup_routes(app: web.Application, reports: ReportService) -> None:
    app[REPORTS] = reports
    register(app, OPERATIONS)
