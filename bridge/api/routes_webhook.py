"""POST /api/voip/webhook: a PBX announces (`connect`) or ends (`terminate`) a call."""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from bridge.api.appkeys import DIRECTORY, MANAGER
from bridge.api.envelope import ok, parse_body
from bridge.directory import Company, Directory
from bridge.errors import BadRequest, Forbidden, NotFound
from bridge.session.session import CallInfo
from bridge.session.state import EndedBy

CALL_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"


class VoipWebhook(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    callId: str = Field(pattern=CALL_ID_PATTERN)
    event: Literal["connect", "terminate"]
    callerPhone: str | None = Field(None, max_length=64)
    caller_number: str | None = Field(None, max_length=64)
    callerName: str | None = Field(None, max_length=128)
    b_number: str | None = Field(None, max_length=64)
    companyId: str | None = Field(None, max_length=128)
    websocketUrl: str | None = Field(None, max_length=2048)

    @model_validator(mode="after")
    def _connect_needs(self) -> VoipWebhook:
        if self.event == "connect":
            if not self.websocketUrl:
                raise ValueError("websocketUrl is required for connect")
            if not (self.callerPhone or self.caller_number):
                raise ValueError("callerPhone (or caller_number) is required for connect")
        if not (self.companyId or self.b_number):
            raise ValueError("b_number (or companyId) is required to find the company")
        return self

    @property
    def caller(self) -> str:
        return self.callerPhone or self.caller_number or ""


def resolve_company(directory: Directory, body: VoipWebhook) -> Company:
    if body.companyId:
        company = directory.companies.get(body.companyId)
        if company is None:
            raise NotFound(f"unknown company {body.companyId}", code="unknown_company")
        return company
    company = directory.company_for_phone(body.b_number or "")
    if company is None:
        raise NotFound(f"no company has the number {body.b_number}", code="unknown_number")
    return company


async def voip_webhook(request: web.Request) -> web.Response:
    body = await parse_body(request, VoipWebhook)
    company = resolve_company(request.app[DIRECTORY].current, body)
    manager = request.app[MANAGER]
    if body.event == "terminate":
        session = manager.get(body.callId)
        if session is None or session.company_id != company.id:
            # Idempotent: an unknown or already finished call is not an error for a hangup.
            return ok({"callId": body.callId, "status": "unknown"})
        session.request_end(EndedBy.CALLER)
        return ok({"callId": body.callId, "status": session.state.value})
    if not company.allows_caller(body.caller):
        raise Forbidden(f"caller {body.caller} may not call {company.id}", code="caller_not_allowed")
    if not body.websocketUrl or not body.websocketUrl.startswith(("ws://", "wss://")):
        raise BadRequest("websocketUrl: must be a ws:// or wss:// URL", code="validation_error")
    info = CallInfo(
        call_id=body.callId,
        company_id=company.id,
        direction="inbound",
        caller=body.caller,
        called=body.b_number or "",
        caller_name=body.callerName or "",
        websocket_url=body.websocketUrl,
    )
    session, created = manager.create_pending(info)
    return ok({"callId": session.call_id, "status": session.state.value, "created": created})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/api/voip/webhook", voip_webhook)
