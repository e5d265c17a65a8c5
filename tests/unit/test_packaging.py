"""The shipped files a telephony engineer installs: the systemd unit and the README's commands."""

from __future__ import annotations

import configparser
from pathlib import Path

from bridge.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in systemd
    parser.read(REPO / "systemd" / "bridge.service")
    return parser


def test_unit_is_hardened_and_notifies() -> None:
    service = unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/bridge"
    assert service["User"] == "bridge"
    assert service["Restart"] == "on-failure"
    assert service["EnvironmentFile"].endswith("secrets.env")
    assert "WatchdogSec" in service


def test_stop_timeout_exceeds_the_default_drain() -> None:
    timeout = float(unit()["Service"]["TimeoutStopSec"])
    assert timeout > ServerSettings().drain_seconds


def test_readme_gives_the_install_and_test_commands_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pip install -e '.[test]'" in readme
    assert "python -m pip install -q -e '.[test]'" in ci
    assert "python -m pytest -q" in readme
    assert "python -m pytest -q" in ci
