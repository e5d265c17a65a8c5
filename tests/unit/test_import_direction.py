"""Imports flow one way (architecture.md rule 5), checked on the AST of every module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "bridge"

# Modules that turn bytes into events or do arithmetic: no I/O, no clocks, no logging.
PURE = (
    "bridge.audio",
    "bridge.asterisk.chan_websocket",
    "bridge.asterisk.chan_websocket_leg",
    "bridge.asterisk.leg_events",
    "bridge.asterisk.audiosocket",
    "bridge.session.state",
    "bridge.session.metrics",
    "bridge.asterisk.ws_frames",
    "bridge.keys",
    "bridge.providers.openai.events",
    "bridge.providers.openai.responses",
    "bridge.providers.openai.conversation",
    "bridge.providers.brief",
    "bridge.agents.templating",
    "bridge.agents.tasks",
    "bridge.providers.gemini.events",
    "bridge.providers.elevenlabs.events",
    "bridge.providers.deepgram.events",
    "bridge.providers.ultravox.events",
    "bridge.session.dtmf",
    "bridge.session.guards",
    "bridge.api.strict_json",
    "bridge.workers.policy",
    "bridge.store.dialect",
)
IO_MODULES = (
    "asyncio",
    "socket",
    "selectors",
    "threading",
    "subprocess",
    "time",
    "logging",
    "structlog",
    "aiohttp",
    "websockets",
    "panoramisk",
    "uvloop",
    "bridge.logging",
    "sqlite3",
    "urllib.request",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(importer_prefixes: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in MODULES.items()
        if any(within(module, p) for p in importer_prefixes)
        for target in targets
        if any(within(target, f) for f in forbidden)
    ]


def test_the_walker_sees_the_package() -> None:
    assert "bridge.session.manager" in MODULES
    assert "bridge.errors" in MODULES["bridge.session.manager"]


def test_pure_modules_do_no_io() -> None:
    assert violations(PURE, IO_MODULES) == []


def test_pure_audio_imports_no_other_bridge_code() -> None:
    found = [v for v in violations(("bridge.audio",), ("bridge",)) if "imports bridge.audio" not in v]
    assert found == []


def test_asterisk_and_providers_never_import_each_other() -> None:
    assert violations(("bridge.asterisk",), ("bridge.providers",)) == []
    assert violations(("bridge.providers",), ("bridge.asterisk",)) == []


PROVIDER_PACKAGES = tuple(
    f"bridge.providers.{name}" for name in ("openai", "gemini", "elevenlabs", "deepgram", "ultravox")
)


@pytest.mark.parametrize("package", PROVIDER_PACKAGES)
def test_each_provider_stands_alone(package: str) -> None:
    # Shared pieces live in providers/base, brief and request; one provider's change never moves another.
    others = tuple(p for p in PROVIDER_PACKAGES if p != package)
    assert violations((package,), others) == []


def test_the_fake_asterisk_shares_no_code_with_the_server_side() -> None:
    # simulate-call is a second, independent implementation of the peer: one bug cannot hide in both.
    assert violations(("bridge.simulate",), ("bridge.asterisk", "bridge.session", "bridge.api")) == []


def test_transports_produce_legs_and_leave_admission_to_the_session() -> None:
    # asterisk/ hands a MediaLeg to session.admission; it never runs a call or reads the companies.
    forbidden = ("bridge.session.call", "bridge.session.manager", "bridge.directory", "bridge.settings")
    assert violations(("bridge.asterisk.media_ws", "bridge.asterisk.audiosocket_server"), forbidden) == []


def test_api_reaches_calls_only_through_the_session_package() -> None:
    assert violations(("bridge.api",), ("bridge.asterisk", "bridge.providers", "bridge.store")) == []


def test_session_state_and_lower_layers_do_not_import_upper_ones() -> None:
    assert (
        violations(("bridge.session", "bridge.audio", "bridge.asterisk", "bridge.providers"), ("bridge.api",))
        == []
    )


@pytest.mark.parametrize("root", ["bridge.app", "bridge.cli"])
def test_nothing_imports_the_composition_root(root: str) -> None:
    allowed = {"bridge.cli", "bridge.__main__"}
    assert [v for v in violations(("bridge",), (root,)) if v.split()[0] not in allowed] == []
