"""Composition root: builds every part from Settings, owns signals, shuts down in reverse order."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from bridge.agents.catalog import AgentCatalog
from bridge.agents.scheduler import TaskScheduler
from bridge.agents.service import AgentService
from bridge.agents.store import AgentStore
from bridge.agents.task_store import TaskStore
from bridge.api import (
    routes_admin,
    routes_agents,
    routes_balance,
    routes_dashboard,
    routes_live,
    routes_report,
    routes_tasks,
    routes_usage,
    routes_webhooks,
)
from bridge.api.appkeys import DIRECTORY, FLEET, RECORDINGS, DirectoryHolder
from bridge.api.factory import create_app
from bridge.api.http_server import HeaderTimeoutAppRunner
from bridge.api.listener import AcceptingServer, DrainingTCPSite, start_stream_server
from bridge.api.openapi import register
from bridge.api.reload_status import CONFIG_RELOAD
from bridge.api.routes_media import media_operation
from bridge.api.routes_recording import recording_operations
from bridge.app_fleet import link_fleet, lost_call_writer, share_changes, share_rate_limits
from bridge.app_planner import make_call_planner
from bridge.asterisk.ami import AmiController
from bridge.asterisk.ari import AriController
from bridge.asterisk.audiosocket_server import AudioSocketEndpoint
from bridge.asterisk.media_ws import MediaEndpoint
from bridge.companies.admin import AdminService
from bridge.companies.balance import Balances
from bridge.companies.usage import UsageStore, usage_companion
from bridge.directory import Directory
from bridge.fdlimit import descriptor_problem, raise_descriptor_limit
from bridge.integrations.live import LiveHub, LiveTokens
from bridge.integrations.outbox import Outbox
from bridge.integrations.report import ReportService
from bridge.integrations.sender import WebhookSender
from bridge.integrations.webhook_store import WebhookStore
from bridge.integrations.webhooks import WebhookService
from bridge.logging import get_logger
from bridge.recording.service import Recordings
from bridge.sdnotify import Notifier
from bridge.session.admission import Admission, AdmissionPolicy, Announcement
from bridge.session.calls import CallService
from bridge.session.control import CallController, InboundCall, InboundHandler
from bridge.session.fleet import FleetLink
from bridge.session.manager import SessionManager
from bridge.session.records import CallRecorder
from bridge.session.session import Session
from bridge.settings import ConfigError, Settings, load_settings
from bridge.store import Store, open_store
from bridge.store.reports import ReportStore

Reloader = Callable[[], Settings]
# An idle keep-alive connection is closed after this (aiohttp's default is an hour); nginx uses 75 s.
KEEPALIVE_SECONDS = 75.0
# A fleet: a post-call report still pending after this long is resumed by whichever node looks.
REPORT_ABANDONED_SECONDS = 600.0


def _each(hooks: Sequence[Callable[[Session], None]], session: Session) -> None:
    for hook in hooks:
        hook(session)


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
    http: aiohttp.ClientSession
    calls: CallService
    recorder: CallRecorder
    store: Store
    controller: CallController | None = None
    audiosocket: AcceptingServer | None = None
    recordings: Recordings | None = None
    reports: ReportService | None = None
    live: LiveHub | None = None
    agents: AgentService | None = None
    tasks: TaskScheduler | None = None
    webhooks: WebhookSender | None = None
    fleet: FleetLink | None = None

    @property
    def audiosocket_port(self) -> int | None:
        return self.audiosocket.sockets[0].getsockname()[1] if self.audiosocket else None

    async def close(self) -> None:
        if self.audiosocket is not None:
            self.audiosocket.close()
        if self.tasks is not None:
            await self.tasks.close()  # no new task dials; one still calling is resolved at the next start
        await self.runner.cleanup()
        await self.calls.close()
        if self.fleet is not None:
            await self.fleet.close()  # after the calls: what is left of ours leaves the registry
        if self.controller is not None:
            await self.controller.close()
        await self.recorder.close()
        if self.recordings is not None:
            await self.recordings.close()
        if self.reports is not None:
            await self.reports.close()  # a report still pending is asked again at the next start
        if self.webhooks is not None:
            await self.webhooks.close()  # undelivered events stay pending in the store
        await self.store.close()
        await self.http.close()


def build_controller(settings: Settings) -> CallController | None:
    """AMI or ARI as `[asterisk] control` says; None when its credentials are not configured."""
    asterisk = settings.asterisk
    if asterisk.control == "ami":
        if not asterisk.ami.secret.get_secret_value():
            return None
        return AmiController(asterisk.ami, asterisk.originate, asterisk.transfer_context)
    if not asterisk.ari.password.get_secret_value():
        return None
    return AriController(
        asterisk.ari,
        asterisk.originate,
        asterisk.transfer_context,
        media_connection=asterisk.ari.media_connection,
        media_format=asterisk.ari.media_format,
        audiosocket_address=f"{settings.audiosocket.host}:{settings.audiosocket.port}",
    )


def stasis_admitter(admission: Admission) -> InboundHandler:
    """ARI mode: a caller that entered Stasis(<app>,inbound,${EXTEN}) is admitted like a `connect` webhook
    (the company owning the called number, its allowed_callers, a call id used once)."""

    async def admit(call: InboundCall) -> None:
        announcement = Announcement(call.call_id, call.caller, call.called, caller_name=call.caller_name)
        await admission.announce(announcement)

    return admit


def model_client() -> aiohttp.ClientSession:
    """One HTTP client for every model socket and tool call: shared connection pool, no per-call setup.

    Its pool has no limit of its own: aiohttp's default (100 connections) made calls 101 and up wait
    for a slot until they ended provider_timeout. What bounds the sockets is admission (max_calls,
    one model socket per call) and the descriptor check at start, which counts them.
    """
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, connect=10),
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
    )


async def start_services(settings: Settings, *, reuse_port: bool = False) -> Services:
    """Build and start the HTTP API with the media socket (raises OSError if a port is taken).

    `reuse_port`: bind with SO_REUSEPORT, so `--workers N` (or several instances) share the ports.
    """
    log = get_logger("app")
    store = await open_store(settings.storage.url)
    # One process: every unfinished call is a previous life's. A fleet shares the store with nodes still
    # running theirs: a node's own leftovers come back from the registry (FleetLink's lost handler).
    interrupted = await store.mark_interrupted(time.time()) if settings.cluster is None else 0
    if interrupted:
        log.warning("calls_interrupted_by_restart", calls=interrupted)
    recorder = CallRecorder(store, checkpoint_seconds=settings.storage.checkpoint_seconds)
    recorder.start()
    # Everything that follows each call from its creation (the record first: its saves come first).
    session_hooks: list[Callable[[Session], None]] = [recorder.track]
    manager = SessionManager(
        max_calls=settings.server.max_calls,
        pending_ttl_seconds=settings.server.pending_ttl_seconds,
        on_new_session=lambda session: _each(session_hooks, session),
    )
    controller = build_controller(settings)
    if controller is not None:
        await controller.start()
    holder = DirectoryHolder(Directory.from_settings(settings))
    # Admin API: stored companies and keys join the config's before anything reads the directory.
    admin = AdminService(store, settings, publish=lambda directory: setattr(holder, "current", directory))
    await admin.load()
    holder.rebuild = admin.directory_for  # SIGHUP keeps the stored ones
    holder.on_key_used = admin.key_used
    # Agents: loaded before any call, so the first one already runs the agent it names.
    agent_catalog = AgentCatalog(lambda: holder.current)
    agents = AgentService(AgentStore(store), agent_catalog, lambda: holder.current)
    await agents.load()
    http = model_client()
    # Recordings: half-written files repaired before any call, then the retention sweeper.
    recordings = Recordings(settings.storage.recordings_dir, settings.storage.recording_retention_days)
    await recordings.start()
    # Webhooks: events written in the transaction of the state change that causes them (the outbox),
    # sent by a background task; call_completed waits for the post-call report when there is one.
    webhook_store = WebhookStore(store)
    webhook_sender = WebhookSender(webhook_store, http, lambda: holder.current, settings.webhook_delivery)
    outbox = Outbox(
        lambda: holder.current,
        has_recording=lambda company_id, call_id: recordings.path_for(company_id, call_id).is_file(),
        retry_for_seconds=settings.webhook_delivery.retry_for_seconds,
        written=webhook_sender.wake,
    )
    recorder.companions.append(outbox.on_save)
    if interrupted:  # their call_failed, which the killed process could not write
        since = time.time() - settings.webhook_delivery.retry_for_seconds
        try:
            await store.run(outbox.write_interrupted, since)
        except Exception as exc:  # the calls are safe; only their announcement is lost
            log.error("webhook_interrupted_events_failed", error=type(exc).__name__)
    reports = ReportService(
        ReportStore(store),
        store,
        lambda: holder.current,
        settings.analysis,
        http,
        saved=recorder.flush,
        agents=agent_catalog.profile,
        finished=outbox.report_finished,
    )
    outbox.awaits_report = reports.will_report
    session_hooks.append(reports.track)
    admission = Admission(
        manager,
        store,
        directory=lambda: holder.current,
        plan_call=make_call_planner(
            lambda: holder.current, settings, http, controller, recordings, agents=agent_catalog
        ),
        policy=AdmissionPolicy(
            allow_unauthenticated_media=settings.connector.allow_unauthenticated_media,
            webhookless_audiosocket_company=settings.audiosocket.webhookless_company,
        ),
    )
    if isinstance(controller, AriController):
        controller.on_inbound = stasis_admitter(admission)
    calls = CallService(
        admission,
        store,
        controller,
        dial_timeout_seconds=settings.asterisk.originate.timeout_seconds,
        agents=agent_catalog,
    )
    link = link_fleet(settings, manager, admission, calls, lambda: holder.current)
    session_hooks.append(link.track)
    app = create_app(settings, admission, calls, holder)
    app[FLEET] = link
    share_rate_limits(settings, app)
    link.serve("live_calls", routes_dashboard.fleet_live_calls(manager))
    register(app, [media_operation(MediaEndpoint(admission).handle)])
    app[RECORDINGS] = recordings
    register(app, recording_operations(recordings))
    live = LiveHub()
    routes_live.setup_routes(app, live, LiveTokens())
    routes_report.setup_routes(app, reports)
    routes_webhooks.setup_routes(
        app, WebhookService(webhook_store, webhook_sender, settings.webhook_delivery.retry_for_seconds)
    )
    routes_agents.setup_routes(app, agents)
    # Tasks: the store is the queue; the scheduler starts once everything it dials through listens.
    tasks = TaskScheduler(
        TaskStore(store), calls, settings.tasks, settings.server.max_calls, fleet=settings.cluster is not None
    )
    routes_tasks.setup_routes(app, tasks)
    routes_admin.setup_routes(app, admin)
    admin.start()  # key last-use flushes; the final one runs at cleanup, before the store closes
    app.on_cleanup.append(lambda _: admin.close())
    # Balances: prepaid credit as a ledger, loaded before the listeners start; a call is charged in
    # its final save's transaction, and balance_low goes out through the webhook outbox.
    balances = Balances(store, lambda: holder.current, write_event=outbox.write_company_event)
    await balances.load()
    admission.funds = balances
    recorder.companions.append(balances.on_save)
    routes_balance.setup_routes(app, balances)
    # Usage: one row per call and model, committed with the call's final record; read by /api/usage.
    recorder.companions.append(usage_companion)
    usage = UsageStore(store)
    try:  # calls a crash cut short (and older ones) get their rows from their last record
        await usage.backfill()
    except Exception as exc:  # the records are safe; only their usage rows are missing
        log.error("usage_backfill_failed", error=type(exc).__name__)
    routes_usage.setup_routes(app, usage)
    share_changes(link, admin, balances)
    link.write_lost = lost_call_writer(
        store, outbox, settings.webhook_delivery.retry_for_seconds, usage.backfill
    )
    try:
        await link.start()  # joins the fleet: claims, control for our calls, lost nodes
    except Exception:
        await store.close()
        await http.close()
        raise
    runner = HeaderTimeoutAppRunner(
        app,
        header_timeout_seconds=settings.server.header_timeout_seconds,
        handle_signals=False,
        access_log=None,
        keepalive_timeout=KEEPALIVE_SECONDS,
    )
    await runner.setup()
    services = Services(
        settings,
        manager,
        app,
        runner,
        http_port=0,
        http=http,
        calls=calls,
        recorder=recorder,
        store=store,
        controller=controller,
        reports=reports,
        live=live,
        webhooks=webhook_sender,
        agents=agents,
        recordings=recordings,
        fleet=link,
    )
    try:
        site = DrainingTCPSite(  # see api/listener.py
            runner, settings.server.host, settings.server.port, reuse_port=reuse_port or None
        )
        await site.start()
        services.http_port = runner.addresses[0][1]
        if settings.audiosocket.enabled:
            endpoint = AudioSocketEndpoint(admission)
            services.audiosocket = await start_stream_server(  # a burst is accepted at once, as for HTTP
                endpoint.handle, settings.audiosocket.host, settings.audiosocket.port, reuse_port=reuse_port
            )
    except OSError:
        await services.close()
        raise
    services.tasks = tasks
    await tasks.start()
    webhook_sender.start()  # what a previous process left pending goes out now
    if settings.cluster is None:
        resumed = await reports.resume()
        if resumed:
            log.info("reports_resumed", reports=resumed)
    else:  # a report pending this long has lost its node (one attempt is bounded by the text model's timeout)
        link.every(
            REPORT_ABANDONED_SECONDS / 5, lambda: reports.resume(time.time() - REPORT_ABANDONED_SECONDS)
        )
    return services


async def serve(
    settings: Settings, *, reload_settings: Reloader | None = None, reuse_port: bool = False
) -> int:
    """Run the daemon until SIGTERM/SIGINT, then drain and exit 0 (2: max_calls above the fd limit)."""
    log = get_logger("app")
    loop = asyncio.get_running_loop()
    # Every signal is handled from before the first log line: /health answers while start-up still runs
    # (tasks, webhooks, reports), and a default action would kill the process there. A SIGTERM or SIGINT
    # that early stops the daemon as soon as it has started.
    # A SIGHUP that early is remembered and applied once start-up ends, as systemd queues a reload
    # behind a start: an operator's edit is never dropped because it raced the daemon's start.
    stop = asyncio.Event()
    reload_during_startup = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _defer_reload, reload_during_startup)
    # The descriptor limit is the process's, not the file's: checked here, not by check-config.
    limit = raise_descriptor_limit()
    log.info("descriptor_limit", soft=limit.soft, hard=limit.hard, started_with=limit.before)
    problem = descriptor_problem(settings.server.max_calls, limit.soft)
    if problem is not None:
        _stop_handling_signals(loop)
        log.error("max_calls_above_descriptor_limit", problem=problem)
        return 2
    notifier = Notifier()
    try:
        services = await start_services(settings, reuse_port=reuse_port)
    except OSError as exc:
        _stop_handling_signals(loop)
        log.error("cannot_listen", host=settings.server.host, error=exc.strerror)
        return 1

    on_sighup: Callable[[], None] = (
        functools.partial(_reload, services.app, reload_settings, notifier)
        if reload_settings is not None
        else functools.partial(
            _ignore_reload, "no config file: the zero-config demo keeps its companies and keys"
        )
    )
    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    if reload_during_startup.is_set():
        on_sighup()

    log.info(
        "listening",
        http=f"{settings.server.host}:{services.http_port}",
        audiosocket=f"{settings.audiosocket.host}:{services.audiosocket_port}"
        if services.audiosocket
        else None,
        max_calls=settings.server.max_calls,
        companies=len(settings.companies),
    )
    # Everything built so far lives as long as the process: out of the collector's sight, a full
    # (gen-2) collection no longer walks it, which measured 60-80 ms pauses during call bursts.
    gc.freeze()
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
        _stop_handling_signals(loop)
        if watchdog is not None:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
        await services.close()
    log.info("stopped", calls=dict(services.manager.outcomes))
    return 0


def _stop_handling_signals(loop: asyncio.AbstractEventLoop) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.remove_signal_handler(sig)


def _reload(app: web.Application, reload_settings: Reloader, notifier: Notifier) -> None:
    """SIGHUP: swap companies and keys without touching live calls; keep the old ones on error."""
    log = get_logger("app")
    status = app[CONFIG_RELOAD]
    try:
        fresh = reload_settings()
    except ConfigError as exc:
        status.failed(time.time(), len(exc.problems))
        log.error("reload_failed", problems=exc.problems, failures=status.failures)
        return
    holder = app[DIRECTORY]
    holder.current = holder.rebuild(fresh)  # stored companies and keys stay (the admin API's)
    status.succeeded(time.time())
    log.info("reloaded", companies=len(fresh.companies), note="other sections need a restart")
    notifier.ready("reloaded")


def _defer_reload(pending: asyncio.Event) -> None:
    get_logger("app").info("reload_deferred", reason="still starting: applied once start-up ends")
    pending.set()


def _ignore_reload(reason: str) -> None:
    get_logger("app").warning("reload_ignored", reason=reason)


async def _watchdog(notifier: Notifier, interval: float) -> None:
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)
