"""The shipped files a telephony engineer installs: the systemd unit and the README's commands."""

from __future__ import annotations

import configparser
from pathlib import Path

from bridge.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]


def unit(name: str = "bridge.service") -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive in systemd
    parser.read(REPO / "systemd" / name)
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


def test_template_unit_is_the_same_service_as_one_node_each() -> None:
    single, template = unit()["Service"], unit("bridge@.service")["Service"]
    assert template["ExecStart"] == single["ExecStart"] + " --reuse-port"  # the instances share the ports
    assert template["Environment"] == "BRIDGE_CLUSTER__NODE_ID=%H-%i"  # the last Environment= line
    differing = {key for key in single if template.get(key) != single[key]}
    assert differing == {"ExecStart", "Environment"}  # hardening, limits, watchdog and stop alike
    assert template["LimitNOFILE"] == single["LimitNOFILE"]


def test_readme_gives_the_install_and_test_commands_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pip install -e '.[test]'" in readme
    assert "python -m pip install -q -e '.[test]'" in ci
    assert "python -m pytest -q" in readme
    assert "python -m pytest -q" in ci
