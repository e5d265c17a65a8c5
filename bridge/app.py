"""Composition root: builds every part from Settings, owns signals, shuts down in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bridge.api.appkeys import DIRECTORY
from bridge.api.factory import create_app
from bridge.asterisk.audiosocket_server import AudioSocketEndpoint
from bridge.asterisk.media_ws import MEDIA_PATH, MediaEndpoint
from bridge.directory import Directory
from bridge.logging import get_logger
from bridge.providers.base import Provider
from bridge.providers.factory import provider_for
from bridge.sdnotify import Notifier
from bridge.session.manager import SessionManager
from bridge.session.session import Session
from bridge.settings import AgentSettings, ConfigError, Settings, load_settings

Reloader = Callable[[], Settings]


def settings_reloader(path: Path | None) -> Reloader | None:
    return None if path is None else (lambda: load_settings(path))


@dataclass
class Services:
    """Everything that listens, started in order; `close` stops them in reverse."""

    settings: Settings
    manager: SessionManager
    app: web.Application
    runner: web.AppRunner
    http_port: int
    audiosocket: asyncio.Server | None = None

    @property
    def audiosocket_port(self) -> int | None:
        return self.audiosocket.sockets[0].getsockname()[1] if self.audiosocket else None

    async def close(self) -> None:
        if self.audiosocket is not None:
            self.audiosocket.close()
        await self.runner.cleanup()


def make_provider_picker(app: web.Application, settings: Settings) -> Callable[[Session], Provider]:
    holder = app[DIRECTORY]

    def make_provider(session: Session) -> Provider:
        company = holder.current.companies.get(session.company_id)
        agent = company.settings.agent if company is not None else AgentSettings()
        return provider_for(agent, settings)

    return make_provider


async def start_services(settings: Settings) -> Services:
    """Build and start the HTTP API with the media socket (raises OSError if a port is taken)."""
    manager = SessionManager(
        max_calls=settings.server.max_calls, pending_ttl_seconds=settings.server.pending_ttl_seconds
    )
    app = create_app(settings, manager)
    holder = app[DIRECTORY]
    media = MediaEndpoint(
        manager=manager,
        directory=lambda: holder.current,
        make_provider=make_provider_picker(app, settings),
    )
    app.router.add_get(MEDIA_PATH, media.handle)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    services = Services(settings, manager, app, runner, http_port=0)
    try:
        site = web.TCPSite(runner, settings.server.host, settings.server.port, reuse_address=True)
        await site.start()
        services.http_port = runner.addresses[0][1]
        if settings.audiosocket.enabled:
            endpoint = AudioSocketEndpoint(
                manager=manager,
                make_provider=make_provider_picker(app, settings),
                webhookless_company=settings.audiosocket.webhookless_company,
            )
            services.audiosocket = await asyncio.start_server(
                endpoint.handle, settings.audiosocket.host, settings.audiosocket.port, reuse_address=True
            )
    except OSError:
        await services.close()
        raise
    return services


async def serve(settings: Settings, *, reload_settings: Reloader | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT, then drain and exit 0."""
    log = get_logger("app")
    notifier = Notifier()
    try:
        services = await start_services(settings)
    except OSError as exc:
        log.error("cannot_listen", host=settings.server.host, error=exc.strerror)
        return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if reload_settings is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload, services.app, reload_settings, notifier)

    log.info(
        "listening",
        http=f"{settings.server.host}:{services.http_port}",
        audiosocket=f"{settings.audiosocket.host}:{services.audiosocket_port}"
        if services.audiosocket
        else None,
        max_calls=settings.server.max_calls,
        companies=len(settings.companies),
    )
    notifier.ready(f"serving on {settings.server.host}:{services.http_port}")
    watchdog = (
        asyncio.create_task(_watchdog(notifier, notifier.watchdog_interval))
        if notifier.watchdog_interval
        else None
    )
    try:
        await stop.wait()
        notifier.stopping()
        log.info("shutdown_requested", live_calls=services.manager.capacity().active_calls)
        await services.manager.drain(settings.server.drain_seconds)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await services.close()
    log.info("stopped", calls=dict(services.manager.outcomes))
    return 0


def _reload(app: web.Application, reload_settings: Reloader, notifier: Notifier) -> None:
    """SIGHUP: swap companies and keys without touching live calls; keep the old ones on error."""
    log = get_logger("app")
    try:
        fresh = reload_settings()
    except ConfigError as exc:
        log.error("reload_failed", problems=exc.problems)
        return
    app[DIRECTORY].current = Directory.from_settings(fresh)
    log.info("reloaded", companies=len(fresh.companies), note="other sections need a restart")
    notifier.ready("reloaded")


async def _watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
