"""The fake Asterisk is an independent implementation: it must not reuse the bridge's Asterisk code."""

from __future__ import annotations

import ast
from pathlib import Path

SIMULATE = Path(__file__).resolve().parents[2] / "bridge" / "simulate"
PURE = ("chan_model", "wire", "g711")  # protocol and codec logic: no sockets, clocks or event loop
IO = ("asyncio", "socket", "time", "aiohttp", "websockets", "logging")


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            found.add(node.module or "")
    return found


def test_simulate_uses_only_audio_formats_from_the_bridge() -> None:
    files = sorted(SIMULATE.glob("*.py"))
    assert len(files) > 5
    for path in files:
        bridge_imports = {m for m in imports(path) if m == "bridge" or m.startswith("bridge.")}
        outside = {m for m in bridge_imports if not m.startswith("bridge.simulate")}
        assert outside <= {"bridge.audio.formats"}, f"{path.name} imports {outside}"


def test_protocol_model_is_pure() -> None:
    for name in PURE:
        found = imports(SIMULATE / f"{name}.py")
        assert not {m for m in found if m.split(".")[0] in IO}, f"{name} does I/O"
