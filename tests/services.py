"""Real services for tests (PostgreSQL, Redis, Chromium): skipped with a one-line reason where the
machine lacks them, except when BRIDGE_REQUIRE_SERVICES=1 (set by .ci/run), where a missing service
fails the test instead: CI must never pass with those tests skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_ENV = "BRIDGE_REQUIRE_SERVICES"


def services_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") == "1"


def unavailable(reason: str) -> NoReturn:
    """Skip (or, under BRIDGE_REQUIRE_SERVICES=1, fail) the test for a missing service."""
    if services_required():
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: required here)", pytrace=False)
    pytest.skip(reason)
