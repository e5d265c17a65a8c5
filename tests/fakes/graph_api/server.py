"""The fake Graph API: `POST /{version}/{phone_number_id}/messages` on loopback.

It refuses what Meta would: a wrong version or phone number id (400, code 100), a missing or wrong
Bearer token (401 OAuthException, code 190), a body that is not a template message of the documented
shape (400, code 100), an unknown template (400, code 132001). Successes
answer as Meta does: `{"messaging_product", "contacts": [{"input", "wa_id"}], "messages": [{"id",
"message_status"}]}`. Everything refused is kept in `problems`; `hold` keeps requests waiting (for the
timeout test) until `release`.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_LANGUAGE = re.compile(r"^[a-z]{2,3}(_[A-Za-z0-9]{2,8})?$")


@dataclass
class FakeGraphApi:
    token: str = "EAAG-test-token"
    version: str = "v21.0"
    phone_number_ids: frozenset[str] = frozenset({"123456789"})
    templates: frozenset[str] = frozenset({"order_update", "hello_world"})
    requests: list[dict[str, Any]] = field(default_factory=list)  # valid bodies received
    problems: list[str] = field(default_factory=list)
    held: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _runner: web.AppRunner | None = None

    def __post_init__(self) -> None:
        self.held.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        self.held.clear()

    def release(self) -> None:
        self.held.set()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        self.held.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeGraphApi:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    def _error(
        self, status: int, message: str, code: int, kind: str = "OAuthException", subcode: int | None = None
    ) -> web.Response:
        self.problems.append(message)
        error: dict[str, Any] = {"message": message, "type": kind, "code": code}
        if subcode is not None:
            error["error_subcode"] = subcode
        error["fbtrace_id"] = "A" + secrets.token_urlsafe(16)
        return web.json_response({"error": error}, status=status)

    async def _handle(self, request: web.Request) -> web.Response:
        await self.held.wait()
        parts = request.path.strip("/").split("/")
        if request.method != "POST" or len(parts) != 3 or parts[2] != "messages":
            return self._error(400, f"Unsupported {request.method} request to {request.path}", 100)
        version, phone_number_id, _ = parts
        if version != self.version:
            return self._error(400, f"Unknown version {version}", 2635, "OAuthException")
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._error(401, "Error validating access token: Invalid OAuth access token.", 190)
        if phone_number_id not in self.phone_number_ids:
            return self._error(
                400,
                f"Unsupported post request. Object with ID '{phone_number_id}' does not exist",
                100,
                "GraphMethodException",
                33,
            )
        if request.content_type != "application/json":
            return self._error(400, f"Content-Type {request.content_type} is not JSON", 100)
        try:
            body = json.loads(await request.text())
        except ValueError:
            return self._error(400, "(#100) The request body is not JSON", 100)
        problem = self._shape_problem(body)
        if problem:
            return self._error(400, f"(#100) {problem}", 100)
        template = body["template"]
        if template["name"] not in self.templates:
            return self._error(
                400, "(#132001) Template name does not exist in the translation", 132001, subcode=2494073
            )
        self.requests.append(body)
        to = body["to"]
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": "wamid." + secrets.token_urlsafe(24), "message_status": "accepted"}],
            }
        )

    @staticmethod
    def _shape_problem(body: object) -> str:
        if not isinstance(body, dict):
            return "the body must be an object"
        allowed = {"messaging_product", "recipient_type", "to", "type", "template"}
        if set(body) - allowed:
            return f"unknown parameters {sorted(set(body) - allowed)}"
        if body.get("messaging_product") != "whatsapp":
            return "messaging_product must be whatsapp"
        if body.get("type") != "template":
            return "this fake only takes type template"
        if not isinstance(body.get("to"), str) or not body["to"]:
            return "The parameter to is required"
        template = body.get("template")
        if not isinstance(template, dict) or set(template) - {"name", "language", "components"}:
            return "template must be an object of name, language and components"
        if not isinstance(template.get("name"), str) or not template["name"]:
            return "The parameter template['name'] is required"
        language = template.get("language")
        if not isinstance(language, dict) or set(language) - {"code", "policy"}:
            return "template['language'] must be {code}"
        if not isinstance(language.get("code"), str) or not _LANGUAGE.match(language["code"]):
            return "template['language']['code'] is invalid"
        components = template.get("components", [])
        if not isinstance(components, list) or not all(
            isinstance(c, dict) and isinstance(c.get("type"), str) for c in components
        ):
            return "template['components'] must be a list of objects with a type"
        return ""
