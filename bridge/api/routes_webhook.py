"""POST /api/voip/webhook: a PBX announces (`connect`) or ends (`terminate`) a call.

Which company the call belongs to, who may call and whether the call id is new are decided by
`session.admission`; this module only reads the body.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, model_validator

from bridge.agents.catalog import AgentCatalog
from bridge.agents.templating import call_facts
from bridge.api.appkeys import ADMISSION, DIRECTORY
from bridge.api.envelope import ok, parse_body
from bridge.api.fields import CalledNumber, NoControlChars, PhoneNumber, ResourceId
from bridge.api.openapi import Operation, register
from bridge.api.routes_agents import AGENTS
from bridge.session.admission import CALL_ID_PATTERN, Announcement

WS_URL_PATTERN = r"^wss?://[^\x00-\x20\x7f-\x9f]+$"
_WS_URL = re.compile(WS_URL_PATTERN)


def _ws_url(value: str) -> str:
    if not _WS_URL.match(value):
        raise ValueError("must be a ws:// or wss:// URL")
    return value


def _one_of_given(*names: str) -> dict[str, Any]:
    """JSON Schema for "at least one of these fields holds a string" (null counts as absent)."""
    return {"anyOf": [{"required": [n], "properties": {n: {"type": "string"}}} for n in names]}


# Either of these finds the company: the called number (preferred) or the company's id.
_COMPANY_KEYS = _one_of_given("b_number", "companyId")


class _Webhook(BaseModel):
    model_config = ConfigDict(extra="ignore")

    callId: str = Field(pattern=CALL_ID_PATTERN, description="The PBX's id for the call (Asterisk UNIQUEID)")
    b_number: CalledNumber | None = Field(None, description="The called number: decides the company")
    companyId: NoControlChars | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Only when no b_number is given; must agree with it otherwise",
    )

    @model_validator(mode="after")
    def _company_known(self) -> _Webhook:
        if self.b_number is None and self.companyId is None:
            raise ValueError("b_number (or companyId) is required to find the company")
        return self


class ConnectWebhook(_Webhook):
    """Any other field (string, number or boolean; or the entries of a `variables` object) is a variable
    of the call, filled into the agent's `{{name}}` / `{{crm.name}}` placeholders."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"allOf": [_COMPANY_KEYS, _one_of_given("callerPhone", "caller_number")]},
    )

    event: Literal["connect"]
    callerPhone: PhoneNumber | None = Field(None, description="The caller's number; empty when withheld")
    caller_number: PhoneNumber | None = Field(None, description="Alias of callerPhone")
    callerName: NoControlChars | None = Field(None, max_length=128)
    websocketUrl: Annotated[
        str, Field(max_length=2048, json_schema_extra={"pattern": WS_URL_PATTERN}), AfterValidator(_ws_url)
    ]
    agentId: ResourceId | None = Field(
        None,
        description="The company's agent to answer (404 unknown_agent); default: the agent listing "
        "b_number in its phones, else the company's default agent",
    )

    @model_validator(mode="after")
    def _caller_given(self) -> ConnectWebhook:
        if self.callerPhone is None and self.caller_number is None:
            raise ValueError("callerPhone (or caller_number) is required for connect")
        return self

    @property
    def caller(self) -> str:
        return self.callerPhone if self.callerPhone is not None else self.caller_number or ""


class TerminateWebhook(_Webhook):
    model_config = ConfigDict(extra="ignore", json_schema_extra=_COMPANY_KEYS)

    event: Literal["terminate"]


class VoipWebhook(RootModel[Annotated[ConnectWebhook | TerminateWebhook, Field(discriminator="event")]]):
    """`connect` announces a call (its media socket follows); `terminate` ends it."""


class WebhookResult(BaseModel):
    callId: str
    status: str = Field(description="The call's state, or `unknown` for a terminate of no live call")
    created: bool = Field(description="This request created the call (a repeated connect is 409)")


MAX_VARIABLES = 100
MAX_VARIABLE_CHARS = 1000
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")


def webhook_variables(extra: Mapping[str, Any]) -> dict[str, str]:
    """The call's variables from the connect body's extra fields (and its `variables` object, if any).

    Only scalars a placeholder could name are kept; anything else is skipped, not refused: a PBX's
    own bookkeeping fields must not cost the caller the call."""
    nested = extra.get("variables")
    items = [*(nested.items() if isinstance(nested, dict) else ()), *extra.items()]
    variables: dict[str, str] = {}
    for name, value in items:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str | int | float):
            text = str(value)
        else:
            continue
        if isinstance(name, str) and _VARIABLE_NAME.match(name) and len(text) <= MAX_VARIABLE_CHARS:
            variables[name] = text
            if len(variables) == MAX_VARIABLES:
                break
    return variables


async def voip_webhook(request: web.Request) -> web.Response:
    body = (await parse_body(request, VoipWebhook)).root
    admission = request.app[ADMISSION]
    if isinstance(body, TerminateWebhook):
        ended = await admission.terminate(body.callId, body.b_number or "", body.companyId or "")
        # Idempotent: an unknown or already finished call is not an error for a hangup.
        status = ended or "unknown"
        return ok(WebhookResult(callId=body.callId, status=status, created=False))
    called = body.b_number or ""
    company = admission.company_for_call(called, body.companyId or "")
    agents = request.app.get(AGENTS)
    catalog = agents.catalog if agents is not None else AgentCatalog(lambda: request.app[DIRECTORY].current)
    agent_id = catalog.inbound_agent(company.id, body.agentId or "", called)
    variables = webhook_variables(body.model_extra or {})
    facts = call_facts(
        call_id=body.callId,
        caller=body.caller,
        called=called,
        direction="inbound",
        caller_name=body.callerName or "",
        company=company.settings.name or company.id,
    )
    catalog.check_call(company.id, agent_id, variables, facts)  # 400 unknown_placeholder: no call made
    session = await admission.announce(
        Announcement(
            call_id=body.callId,
            caller=body.caller,
            called=called,
            caller_name=body.callerName or "",
            company_id=body.companyId or "",
            websocket_url=body.websocketUrl,
            agent_id=agent_id,
            variables=variables,
        )
    )
    return ok(WebhookResult(callId=session.call_id, status=session.state.value, created=True))


OPERATIONS = (
    Operation(
        "POST",
        "/api/voip/webhook",
        voip_webhook,
        "A PBX announces (connect) or ends (terminate) a call",
        "pbx",
        auth="connector",
        body=VoipWebhook,
        response=WebhookResult,
        errors=(402, 403, 404, 409, 503),
        description="The company is the owner of b_number; a companyId that disagrees is 403 "
        "company_mismatch. A call id is used once: a repeated connect is 409 duplicate_call. "
        "agentId chooses the agent (404 unknown_agent, 409 agent_disabled); extra fields are the "
        "call's variables, and a placeholder the agent uses that none fills is 400 unknown_placeholder.",
    ),
)


def setup_routes(app: web.Application) -> None:
    register(app, OPERATIONS)
