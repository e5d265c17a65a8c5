"""GET /api/openapi.json: the OpenAPI 3.1 document of every route the app serves (no auth)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from bridge.api.openapi import OPERATIONS, Operation, build_document, register


def _version() -> str:
    try:
        return version("bridge")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0"


async def openapi_document(request: web.Request) -> web.Response:
    registry = request.app[OPERATIONS]
    if registry.document is None:  # built once, on first use: every route is registered by then
        registry.document = build_document(registry.items, title="bridge", version=_version())
    return web.json_response(registry.document)


OPERATIONS_DOC = (
    Operation(
        "GET",
        "/api/openapi.json",
        openapi_document,
        "This document",
        "meta",
        auth="none",
        text_response="application/json",
    ),
)


def setup_routes(app: web.Application) -> None:
    register(app, OPERATIONS_DOC)
