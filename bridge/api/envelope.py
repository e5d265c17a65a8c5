"""The contract's response envelope and request-body parsing (400 names the field)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bridge.api.appkeys import SETTINGS
from bridge.errors import BadRequest, BridgeError, PayloadTooLarge

Model = TypeVar("Model", bound=BaseModel)


def ok(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response({"success": True, "data": data}, status=status)


def failure(error: BridgeError) -> web.Response:
    return web.json_response(
        {"success": False, "error": error.message, "code": error.code}, status=error.status
    )


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for item in exc.errors(include_url=False, include_input=False):
        field = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{field}: {str(item['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        limit = request.app[SETTINGS].server.max_body_bytes
        raise PayloadTooLarge(f"request body over {limit} bytes") from exc
    if not raw:
        raise BadRequest("a JSON body is required", code="invalid_json")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc), code="validation_error") from exc
