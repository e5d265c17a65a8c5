"""The operator's API (admin keys only): companies and their keys, and connector keys, as data.

`/api/admin/companies[/{company_id}]` lists, creates, reads, changes and disables companies; config-file
companies are listed read-only (409 company_read_only). A new key is in its create (or rotate)
response once; lists show its 8-character prefix only. Every change takes effect on the next request.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import BaseModel, Field

from bridge.api.agent_models import AgentSettingsIn
from bridge.api.envelope import ok, parse_body, parse_query
from bridge.api.fields import E164, RESOURCE_ID_PATTERN, NoControlChars
from bridge.api.openapi import Operation, register
from bridge.companies.admin import AdminService, CompanyView, KeyView
from bridge.companies.admin_store import KeyKind
from bridge.errors import BadRequest
from bridge.settings import LimitsSettings, WhatsAppNumber

ADMIN = web.AppKey("admin", AdminService)
MAX_PAGE: Final = 200
COMPANY_ID_PATTERN: Final = r"^[A-Za-z0-9_.-]{1,64}$"
_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)

CompanyId = Annotated[str, Field(min_length=1, max_length=64, pattern=COMPANY_ID_PATTERN)]
Name = Annotated[NoControlChars, Field(max_length=200)]
Email = Annotated[NoControlChars, Field(min_length=1, max_length=254)]


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- models ----------------------------------------------------------------------------------------


class CompanyFields(BaseModel):
    """What may change; absent fields stay as they are."""

    model_config = {"extra": "forbid"}

    name: Name | None = None
    phones: list[E164] | None = Field(None, max_length=100)
    emails: list[Email] | None = Field(None, max_length=100)
    allowed_callers: list[E164] | None = Field(None, max_length=1000)
    whatsapp_numbers: list[WhatsAppNumber] | None = Field(None, max_length=100)
    agent: AgentSettingsIn | None = Field(
        None, description="The default agent: the config's [companies.agent]"
    )
    limits: LimitsSettings | None = Field(None, description="The config's [companies.limits]")
    enabled: bool | None = Field(None, description="false disables the company (as DELETE does)")


class CompanyCreate(CompanyFields):
    id: CompanyId


class CompanyOut(BaseModel):
    id: str
    name: str
    phones: list[str]
    emails: list[str]
    allowed_callers: list[str]
    whatsapp_numbers: list[dict[str, Any]]
    agent: dict[str, Any]
    limits: dict[str, Any]
    enabled: bool
    read_only: bool = Field(description="From the config file: change it there")
    created_at: str | None
    updated_at: str | None


class OneCompany(BaseModel):
    company: CompanyOut


class PageQuery(BaseModel):
    model_config = {"extra": "forbid"}

    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


class Pagination(BaseModel):
    total: int
    limit: int
    offset: int


class CompanyPage(BaseModel):
    companies: list[CompanyOut]
    pagination: Pagination


class KeyCreate(BaseModel):
    model_config = {"extra": "forbid"}

    name: Annotated[NoControlChars, Field(min_length=1, max_length=100)]


class RotateBody(BaseModel):
    model_config = {"extra": "forbid"}

    name: Annotated[NoControlChars, Field(max_length=100)] = ""


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str | None = Field(description="The key's first characters; null for a config file key")
    read_only: bool
    created_at: str | None
    last_used_at: str | None


class KeyList(BaseModel):
    keys: list[KeyOut]


class NewKey(BaseModel):
    key: str = Field(description="The key itself: shown this once, stored only as its SHA-256 digest")
    key_info: KeyOut
    revoked: str | None = Field(None, description="The key id a rotation revoked")


class KeyRevoked(BaseModel):
    id: str
    revoked: bool


def company_out(view: CompanyView) -> CompanyOut:
    s = view.settings
    return CompanyOut(
        id=s.id,
        name=s.name,
        phones=list(s.phones),
        emails=list(s.emails),
        allowed_callers=list(s.allowed_callers),
        whatsapp_numbers=[n.model_dump(mode="json") for n in s.whatsapp_numbers],
        agent=s.agent.model_dump(mode="json"),  # secrets come out masked
        limits=s.limits.model_dump(mode="json"),
        enabled=not view.disabled,
        read_only=view.read_only,
        created_at=_iso(view.created_at),
        updated_at=_iso(view.updated_at),
    )


def key_out(view: KeyView) -> KeyOut:
    return KeyOut(
        id=view.id,
        name=view.name,
        prefix=view.prefix,
        read_only=view.read_only,
        created_at=_iso(view.created_at),
        last_used_at=_iso(view.last_used_at),
    )


def _given(body: BaseModel) -> dict[str, Any]:
    # The validated values themselves (nested settings stay models, secrets unmasked for the store).
    given = {name: getattr(body, name) for name in body.model_fields_set if getattr(body, name) is not None}
    if "agent" in given:  # absent agent fields take the config's defaults, as in the file
        given["agent"] = {k: v for k, v in given["agent"].model_dump(mode="python").items() if v is not None}
    return given


def _param(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not _RESOURCE_ID.match(value):
        raise BadRequest(f"{name}: 1 to 128 letters, digits or . _ : -", code="validation_error")
    return value


# -- handlers --------------------------------------------------------------------------------------


async def list_companies(request: web.Request) -> web.Response:
    query = parse_query(request, PageQuery)
    views = request.app[ADMIN].companies()
    page = views[query.offset : query.offset + query.limit]
    return ok(
        CompanyPage(
            companies=[company_out(v) for v in page],
            pagination=Pagination(total=len(views), limit=query.limit, offset=query.offset),
        )
    )


async def create_company(request: web.Request) -> web.Response:
    body = await parse_body(request, CompanyCreate)
    view = await request.app[ADMIN].create_company(_given(body))
    return ok(OneCompany(company=company_out(view)), status=201)


async def get_company(request: web.Request) -> web.Response:
    return ok(OneCompany(company=company_out(request.app[ADMIN].company(_param(request, "company_id")))))


async def update_company(request: web.Request) -> web.Response:
    company_id = _param(request, "company_id")
    body = await parse_body(request, CompanyFields)
    view = await request.app[ADMIN].update_company(company_id, _given(body))
    return ok(OneCompany(company=company_out(view)))


async def disable_company(request: web.Request) -> web.Response:
    view = await request.app[ADMIN].disable_company(_param(request, "company_id"))
    return ok(OneCompany(company=company_out(view)))


def _owner(request: web.Request) -> tuple[KeyKind, str]:
    if "company_id" in request.match_info:
        return "company", _param(request, "company_id")
    return "connector", ""


async def list_keys(request: web.Request) -> web.Response:
    kind, company_id = _owner(request)
    if kind == "company":
        request.app[ADMIN].company(company_id)  # 404 for an unknown company
    return ok(KeyList(keys=[key_out(v) for v in request.app[ADMIN].keys(kind, company_id)]))


async def create_key(request: web.Request) -> web.Response:
    kind, company_id = _owner(request)
    body = await parse_body(request, KeyCreate)
    secret, view = await request.app[ADMIN].create_key(kind, company_id, body.name)
    return ok(NewKey(key=secret, key_info=key_out(view)), status=201)


async def rotate_key(request: web.Request) -> web.Response:
    kind, company_id = _owner(request)
    key_id = _param(request, "key_id")
    body = await parse_body(request, RotateBody)
    admin = request.app[ADMIN]
    secret, view = await admin.create_key(kind, company_id, body.name, replacing=key_id)
    return ok(NewKey(key=secret, key_info=key_out(view), revoked=key_id), status=201)


async def revoke_key(request: web.Request) -> web.Response:
    kind, company_id = _owner(request)
    key_id = _param(request, "key_id")
    await request.app[ADMIN].revoke_key(kind, company_id, key_id)
    return ok(KeyRevoked(id=key_id, revoked=True))


_COMPANY = "/api/admin/companies/{company_id}"


def _op(method: str, path: str, handler: Any, summary: str, **extra: Any) -> Operation:
    return Operation(
        method, path, handler, summary, "admin", auth="admin", path_pattern=RESOURCE_ID_PATTERN, **extra
    )


OPERATIONS = (
    _op(
        "GET",
        "/api/admin/companies",
        list_companies,
        "Every company, config and stored",
        query=PageQuery,
        response=CompanyPage,
    ),
    _op(
        "POST",
        "/api/admin/companies",
        create_company,
        "Create a company (409 company_exists, phone_taken)",
        body=CompanyCreate,
        response=OneCompany,
        errors=(409,),
        success_status=201,
    ),
    _op("GET", _COMPANY, get_company, "One company", response=OneCompany, errors=(404,)),
    _op(
        "PATCH",
        _COMPANY,
        update_company,
        "Change a company (409 company_read_only for a config company, phone_taken)",
        body=CompanyFields,
        response=OneCompany,
        errors=(404, 409),
    ),
    _op(
        "DELETE",
        _COMPANY,
        disable_company,
        "Disable a company: its keys stop working, new calls are refused; the record stays",
        response=OneCompany,
        errors=(404, 409),
    ),
    _op(
        "GET",
        f"{_COMPANY}/keys",
        list_keys,
        "The company's keys (metadata only)",
        response=KeyList,
        errors=(404,),
    ),
    _op(
        "POST",
        f"{_COMPANY}/keys",
        create_key,
        "A new company key: in this response once, never again",
        body=KeyCreate,
        response=NewKey,
        errors=(404, 409),
        success_status=201,
    ),
    _op(
        "DELETE",
        f"{_COMPANY}/keys/{{key_id}}",
        revoke_key,
        "Revoke a key, at once (409 key_read_only for a config key)",
        response=KeyRevoked,
        errors=(404, 409),
    ),
    _op(
        "POST",
        f"{_COMPANY}/keys/{{key_id}}/rotate",
        rotate_key,
        "A new key replacing this one (revoked at once)",
        body=RotateBody,
        response=NewKey,
        errors=(404, 409),
        success_status=201,
    ),
    _op(
        "GET", "/api/admin/connector/keys", list_keys, "The connector keys (metadata only)", response=KeyList
    ),
    _op(
        "POST",
        "/api/admin/connector/keys",
        create_key,
        "A new connector key: in this response once, never again",
        body=KeyCreate,
        response=NewKey,
        success_status=201,
    ),
    _op(
        "DELETE",
        "/api/admin/connector/keys/{key_id}",
        revoke_key,
        "Revoke a connector key, at once",
        response=KeyRevoked,
        errors=(404, 409),
    ),
)


def setup_routes(app: web.Application, admin: AdminService) -> None:
    app[ADMIN] = admin
    register(app, OPERATIONS)
