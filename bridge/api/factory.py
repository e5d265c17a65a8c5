"""The aiohttp application factory for the HTTP API."""

from __future__ import annotations

from aiohttp import web

from bridge.api import (
    routes_calls,
    routes_company,
    routes_dashboard,
    routes_health,
    routes_openapi,
    routes_webhook,
    routes_whatsapp,
)
from bridge.api.appkeys import ADMISSION, CALLS, DIRECTORY, MANAGER, SETTINGS, DirectoryHolder
from bridge.api.middleware import access_log_middleware, auth_middleware, error_middleware
from bridge.api.ratelimits import address_limit_middleware, key_limit_middleware, setup_rate_limits
from bridge.directory import Directory
from bridge.session.admission import Admission
from bridge.session.calls import CallService
from bridge.settings import Settings


def create_app(
    settings: Settings,
    admission: Admission,
    calls: CallService,
    directory: DirectoryHolder | None = None,
) -> web.Application:
    """The API over `admission` (who may create calls) and `calls` (what a company may do with them).
    `directory` is the holder SIGHUP swaps; the admission reads companies through the same holder."""
    app = web.Application(
        middlewares=[
            access_log_middleware,
            address_limit_middleware,
            error_middleware,
            auth_middleware,
            key_limit_middleware,
        ],
        client_max_size=settings.server.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[DIRECTORY] = directory or DirectoryHolder(Directory.from_settings(settings))
    app[MANAGER] = admission.manager
    app[ADMISSION] = admission
    app[CALLS] = calls
    setup_rate_limits(app)
    routes_openapi.setup_routes(app)
    routes_health.setup_routes(app)
    routes_company.setup_routes(app)
    routes_webhook.setup_routes(app)
    routes_calls.setup_routes(app)
    routes_whatsapp.setup_routes(app)
    routes_dashboard.setup_routes(app)
    return app
