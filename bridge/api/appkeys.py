"""Typed keys for what the aiohttp application and each request carry."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from bridge.directory import Company, Directory
from bridge.recording.service import Recordings
from bridge.session.admission import Admission
from bridge.session.calls import CallService
from bridge.session.fleet import FleetLink
from bridge.session.manager import SessionManager
from bridge.settings import Settings


@dataclass(slots=True)
class DirectoryHolder:
    """The current companies and keys; replaced whole on SIGHUP (the app's state is frozen)."""

    current: Directory
    # How SIGHUP builds the new one from fresh settings (the admin service adds its stored companies).
    rebuild: Callable[[Settings], Directory] = Directory.from_settings
    # Told of every key that authenticated a request (the admin service keeps last_used_at).
    on_key_used: Callable[[str], None] | None = None

    def key_used(self, keys: Iterable[str]) -> None:
        if self.on_key_used is not None:
            for key in keys:
                self.on_key_used(key)


SETTINGS = web.AppKey("settings", Settings)
DIRECTORY = web.AppKey("directory", DirectoryHolder)
MANAGER = web.AppKey("manager", SessionManager)
CALLS = web.AppKey("calls", CallService)
ADMISSION = web.AppKey("admission", Admission)
RECORDINGS = web.AppKey("recordings", Recordings)  # absent in apps built without start_services
FLEET = web.AppKey("fleet", FleetLink)  # absent in apps built without start_services

COMPANY = web.RequestKey("company", Company)
