"""POST /api/whatsapp/template against a strict fake Graph API on loopback: success with Meta's message
id, a foreign phone number id (403), missing fields (400), Meta's error (400 with its message and code),
a Graph API that does not answer (503), and a company without a token (503)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.settings import build_settings, warnings_for
from tests.fakes.graph_api import FakeGraphApi
from tests.helpers import ACME_KEY, GLOBEX_KEY, raw_config

TOKEN = "EAAG-acme-secret-token"
SEND = {
    "phone_number_id": "123456789",
    "to": "+34600111222",
    "template_name": "order_update",
    "language_code": "en_US",
    "components": [{"type": "body", "parameters": [{"type": "text", "text": "A-1001"}]}],
}


class World:
    def __init__(self, services: Services, http: aiohttp.ClientSession, graph: FakeGraphApi) -> None:
        self.services = services
        self.http = http
        self.graph = graph
        self.url = f"http://127.0.0.1:{services.http_port}/api/whatsapp/template"

    async def send(self, body: Any, key: str = ACME_KEY) -> tuple[int, dict[str, str], dict[str, Any]]:
        async with self.http.post(f"{self.url}?api_key={key}", json=body) as response:
            return response.status, dict(response.headers), await response.json()


@pytest.fixture
async def world(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[World]:
    monkeypatch.setenv("ACME_WHATSAPP_TOKEN", TOKEN)
    async with FakeGraphApi(token=TOKEN) as graph:
        raw = raw_config()
        raw["whatsapp"] = {"graph_url": graph.url, "graph_version": "v21.0", "timeout_seconds": 1}
        raw["companies"][0]["whatsapp"] = {"access_token": "env:ACME_WHATSAPP_TOKEN"}
        raw["companies"][1]["whatsapp_numbers"] = [
            {"phone_number_id": "555000111", "display_phone_number": "+44 20 7123 4567"}
        ]
        services = await start_services(build_settings(raw))
        async with aiohttp.ClientSession() as http:
            yield World(services, http, graph)
        await services.close()


async def test_a_template_is_sent_and_meta_s_message_id_returned(world: World) -> None:
    status, headers, body = await world.send(SEND)
    assert status == 200, body
    data = body["data"]
    assert body["success"] is True
    assert data["message_id"].startswith("wamid.")
    assert (data["wa_id"], data["message_status"], data["to"]) == ("34600111222", "accepted", "+34600111222")
    assert world.graph.requests == [
        {
            "messaging_product": "whatsapp",
            "to": "+34600111222",
            "type": "template",
            "template": {
                "name": "order_update",
                "language": {"code": "en_US"},
                "components": SEND["components"],
            },
        }
    ]
    assert world.graph.problems == []
    assert "X-RateLimit-Remaining" in headers
    assert TOKEN not in str(body)


async def test_a_number_of_another_company_or_none_is_403(world: World) -> None:
    foreign = await world.send({**SEND, "phone_number_id": "555000111"})  # globex's
    unknown = await world.send({**SEND, "phone_number_id": "999"})
    theirs = await world.send(SEND, key=GLOBEX_KEY)  # acme's number with globex's key
    assert [answer[0] for answer in (foreign, unknown, theirs)] == [403, 403, 403]
    assert foreign[2]["code"] == "whatsapp_number_not_owned"
    assert world.graph.requests == []


@pytest.mark.parametrize("missing", ["phone_number_id", "to", "template_name", "language_code"])
async def test_a_missing_field_is_400_naming_it(world: World, missing: str) -> None:
    body = {name: value for name, value in SEND.items() if name != missing}
    status, _headers, reply = await world.send(body)
    assert (status, reply["code"]) == (400, "validation_error")
    assert missing in reply["error"]
    assert world.graph.requests == []


async def test_meta_s_error_is_400_with_its_message_and_code(world: World) -> None:
    status, _headers, body = await world.send({**SEND, "template_name": "no_such_template"})
    assert (status, body["code"]) == (400, "whatsapp_error")
    assert "Template name does not exist in the translation" in body["error"]
    assert "132001" in body["error"]


async def test_a_wrong_token_is_meta_s_401_as_our_400(world: World) -> None:
    world.graph.token = "another-token"
    status, _headers, body = await world.send(SEND)
    assert (status, body["code"]) == (400, "whatsapp_error")
    assert "Error validating access token" in body["error"]
    assert TOKEN not in body["error"]


async def test_a_graph_api_that_does_not_answer_is_503(world: World) -> None:
    world.graph.hold()
    status, headers, body = await world.send(SEND)
    world.graph.release()
    assert (status, body["code"]) == (503, "whatsapp_timeout")
    assert int(headers["Retry-After"]) > 0


async def test_a_company_without_a_token_is_503_not_configured(world: World) -> None:
    status, _headers, body = await world.send({**SEND, "phone_number_id": "555000111"}, key=GLOBEX_KEY)
    assert (status, body["code"]) == (503, "whatsapp_not_configured")
    assert world.graph.requests == []


def test_a_company_with_numbers_but_no_token_is_only_a_warning() -> None:
    settings = build_settings(raw_config())  # acme has a WhatsApp number and no token
    assert any(
        note.startswith("companies[0].whatsapp.access_token: empty") for note in warnings_for(settings)
    )
