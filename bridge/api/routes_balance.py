"""Prepaid balances: the company's own (GET /api/balance) and the operator's view and top-ups
(GET /api/admin/companies/{company_id}/balance, POST .../credit). The balance is the sum of the
ledger shown beside it; an unknown company is 404."""

from __future__ import annotations

from typing import Annotated, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from bridge.api.appkeys import COMPANY, DIRECTORY
from bridge.api.envelope import ok, parse_body, parse_query
from bridge.api.fields import NO_CONTROL_PATTERN
from bridge.api.openapi import Operation, register
from bridge.companies.balance import Balances, EntryKind, LedgerEntry, LedgerPage, iso_utc
from bridge.directory import Company
from bridge.errors import NotFound

BALANCES = web.AppKey("balances", Balances)
COMPANY_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,128}$"
MAX_PAGE: Final = 100
MAX_CREDIT_USD: Final = 1_000_000.0


class LedgerQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


class CreditIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount_usd: float = Field(ge=0.000001, le=MAX_CREDIT_USD, description="The top-up, in USD (> 0)")
    note: Annotated[str, StringConstraints(max_length=500, pattern=NO_CONTROL_PATTERN)] = Field(
        "", description="Why (an invoice or payment reference)"
    )


class LedgerEntryOut(BaseModel):
    id: str
    kind: EntryKind = Field(description="credit: a top-up; call: a call's cost; adjustment: a correction")
    amount_usd: float = Field(description="Credits positive, call costs negative")
    call_id: str | None
    note: str
    created_at: str | None


class Pagination(BaseModel):
    total: int
    limit: int
    offset: int


class BalanceOut(BaseModel):
    company_id: str
    currency: str = "USD"
    balance_usd: float = Field(description="The sum of every ledger entry")
    prepaid: bool = Field(description="true: calls are refused (402) at or below zero")
    low_balance_usd: float = Field(description="Falling to this emits a balance_low webhook event")
    entries: list[LedgerEntryOut] = Field(description="The ledger, newest first")
    pagination: Pagination


class CreditOut(BaseModel):
    entry: LedgerEntryOut
    balance_usd: float


def _entry(entry: LedgerEntry) -> LedgerEntryOut:
    return LedgerEntryOut(
        id=entry.id,
        kind=entry.kind,
        amount_usd=entry.amount_usd,
        call_id=entry.call_id,
        note=entry.note,
        created_at=iso_utc(entry.created_at),
    )


def _balance_out(company: Company, page: LedgerPage, query: LedgerQuery) -> BalanceOut:
    limits = company.settings.limits
    return BalanceOut(
        company_id=company.id,
        balance_usd=page.balance_usd,
        prepaid=limits.prepaid,
        low_balance_usd=limits.low_balance_usd,
        entries=[_entry(entry) for entry in page.entries],
        pagination=Pagination(total=page.total, limit=query.limit, offset=query.offset),
    )


def _named_company(request: web.Request) -> Company:
    company_id = request.match_info["company_id"]
    company = request.app[DIRECTORY].current.companies.get(company_id)
    if company is None:
        raise NotFound(f"unknown company {company_id}", code="unknown_company")
    return company


async def get_balance(request: web.Request) -> web.Response:
    query = parse_query(request, LedgerQuery)
    company: Company = request[COMPANY]
    page = await request.app[BALANCES].page(company.id, query.limit, query.offset)
    return ok(_balance_out(company, page, query))


async def admin_get_balance(request: web.Request) -> web.Response:
    query = parse_query(request, LedgerQuery)
    company = _named_company(request)
    page = await request.app[BALANCES].page(company.id, query.limit, query.offset)
    return ok(_balance_out(company, page, query))


async def admin_credit(request: web.Request) -> web.Response:
    company = _named_company(request)
    body = await parse_body(request, CreditIn)
    entry, balance = await request.app[BALANCES].credit(company.id, body.amount_usd, body.note)
    return ok(CreditOut(entry=_entry(entry), balance_usd=balance), status=201)


OPERATIONS = (
    Operation(
        "GET",
        "/api/balance",
        get_balance,
        "The company's prepaid balance and its ledger",
        "balance",
        query=LedgerQuery,
        response=BalanceOut,
    ),
    Operation(
        "GET",
        "/api/admin/companies/{company_id}/balance",
        admin_get_balance,
        "A company's balance and ledger",
        "admin",
        auth="admin",
        query=LedgerQuery,
        response=BalanceOut,
        errors=(404,),
        path_pattern=COMPANY_ID_PATTERN,
    ),
    Operation(
        "POST",
        "/api/admin/companies/{company_id}/credit",
        admin_credit,
        "Top up a company's balance (a credit ledger entry)",
        "admin",
        auth="admin",
        body=CreditIn,
        response=CreditOut,
        errors=(404,),
        success_status=201,
        path_pattern=COMPANY_ID_PATTERN,
    ),
)


def setup_routes(app: web.Application, balances: Balances) -> None:
    app[BALANCES] = balances
    register(app, OPERATIONS)
