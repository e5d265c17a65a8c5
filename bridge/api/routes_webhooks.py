"""The company's outbound webhooks: its settings (GET/PUT/DELETE /api/webhooks; the secret is
write-only) and its deliveries with their dead letters (list, retry). Another company's delivery
answers 404 exactly like an unknown one."""

from __future__ import annotations

from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from bridge.api.appkeys import COMPANY
from bridge.api.envelope import ok, parse_body, parse_query
from bridge.api.fields import NO_CONTROL_PATTERN, ResourceId
from bridge.api.openapi import Operation, register
from bridge.errors import BadRequest
from bridge.integrations.webhook_store import Delivery
from bridge.integrations.webhooks import EffectiveSettings, WebhookService, iso_utc, masked
from bridge.session.admission import valid_call_id

WEBHOOKS = web.AppKey("webhooks", WebhookService)
MAX_PAGE = 100
EventType = Literal["call_started", "call_completed", "call_failed", "balance_low"]
CALL_EVENTS: tuple[EventType, ...] = ("call_started", "call_completed", "call_failed")
DeliveryStatus = Literal["pending", "delivered", "dead"]
CrmField = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_CONTROL_PATTERN)]
Template = Annotated[str, StringConstraints(max_length=500, pattern=NO_CONTROL_PATTERN)]


class WebhookSettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # ASCII only (an IDN host in its xn-- form): one meaning for the pattern in Python and in JSON Schema.
    url: str = Field(
        max_length=2000, pattern=r"^(https?://[!-~]+)?$", description='"" turns the webhooks off'
    )
    secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        pattern=r"^[!-~]+$",
        description="HMAC-SHA256 key of X-Bridge-Signature; omitted: the current one stays "
        "(it is never shown again)",
    )
    events: list[EventType] = Field(default_factory=lambda: list(CALL_EVENTS), max_length=4)
    key_map: Annotated[
        dict[CrmField, Template],
        WithJsonSchema(
            {
                "type": "object",
                "maxProperties": 100,
                "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NO_CONTROL_PATTERN},
                "additionalProperties": {"type": "string", "maxLength": 500, "pattern": NO_CONTROL_PATTERN},
                "description": "The post-call push's `mapped`: CRM field -> template, "
                'e.g. "{{call.duration_seconds}}"',
            }
        ),
    ] = Field(default_factory=dict, max_length=100)


class WebhookSettingsOut(BaseModel):
    source: Literal["config", "api"] = Field(
        description="api: edited through PUT; config: [companies.webhooks]"
    )
    url: str
    secret: str = Field(description="Masked; empty when there is none")
    secret_set: bool
    events: list[str]
    key_map: dict[str, str]
    updated_at: str | None


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: DeliveryStatus | None = None
    call_id: ResourceId | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


class DeliveryOut(BaseModel):
    id: str = Field(description="Also the X-Bridge-Delivery header: the receiver's idempotency key")
    event_id: str
    type: str
    call_id: str
    url: str
    status: DeliveryStatus
    attempts: int
    next_attempt_at: str | None = Field(description="When a pending delivery goes next")
    last_status: int | None = Field(description="The receiver's last HTTP status")
    last_error: str | None
    delivered_at: str | None
    created_at: str | None


class Pagination(BaseModel):
    total: int
    limit: int
    offset: int


class DeliveryPage(BaseModel):
    deliveries: list[DeliveryOut]
    pagination: Pagination


class OneDelivery(BaseModel):
    delivery: DeliveryOut


def _settings_out(settings: EffectiveSettings) -> WebhookSettingsOut:
    return WebhookSettingsOut(
        source=settings.source,
        url=settings.url,
        secret=masked(settings.secret),
        secret_set=bool(settings.secret),
        events=list(settings.events),
        key_map=dict(settings.key_map),
        updated_at=iso_utc(settings.updated_at),
    )


def _delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_id=delivery.event_id,
        type=delivery.event_type,
        call_id=delivery.call_id,
        url=delivery.url,
        status=delivery.status,
        attempts=delivery.attempts,
        next_attempt_at=iso_utc(delivery.next_attempt_at) if delivery.status == "pending" else None,
        last_status=delivery.last_status,
        last_error=delivery.last_error,
        delivered_at=iso_utc(delivery.delivered_at),
        created_at=iso_utc(delivery.created_at),
    )


async def get_settings(request: web.Request) -> web.Response:
    company = request[COMPANY].settings
    return ok(_settings_out(await request.app[WEBHOOKS].effective(company)))


async def put_settings(request: web.Request) -> web.Response:
    body = await parse_body(request, WebhookSettingsIn)
    service = request.app[WEBHOOKS]
    settings = await service.put(
        request[COMPANY].settings, url=body.url, secret=body.secret, events=body.events, key_map=body.key_map
    )
    return ok(_settings_out(settings))


async def reset_settings(request: web.Request) -> web.Response:
    return ok(_settings_out(await request.app[WEBHOOKS].reset(request[COMPANY].settings)))


async def list_deliveries(request: web.Request) -> web.Response:
    query = parse_query(request, DeliveryQuery)
    found, total = await request.app[WEBHOOKS].deliveries(
        request[COMPANY].id, query.status, query.call_id, query.limit, query.offset
    )
    return ok(
        DeliveryPage(
            deliveries=[_delivery_out(d) for d in found],
            pagination=Pagination(total=total, limit=query.limit, offset=query.offset),
        )
    )


async def retry_delivery(request: web.Request) -> web.Response:
    delivery_id = request.match_info["delivery_id"]
    if not valid_call_id(delivery_id):
        raise BadRequest("delivery_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
    delivery = await request.app[WEBHOOKS].retry(request[COMPANY].id, delivery_id)
    return ok(OneDelivery(delivery=_delivery_out(delivery)))


OPERATIONS = (
    Operation(
        "GET",
        "/api/webhooks",
        get_settings,
        "The company's webhook settings (the secret masked)",
        "webhooks",
        response=WebhookSettingsOut,
    ),
    Operation(
        "PUT",
        "/api/webhooks",
        put_settings,
        "Replace the company's webhook settings (they win over the config's)",
        "webhooks",
        body=WebhookSettingsIn,
        response=WebhookSettingsOut,
        errors=(409,),
    ),
    Operation(
        "DELETE",
        "/api/webhooks",
        reset_settings,
        "Drop the API's webhook settings: the config's apply again",
        "webhooks",
        response=WebhookSettingsOut,
    ),
    Operation(
        "GET",
        "/api/webhooks/deliveries",
        list_deliveries,
        "The company's webhook deliveries, newest first (dead letters: status=dead)",
        "webhooks",
        query=DeliveryQuery,
        response=DeliveryPage,
    ),
    Operation(
        "POST",
        "/api/webhooks/deliveries/{delivery_id}/retry",
        retry_delivery,
        "Send a dead or failing delivery again now",
        "webhooks",
        response=OneDelivery,
        errors=(404, 409),
    ),
)


def setup_routes(app: web.Application, webhooks: WebhookService) -> None:
    app[WEBHOOKS] = webhooks
    register(app, OPERATIONS)
