"""A company's calls: dial out, list, look up, read the transcript, end, transfer, send keys.

Every route works on the authenticated company's calls only; another company's call id
answers 404 exactly like an unknown one.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.api.appkeys import CALLS, COMPANY
from bridge.api.envelope import ok, parse_body
from bridge.errors import BadRequest, Forbidden
from bridge.keys import is_e164
from bridge.session.calls import STATUSES, CallQuery, OutboundCall

MAX_PAGE = 100
TARGET_PATTERN = r"^\+?[0-9*#]{1,32}$"  # E.164 or an extension


class OutboundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, populate_by_name=True)

    from_number: str = Field(alias="from", max_length=32)
    to: str = Field(max_length=32)
    call_objective: str = Field(min_length=1, max_length=4000)
    first_message: str = Field("", max_length=2000)
    variables: dict[str, str] = Field(default_factory=dict, max_length=100)

    @field_validator("from_number", "to")
    @classmethod
    def _e164(cls, value: str) -> str:
        if not is_e164(value):
            raise ValueError(f"{value!r} is not an E.164 number like +34987654321")
        return value

    @field_validator("variables")
    @classmethod
    def _short_values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if len(name) > 64 or len(text) > 1000:
                raise ValueError("variable names are at most 64 characters and values 1000")
        return value


class TransferRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    to: str = Field(pattern=TARGET_PATTERN)


class DtmfRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    digits: str = Field(pattern=r"^[0-9A-D*#]{1,32}$")


def _call_id(request: web.Request) -> str:
    return request.match_info["call_id"]


async def originate(request: web.Request) -> web.Response:
    company = request[COMPANY]
    body = await parse_body(request, OutboundRequest)
    if not company.owns_phone(body.from_number):
        raise Forbidden(f"{body.from_number} is not one of this company's numbers", code="from_not_allowed")
    session = request.app[CALLS].originate(
        OutboundCall(
            company_id=company.id,
            from_number=body.from_number,
            to_number=body.to,
            call_objective=body.call_objective,
            first_message=body.first_message,
            variables=body.variables,
        )
    )
    return ok({"call_id": session.call_id, "status": session.state.value})


def _epoch(name: str, raw: str | None) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise BadRequest(f"{name}: not an ISO-8601 date or epoch seconds", code="validation_error") from exc
    if moment.tzinfo is None:
        raise BadRequest(f"{name}: give a time zone (e.g. Z)", code="validation_error")
    return moment.timestamp()


def _int(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name}: not an integer", code="validation_error") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name}: must be between {low} and {high}", code="validation_error")
    return value


async def list_calls(request: web.Request) -> web.Response:
    query = request.query
    status, direction = query.get("status") or None, query.get("direction") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status: one of {', '.join(sorted(STATUSES))}", code="validation_error")
    if direction is not None and direction not in ("inbound", "outbound"):
        raise BadRequest("direction: inbound or outbound", code="validation_error")
    page = CallQuery(
        company_id=request[COMPANY].id,
        status=status,
        direction=direction,
        since=_epoch("from", query.get("from")),
        until=_epoch("to", query.get("to")),
        limit=_int("limit", query.get("limit"), 50, 1, MAX_PAGE),
        offset=_int("offset", query.get("offset"), 0, 0, 10_000_000),
    )
    records, total = await request.app[CALLS].list(page)
    return ok(
        {
            "calls": [r.to_api() for r in records],
            "pagination": {"total": total, "limit": page.limit, "offset": page.offset},
        }
    )


async def get_call(request: web.Request) -> web.Response:
    record = await request.app[CALLS].record(request[COMPANY].id, _call_id(request))
    return ok({"call": record.to_api()})


async def get_transcript(request: web.Request) -> web.Response:
    record = await request.app[CALLS].record(request[COMPANY].id, _call_id(request))
    return ok({"call_id": record.call_id, "status": record.status, "transcript": record.transcript_api()})


async def end_call(request: web.Request) -> web.Response:
    session = await request.app[CALLS].end(request[COMPANY].id, _call_id(request))
    return ok({"call_id": session.call_id, "status": session.state.value, "ending": True})


async def transfer_call(request: web.Request) -> web.Response:
    body = await parse_body(request, TransferRequest)
    session = await request.app[CALLS].transfer(request[COMPANY].id, _call_id(request), body.to)
    return ok({"call_id": session.call_id, "transferred_to": body.to})


async def send_dtmf(request: web.Request) -> web.Response:
    body = await parse_body(request, DtmfRequest)
    session = await request.app[CALLS].send_dtmf(request[COMPANY].id, _call_id(request), body.digits)
    return ok({"call_id": session.call_id, "digits": body.digits})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/calls/outbound", originate)
    app.router.add_get("/api/calls", list_calls)
    app.router.add_get("/api/calls/{call_id}", get_call)
    app.router.add_get("/api/calls/{call_id}/transcript", get_transcript)
    app.router.add_post("/api/calls/{call_id}/end", end_call)
    app.router.add_post("/api/calls/{call_id}/transfer", transfer_call)
    app.router.add_post("/api/calls/{call_id}/dtmf", send_dtmf)
