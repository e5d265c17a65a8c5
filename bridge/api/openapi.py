"""Routes as data, and the OpenAPI 3.1 document generated from them.

Each route module lists its `Operation`s (method, path, handler, who may call it, and the pydantic
models of its query, body and response); `register` adds them to the router and to the app's list,
from which `GET /api/openapi.json` is built. So the document cannot drift from the routes: a route
exists only as an Operation, and its models are the ones that parse its input.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from bridge.session.admission import CALL_ID_PATTERN

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# "live_token": the live event socket, authenticated by the token `GET /api/calls/{id}/live` gave.
Auth = Literal["none", "company", "connector", "media", "live_token", "admin"]

_REF_TEMPLATE: Final = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_STATUS_TEXT: Final = {
    400: "Bad request: the message names the field",
    401: "Missing or invalid key",
    402: "Insufficient balance: a prepaid company without credit (insufficient_balance)",
    403: "Not allowed",
    404: "Unknown resource, or another company's",
    408: "The request body did not arrive in time",
    409: "Conflict with the resource's state",
    413: "Request body too large",
    429: "Rate limited",
    503: "At capacity, shutting down, or a dependency (Asterisk) unavailable",
}
_SECURITY: Final[dict[Auth, list[dict[str, list[str]]]]] = {
    "none": [],
    "company": [{"apiKeyQuery": []}, {"bearer": []}, {"apiKeyHeader": []}],
    "connector": [{"connectorKey": []}, {"bearer": []}],
    "media": [{"basic": []}, {"bearer": []}, {"connectorKey": []}],
    "live_token": [{"liveToken": []}],
    "admin": [{"adminBearer": []}, {"adminKeyHeader": []}],
}
_SECURITY_SCHEMES: Final = {
    "apiKeyQuery": {"type": "apiKey", "in": "query", "name": "api_key", "description": "A company key"},
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": "A company key"},
    "bearer": {"type": "http", "scheme": "bearer", "description": "A company key (or a connector key)"},
    "connectorKey": {"type": "apiKey", "in": "header", "name": "x-connector-api-key"},
    "basic": {"type": "http", "scheme": "basic", "description": "The password is a connector key"},
    "adminBearer": {"type": "http", "scheme": "bearer", "description": "An admin key ([admin] api_keys)"},
    "adminKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Admin-Key",
        "description": "An admin key",
    },
    "liveToken": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The short-lived token of GET /api/calls/{call_id}/live",
    },
}
_HEADER_BYTES: Final = {"schema": {"const": "bytes"}}
# Every HTTP answer but a WebSocket's says where its rate-limit bucket stands (bridge/api/ratelimits.py).
_NOT_RATE_LIMITED: Final = ("media", "live_token")
_RATE_LIMIT_HEADERS: Final = {
    "X-RateLimit-Limit": {
        "description": "Requests a minute this bucket allows",
        "schema": {"type": "integer"},
    },
    "X-RateLimit-Remaining": {"description": "Requests left now", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {
        "description": "Seconds until the bucket is full again",
        "schema": {"type": "integer"},
    },
}
_ERROR_SCHEMA: Final = {
    "type": "object",
    "required": ["success", "error", "code"],
    "properties": {
        "success": {"const": False},
        "error": {"type": "string", "description": "Human-readable"},
        "code": {"type": "string", "description": "Machine code, e.g. validation_error"},
    },
}


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    auth: Auth = "company"
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None  # the `data` of the success envelope
    plain_response: type[BaseModel] | None = None  # a JSON body outside the envelope (health probes)
    text_response: str | None = None  # a non-JSON body's content type (Prometheus; CSV beside `response`)
    ranges: bool = False  # a file download: byte ranges (206, 416) as well
    errors: tuple[int, ...] = ()
    success_status: int = 200
    description: str = ""
    path_pattern: str = CALL_ID_PATTERN  # what a `{name}` in the path may hold (ids)
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # required header -> schema


@dataclass
class Operations:
    """Every operation the app serves, in the order registered."""

    items: list[Operation] = field(default_factory=list)
    by_route: dict[web.AbstractRoute, Operation] = field(default_factory=dict)  # for the auth middleware
    document: dict[str, Any] | None = None  # the OpenAPI document, built on first request

    def of(self, request: web.Request) -> Operation | None:
        """The operation a request was routed to (None for aiohttp's own 404/405)."""
        return self.by_route.get(request.match_info.route)


OPERATIONS = web.AppKey("operations", Operations)


def register(app: web.Application, operations: Iterable[Operation]) -> None:
    registry = app.get(OPERATIONS)
    if registry is None:
        registry = app[OPERATIONS] = Operations()
    for operation in operations:
        route = app.router.add_route(operation.method, operation.path, operation.handler)
        registry.items.append(operation)
        registry.by_route[route] = operation


def _statuses(operation: Operation) -> list[int]:
    statuses = set(operation.errors)
    if operation.auth in ("company", "connector", "media", "live_token", "admin"):
        statuses.add(401)
    if operation.query is not None or _PATH_PARAM.search(operation.path):
        statuses.add(400)
    if operation.body is not None:
        statuses |= {400, 408, 413}
    if operation.auth not in _NOT_RATE_LIMITED:
        statuses.add(429)
    return sorted(statuses)


def _models(operations: Iterable[Operation]) -> tuple[dict[Any, Any], dict[str, Any]]:
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = []
    for op in operations:
        wanted += [(m, "validation") for m in (op.query, op.body) if m is not None]
        wanted += [(m, "serialization") for m in (op.response, op.plain_response) if m is not None]
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template=_REF_TEMPLATE)
    return refs, top.get("$defs", {})


