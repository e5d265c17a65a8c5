"""A company's own resources: its phone numbers, e-mail addresses and WhatsApp numbers."""

from __future__ import annotations

from aiohttp import web

from bridge.api.appkeys import COMPANY
from bridge.api.envelope import ok


async def list_phones(request: web.Request) -> web.Response:
    return ok({"phones": list(request[COMPANY].settings.phones)})


async def list_emails(request: web.Request) -> web.Response:
    return ok({"emails": list(request[COMPANY].settings.emails)})


async def list_whatsapp_numbers(request: web.Request) -> web.Response:
    numbers = [n.model_dump() for n in request[COMPANY].settings.whatsapp_numbers]
    return ok({"whatsapp_numbers": numbers})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/api/phones", list_phones)
    app.router.add_get("/api/emails", list_emails)
    app.router.add_get("/api/whatsapp/numbers", list_whatsapp_numbers)
