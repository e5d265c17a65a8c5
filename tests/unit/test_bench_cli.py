"""The benchmark's command line and the bridge config it generates (no processes started)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench.__main__ import build_parser, parse_calls
from bench.daemon import bridge_config, parse_listening, pinned
from bench.loadgen import LoadSpec
from bridge.keys import hash_key
from bridge.settings import load_settings


def test_parse_calls_single_and_ramp() -> None:
    assert parse_calls("100") == [100]
    assert parse_calls("10,50,100,200") == [10, 50, 100, 200]
    for bad in ("", "x", "10,-1", "0"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_calls(bad)


def test_parser_defaults_and_choices() -> None:
    args = build_parser().parse_args(["--calls", "10,50", "--transport", "audiosocket", "--format", "ulaw"])
    assert args.calls == [10, 50]
    assert args.transport == "audiosocket"
    assert args.format == "ulaw"
    assert args.provider == "echo"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--provider", "gemini"])


@pytest.mark.parametrize("provider", ["echo", "openai-fake"])
def test_generated_config_is_valid(tmp_path: Path, provider: str) -> None:
    text = bridge_config(
        connector_hash=hash_key("c"),
        company_hash=hash_key("k"),
        max_calls=210,
        db_path=tmp_path / "b.db",
        provider=provider,  # type: ignore[arg-type]
        openai_url="ws://127.0.0.1:1/v1/realtime" if provider == "openai-fake" else None,
    )
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    settings = load_settings(path)
    assert settings.server.max_calls == 210
    assert settings.server.port == 0
    assert settings.companies[0].agent.provider == ("echo" if provider == "echo" else "openai")


def test_parse_listening_line() -> None:
    line = '{"event": "listening", "http": "127.0.0.1:41234", "audiosocket": "127.0.0.1:40000"}'
    assert parse_listening(line) == (41234, 40000)
    assert parse_listening('{"event": "listening", "http": "127.0.0.1:8080", "audiosocket": null}') == (
        8080,
        None,
    )
    assert parse_listening("not json") is None
    assert parse_listening('{"event": "call_started"}') is None


def test_pinned_without_a_core_is_unchanged() -> None:
    assert pinned(["x"], None) == ["x"]
    assert pinned(["x"], 10_000) == ["x"]


def test_load_spec_json_round_trip() -> None:
    spec = LoadSpec(url="http://127.0.0.1:1", connector_key="k", called="+1", calls=3, seconds=2.0)
    assert LoadSpec.from_json(spec.to_json()) == spec
