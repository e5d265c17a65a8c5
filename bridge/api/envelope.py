"""The contract's response envelope, and reading requests: bodies (strict JSON, bounded in size and
time) and query strings, each validated by a pydantic model whose 400 names the field."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, RootModel, ValidationError

from bridge.api import strict_json
from bridge.api.appkeys import SETTINGS
from bridge.errors import BadRequest, BridgeError, PayloadTooLarge, RequestTimeout

Model = TypeVar("Model", bound=BaseModel)


def ok(data: BaseModel | Mapping[str, Any], status: int = 200) -> web.Response:
    payload = data.model_dump(mode="json", by_alias=True) if isinstance(data, BaseModel) else dict(data)
    return web.json_response({"success": True, "data": payload}, status=status)


def failure(error: BridgeError) -> web.Response:
    response = web.json_response(
        {"success": False, "error": error.message, "code": error.code}, status=error.status
    )
    if error.retry_after_seconds is not None:
        response.headers["Retry-After"] = str(error.retry_after_seconds)
    return response


def describe_validation_error(exc: ValidationError, *, tagged: bool = False) -> str:
    """One line naming each bad field. `tagged`: the model is a union told apart by a field (the
    webhook's `event`), whose errors pydantic places under the tag; the client named no such field."""
    parts = []
    for item in exc.errors(include_url=False, include_input=False):
        loc = item["loc"][1:] if tagged and len(item["loc"]) > 1 else item["loc"]
        message = str(item["msg"]).removeprefix("Value error, ")
        context = item.get("ctx") or {}
        if item["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (str(context.get("discriminator", "")).strip("'"),)
            expected = context.get("expected_tags")
            message = (
                f"must be one of {expected}" if item["type"] == "union_tag_invalid" else "Field required"
            )
        field = ".".join(str(p) for p in loc) or "body"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def validated(model: type[Model], data: object) -> Model:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message = describe_validation_error(exc, tagged=issubclass(model, RootModel))
        raise BadRequest(message, code="validation_error") from exc


async def parse_body(request: web.Request, model: type[Model]) -> Model:
    server = request.app[SETTINGS].server
    try:
        async with asyncio.timeout(server.body_timeout_seconds):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise PayloadTooLarge(f"request body over {server.max_body_bytes} bytes") from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"the body did not arrive within {server.body_timeout_seconds:g} s") from exc
    if not raw:
        raise BadRequest("a JSON body is required", code="invalid_json")
    try:
        data = strict_json.loads(raw)
    except strict_json.JsonRefused as exc:
        raise BadRequest(str(exc), code="invalid_json") from exc
    if not isinstance(data, dict):
        raise BadRequest("the JSON body must be an object", code="invalid_json")
    return validated(model, data)


def parse_query(request: web.Request, model: type[Model]) -> Model:
    """The query string through `model` (a repeated parameter is refused: which one would count?)."""
    query = request.query
    values: dict[str, str] = {}
    for name in query:
        if name in values:
            continue
        found = query.getall(name)
        if len(found) > 1:
            raise BadRequest(f"{name}: given more than once", code="validation_error")
        values[name] = found[0]
    return validated(model, values)
