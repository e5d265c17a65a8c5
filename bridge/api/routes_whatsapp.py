"""POST /api/whatsapp/template: send an approved WhatsApp template from one of the company's numbers.

403 when `phone_number_id` is not one of the company's `whatsapp_numbers`; 400 when a field is missing
or Meta refuses the message (Meta's message and code in ours); 503 when Meta does not answer in time or
at all, or the company has no `[companies.whatsapp] access_token`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from bridge.api.appkeys import COMPANY, SETTINGS
from bridge.api.envelope import ok, parse_body
from bridge.api.openapi import Operation, register
from bridge.companies.whatsapp import GraphError, GraphUnavailable, TemplateMessage, WhatsAppGraph
from bridge.errors import BadRequest, Forbidden, Unavailable

GRAPH = web.AppKey("whatsapp_graph", WhatsAppGraph)


class TemplateSend(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phone_number_id: str = Field(
        min_length=1, max_length=64, pattern=r"^[0-9]+$", description="One of the company's WhatsApp numbers"
    )
    to: str = Field(pattern=r"^\+?[1-9][0-9]{6,14}$", description="The recipient, E.164 with or without +")
    template_name: str = Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")
    language_code: str = Field(pattern=r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})?$", description="e.g. en_US, es")
    components: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=20,
        description="Meta's template components (header, body, button parameters), passed through",
    )


class TemplateSent(BaseModel):
    message_id: str = Field(description="Meta's wamid")
    message_status: str = Field(description='Meta\'s status for the message, e.g. "accepted" ("" if none)')
    phone_number_id: str
    to: str
    wa_id: str = Field(description="The recipient's WhatsApp id")
    template_name: str


async def send_template(request: web.Request) -> web.Response:
    body = await parse_body(request, TemplateSend)
    company = request[COMPANY]
    if not any(
        number.phone_number_id == body.phone_number_id for number in company.settings.whatsapp_numbers
    ):
        raise Forbidden(
            f"phone_number_id {body.phone_number_id} is not one of the company's WhatsApp numbers",
            code="whatsapp_number_not_owned",
        )
    token = company.settings.whatsapp.access_token.get_secret_value()
    if not token:
        raise Unavailable("WhatsApp is not configured for this company", code="whatsapp_not_configured")
    message = TemplateMessage(
        body.phone_number_id, body.to, body.template_name, body.language_code, body.components
    )
    try:
        sent = await request.app[GRAPH].send_template(token, message)
    except GraphError as exc:
        code = f" (code {exc.code}{f', subcode {exc.subcode}' if exc.subcode else ''})" if exc.code else ""
        raise BadRequest(f"WhatsApp refused the message: {exc.message}{code}", code="whatsapp_error") from exc
    except GraphUnavailable as exc:
        raise Unavailable(
            str(exc), code="whatsapp_timeout" if exc.timed_out else "whatsapp_unavailable"
        ) from exc
    return ok(
        TemplateSent(
            message_id=sent.message_id,
            message_status=sent.message_status,
            phone_number_id=body.phone_number_id,
            to=body.to,
            wa_id=sent.wa_id,
            template_name=body.template_name,
        )
    )


OPERATIONS = (
    Operation(
        "POST",
        "/api/whatsapp/template",
        send_template,
        "Send a WhatsApp template message from one of the company's numbers (Meta's Graph API)",
        "whatsapp",
        body=TemplateSend,
        response=TemplateSent,
        errors=(403, 503),
    ),
)


def setup_routes(app: web.Application) -> None:
    whatsapp = app[SETTINGS].whatsapp
    graph = WhatsAppGraph(
        graph_url=whatsapp.graph_url,
        graph_version=whatsapp.graph_version,
        timeout_seconds=whatsapp.timeout_seconds,
    )
    app[GRAPH] = graph

    async def close_graph(_app: web.Application) -> None:
        await graph.close()

    app.on_cleanup.append(close_graph)
    register(app, OPERATIONS)
