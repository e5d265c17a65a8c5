"""A company's own resources: its phone numbers, e-mail addresses and WhatsApp numbers."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from bridge.api.appkeys import COMPANY
from bridge.api.envelope import ok
from bridge.api.openapi import Operation, register


class Phones(BaseModel):
    phones: list[str]


class Emails(BaseModel):
    emails: list[str]


class WhatsAppNumberOut(BaseModel):
    phone_number_id: str
    display_phone_number: str
    verified_name: str
    is_active: bool
    verification_status: str


class WhatsAppNumbers(BaseModel):
    whatsapp_numbers: list[WhatsAppNumberOut]


async def list_phones(request: web.Request) -> web.Response:
    return ok(Phones(phones=list(request[COMPANY].settings.phones)))


async def list_emails(request: web.Request) -> web.Response:
    return ok(Emails(emails=list(request[COMPANY].settings.emails)))


async def list_whatsapp_numbers(request: web.Request) -> web.Response:
    numbers = [
        WhatsAppNumberOut.model_validate(n.model_dump()) for n in request[COMPANY].settings.whatsapp_numbers
    ]
    return ok(WhatsAppNumbers(whatsapp_numbers=numbers))


OPERATIONS = (
    Operation(
        "GET", "/api/phones", list_phones, "The company's phone numbers (E.164)", "company", response=Phones
    ),
    Operation(
        "GET", "/api/emails", list_emails, "The company's e-mail addresses", "company", response=Emails
    ),
    Operation(
        "GET",
        "/api/whatsapp/numbers",
        list_whatsapp_numbers,
        "The company's WhatsApp numbers",
        "company",
        response=WhatsAppNumbers,
    ),
)


def setup_routes(app: web.Application) -> None:
    register(app, OPERATIONS)
