"""The aiohttp application factory for the HTTP API."""

from __future__ import annotations

from aiohttp import web

from bridge.api import routes_calls, routes_company, routes_health, routes_webhook
from bridge.api.appkeys import CALLS, DIRECTORY, MANAGER, SETTINGS, DirectoryHolder
from bridge.api.middleware import access_log_middleware, auth_middleware, error_middleware
from bridge.directory import Directory
from bridge.session.calls import CallService
from bridge.session.manager import SessionManager
from bridge.settings import Settings


def create_app(
    settings: Settings,
    manager: SessionManager,
    calls: CallService,
    directory: Directory | None = None,
) -> web.Application:
    app = web.Application(
        middlewares=[access_log_middleware, error_middleware, auth_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[DIRECTORY] = DirectoryHolder(directory or Directory.from_settings(settings))
    app[MANAGER] = manager
    app[CALLS] = calls
    routes_health.setup_routes(app)
    routes_company.setup_routes(app)
    routes_webhook.setup_routes(app)
    routes_calls.setup_routes(app)
    return app
