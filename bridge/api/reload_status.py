"""The outcome of SIGHUP config reloads, kept on the app for /health and /metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(slots=True)
class ReloadStatus:
    """Counts and times only: a problem's text stays in the log (it may quote the config file)."""

    # When the configuration in force at start-up was loaded: that load counts as a successful one.
    started_at: float = field(default_factory=time.time)
    last_ok: bool | None = None  # None until the first SIGHUP
    last_at: float | None = None
    problems: int = 0
    failures: int = 0

    def succeeded(self, at: float) -> None:
        self.last_ok, self.last_at, self.problems = True, at, 0

    def failed(self, at: float, problems: int) -> None:
        self.last_ok, self.last_at, self.problems = False, at, problems
        self.failures += 1


CONFIG_RELOAD = web.AppKey("config_reload", ReloadStatus)