def _parameters(op: Operation, schemas: dict[str, Any], refs: dict[Any, Any]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": op.path_pattern},
        }
        for name in _PATH_PARAM.findall(op.path)
    ]
    params += [
        {"name": name, "in": "header", "required": True, "schema": dict(schema)}
        for name, schema in op.headers.items()
    ]
    if op.query is not None:
        ref = refs[(op.query, "validation")]["$ref"]
        model = schemas[ref.rsplit("/", 1)[1]]
        required = set(model.get("required", ()))
        for name, schema in model.get("properties", {}).items():
            param: dict[str, Any] = {"name": name, "in": "query", "required": name in required}
            if "description" in schema:
                param["description"] = schema["description"]
            param["schema"] = schema
            params.append(param)
    return params


def _responses(op: Operation, refs: dict[Any, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    if op.response is not None:
        envelope = {
            "type": "object",
            "required": ["success", "data"],
            "properties": {"success": {"const": True}, "data": refs[(op.response, "serialization")]},
        }
        content: dict[str, Any] = {"application/json": {"schema": envelope}}
        if op.text_response is not None:  # the same data in another form on request (format=csv)
            content[op.text_response] = {"schema": {"type": "string"}}
        responses[str(op.success_status)] = {"description": "Success", "content": content}
    elif op.plain_response is not None:
        plain = {"application/json": {"schema": refs[(op.plain_response, "serialization")]}}
        responses[str(op.success_status)] = {"description": "Success", "content": plain}
    elif op.text_response is not None:
        body: dict[str, Any] = {"type": "object"} if op.text_response.endswith("json") else {"type": "string"}
        if op.text_response.startswith("audio/"):
            body["contentMediaType"] = op.text_response
        text = {op.text_response: {"schema": body}}
        responses[str(op.success_status)] = {"description": "Success", "content": text}
        if op.ranges:
            responses[str(op.success_status)]["headers"] = {"Accept-Ranges": _HEADER_BYTES}
            responses["206"] = {
                "description": "The byte range asked for (Range: bytes=...)",
                "content": text,
                "headers": {"Content-Range": {"schema": {"type": "string"}}, "Accept-Ranges": _HEADER_BYTES},
            }
            responses["416"] = {
                "description": "The range lies outside the file (Content-Range: bytes */size)"
            }
    else:
        responses[str(op.success_status)] = {"description": op.description or "Success"}
    for status in _statuses(op):
        entry: dict[str, Any] = {
            "description": _STATUS_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        if status in (429, 503):
            entry["headers"] = {
                "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}
            }
        responses[str(status)] = entry
    if op.auth not in _NOT_RATE_LIMITED:
        for each in responses.values():
            each.setdefault("headers", {}).update(_RATE_LIMIT_HEADERS)
    return responses


def build_document(operations: Iterable[Operation], *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `operations` (pure; the app serves it as JSON)."""
    ops = list(operations)
    refs, schemas = _models(ops)
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        entry: dict[str, Any] = {
            "operationId": op.handler.__name__,
            "summary": op.summary,
            "tags": [op.tag],
            "security": _SECURITY[op.auth],
            "parameters": _parameters(op, schemas, refs),
            "responses": _responses(op, refs),
        }
        if op.description:
            entry["description"] = op.description
        if op.body is not None:
            body_schema = refs[(op.body, "validation")]
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": {**schemas, "Error": _ERROR_SCHEMA},
            "securitySchemes": _SECURITY_SCHEMES,
        },
    }
