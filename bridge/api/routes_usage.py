"""Usage and estimated cost: a company's own (`GET /api/usage`) and every company's
(`GET /api/admin/usage`, admin keys), by company, conversation, model or day, as JSON or CSV.

Sums come from the usage rows each call leaves when it ends (one per model that served it), so a
call's numbers are counted once, in the day (UTC) and the range of the moment it started.
"""

from __future__ import annotations

import csv
import io
from typing import Annotated, Final, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bridge.api.appkeys import COMPANY
from bridge.api.envelope import ok, parse_query
from bridge.api.fields import Instant
from bridge.api.openapi import Operation, register
from bridge.companies.usage import (
    GroupBy,
    UsageGroup,
    UsagePage,
    UsageQuery,
    UsageStore,
    UsageSums,
    iso_instant,
)

USAGE = web.AppKey("usage", UsageStore)
MAX_PAGE = 1000
CompanyId = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")]
_KEY_COLUMNS: Final[dict[GroupBy, tuple[str, ...]]] = {
    "company": ("company_id",),
    "conversation": ("company_id", "call_id", "day", "started_at"),
    "model": ("provider", "model"),
    "day": ("day",),
}
_SUM_COLUMNS: Final = (
    "input_text_tokens",
    "output_text_tokens",
    "input_audio_tokens",
    "output_audio_tokens",
    "cached_tokens",
    "model_seconds",
    "estimated_cost_usd",
    "calls",
)


class UsageParams(BaseModel):
    """A range that holds nothing (or an end before the start) is an empty table, not an error."""

    model_config = ConfigDict(extra="ignore")

    group_by: GroupBy = Field(
        "company", description="company, conversation (one row per call), model, or day (UTC)"
    )
    breakdown: Literal["model"] | None = Field(
        None, description="model: each row split per provider and model (a company's model breakdown)"
    )
    start_date: Instant | None = Field(None, description="Calls started at or after (inclusive)")
    end_date: Instant | None = Field(None, description="Calls started before (exclusive)")
    limit: int = Field(100, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)
    format: Literal["json", "csv"] = Field(
        "json", description="csv: text/csv, a header row then this page's rows"
    )


class AdminUsageParams(UsageParams):
    company_id: CompanyId | None = Field(None, description="Only this company")


class UsageSumsOut(BaseModel):
    input_text_tokens: int
    output_text_tokens: int
    input_audio_tokens: int
    output_audio_tokens: int
    cached_tokens: int = Field(description="Input tokens served from the provider's cache (a subset)")
    model_seconds: float = Field(description="Time connected to models that bill by the minute")
    estimated_cost_usd: float = Field(description="From the configured price table; 0 where unpriced")
    calls: int


class UsageRowOut(UsageSumsOut):
    """A row's keys are null where its grouping has none."""

    company_id: str | None
    call_id: str | None
    day: str | None = Field(description="YYYY-MM-DD (UTC) of the call's start")
    started_at: str | None
    provider: str | None = Field(description="The model's type (openai, gemini, ...)")
    model: str | None


class Pagination(BaseModel):
    total: int = Field(description="Rows in all, across pages")
    limit: int
    offset: int


class UsageReport(BaseModel):
    group_by: GroupBy
    breakdown: Literal["model"] | None
    rows: list[UsageRowOut]
    totals: UsageSumsOut = Field(description="Every call in the range, across pages")
    pagination: Pagination


def _sums(sums: UsageSums) -> dict[str, int | float]:
    return {
        "input_text_tokens": sums.input_text,
        "output_text_tokens": sums.output_text,
        "input_audio_tokens": sums.input_audio,
        "output_audio_tokens": sums.output_audio,
        "cached_tokens": sums.cached,
        "model_seconds": sums.model_seconds,
        "estimated_cost_usd": sums.cost_usd,
        "calls": sums.calls,
    }


def _row(group: UsageGroup) -> UsageRowOut:
    return UsageRowOut(
        company_id=group.company_id,
        call_id=group.call_id,
        day=group.day,
        started_at=iso_instant(group.started_at),
        provider=group.provider,
        model=group.model,
        **_sums(group.sums),
    )


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet would run a cell that starts like a formula: quote it as text.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _csv(params: UsageParams, rows: list[UsageRowOut]) -> web.Response:
    keys = _KEY_COLUMNS[params.group_by]
    if params.breakdown == "model" and params.group_by != "model":
        keys = (*keys, "provider", "model")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*keys, *_SUM_COLUMNS])
    for row in rows:
        values = row.model_dump()
        writer.writerow([_cell(values[key]) for key in keys] + [values[c] for c in _SUM_COLUMNS])
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="usage-{params.group_by}.csv"'},
    )


async def _answer(request: web.Request, params: UsageParams, company_id: str | None) -> web.Response:
    query = UsageQuery(
        group_by=params.group_by,
        company_id=company_id,
        since=params.start_date,
        until=params.end_date,
        by_model=params.breakdown == "model",
        limit=params.limit,
        offset=params.offset,
    )
    page: UsagePage = await request.app[USAGE].query(query)
    rows = [_row(group) for group in page.groups]
    if params.format == "csv":
        return _csv(params, rows)
    return ok(
        UsageReport(
            group_by=params.group_by,
            breakdown=params.breakdown,
            rows=rows,
            totals=UsageSumsOut(**_sums(page.totals)),
            pagination=Pagination(total=page.total, limit=params.limit, offset=params.offset),
        )
    )


async def company_usage(request: web.Request) -> web.Response:
    return await _answer(request, parse_query(request, UsageParams), request[COMPANY].id)


async def admin_usage(request: web.Request) -> web.Response:
    params = parse_query(request, AdminUsageParams)
    return await _answer(request, params, params.company_id)


_DESCRIPTION: Final = (
    "Token usage (text and audio, in and out, cached), model seconds and estimated cost, summed from "
    "each finished call's usage rows (one per model that served it); `calls` counts distinct calls. "
    "`format=csv` answers text/csv with the same columns (the group's keys first)."
)
OPERATIONS = (
    Operation(
        "GET",
        "/api/usage",
        company_usage,
        "The company's usage and estimated cost",
        "usage",
        query=UsageParams,
        response=UsageReport,
        text_response="text/csv",
        description=_DESCRIPTION,
    ),
    Operation(
        "GET",
        "/api/admin/usage",
        admin_usage,
        "Every company's usage and estimated cost",
        "admin",
        auth="admin",
        query=AdminUsageParams,
        response=UsageReport,
        text_response="text/csv",
        description=_DESCRIPTION,
    ),
)


def setup_routes(app: web.Application, usage: UsageStore) -> None:
    app[USAGE] = usage
    register(app, OPERATIONS)
