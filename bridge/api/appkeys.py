"""Typed keys for what the aiohttp application and each request carry."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from bridge.directory import Company, Directory
from bridge.recording.service import Recordings
from bridge.session.admission import Admission
from bridge.session.calls import CallService
from bridge.session.manager import SessionManager
from bridge.settings import Settings


@dataclass(slots=True)
class DirectoryHolder:
    """The current companies and keys; replaced whole on SIGHUP (the app's state is frozen)."""

    current: Directory


SETTINGS = web.AppKey("settings", Settings)
DIRECTORY = web.AppKey("directory", DirectoryHolder)
MANAGER = web.AppKey("manager", SessionManager)
CALLS = web.AppKey("calls", CallService)
ADMISSION = web.AppKey("admission", Admission)
RECORDINGS = web.AppKey("recordings", Recordings)  # absent in apps built without start_services

COMPANY = web.RequestKey("company", Company)
