"""The benchmark's command line and the bridge config it generates (no processes started)."""

from __future__ import annotations

import argparse
import importlib.util
import resource
from pathlib import Path

import pytest

from bench.__main__ import build_parser, parse_calls
from bench.daemon import FAKE_MODELS, bridge_config, parse_listening, pinned
from bench.limits import fds_needed, raise_nofile_limit
from bench.loadgen import SETUP_ALLOWANCE_S, LoadSpec
from bench.runner import fd_warning, launch_rate, provider_settings, setup_allowance
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


@pytest.mark.parametrize("provider", ["echo", *FAKE_MODELS])
def test_generated_config_is_valid(tmp_path: Path, provider: str) -> None:
    fake = FAKE_MODELS.get(provider)
    url = None
    if fake is not None:
        url = "http://127.0.0.1:1/api/calls" if fake.provider == "ultravox" else "ws://127.0.0.1:1/x"
    text = bridge_config(
        connector_hash=hash_key("c"),
        company_hash=hash_key("k"),
        max_calls=210,
        db_path=tmp_path / "b.db",
        provider=provider,  # type: ignore[arg-type]
        model_url=url,
    )
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    settings = load_settings(path)
    assert settings.server.max_calls == 210
    assert settings.server.port == 0
    assert settings.companies[0].agent.provider == (fake.provider if fake else "echo")
    if fake is not None:
        assert settings.providers.section(fake.provider).model == fake.model


def test_provider_settings_reach_the_fake_models_section(tmp_path: Path) -> None:
    argv = ["--provider", "openai-fake", "--provider-setting", "uplink_batch_ms=40"]
    args = build_parser().parse_args(argv)
    lines = provider_settings(args.provider_setting, args.provider)
    assert lines == ["uplink_batch_ms = 40"]
    text = bridge_config(
        connector_hash=hash_key("c"),
        company_hash=hash_key("k"),
        max_calls=10,
        db_path=tmp_path / "b.db",
        provider="openai-fake",
        model_url="ws://127.0.0.1:1/x",
        provider_settings=lines,
    )
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    assert load_settings(path).providers.openai.uplink_batch_ms == 40
    for bad in ("uplink_batch_ms", "=40", "uplink_batch_ms=forty"):
        with pytest.raises(SystemExit, match="--provider-setting"):
            provider_settings([bad], "openai-fake")
    with pytest.raises(SystemExit, match="needs a fake model"):
        provider_settings(["uplink_batch_ms=40"], "echo")  # echo has no [providers.*] section


@pytest.mark.parametrize("provider", list(FAKE_MODELS))
def test_each_fake_model_module_exists(provider: str) -> None:
    module = FAKE_MODELS[provider].module
    assert importlib.util.find_spec(module) is not None, module
    assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} cannot run as a process"


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


def test_burst_and_compare_options() -> None:
    args = build_parser().parse_args(["--calls", "200", "--burst", "--burst-window", "0"])
    assert args.burst
    assert args.burst_window == 0.0
    assert launch_rate(args, 200) == 0.0  # all at once
    args = build_parser().parse_args(["--calls", "200", "--burst"])
    assert launch_rate(args, 200) == 200.0  # 200 calls within the default 1 s
    args = build_parser().parse_args(["--launch-rate", "25"])
    assert launch_rate(args, 500) == 25.0
    args = build_parser().parse_args(["--compare", "HEAD~1,HEAD", "--repeat", "2"])
    assert args.compare == ["HEAD~1,HEAD"]
    assert args.repeat == 2
    assert build_parser().parse_args(["--compare", "a", "b"]).compare == ["a", "b"]


def test_setup_allowance_grows_with_slow_placing() -> None:
    assert setup_allowance(1, 25.0) == pytest.approx(SETUP_ALLOWANCE_S + 1 / 25)
    assert setup_allowance(500, 0.0) == SETUP_ALLOWANCE_S  # all at once
    # 500 calls at 25/s take up to 20 s to place: the window must still open after the last one is up
    assert setup_allowance(500, 25.0) == pytest.approx(SETUP_ALLOWANCE_S + 500 / 25)


def test_generated_config_admits_a_500_call_step(tmp_path: Path) -> None:
    text = bridge_config(
        connector_hash=hash_key("c"),
        company_hash=hash_key("k"),
        max_calls=500 * 2 + 10,
        db_path=tmp_path / "b.db",
        provider="echo",
    )
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    assert load_settings(path).server.max_calls == 1010


def test_file_descriptor_limit() -> None:
    soft, hard = raise_nofile_limit()
    assert (soft, hard) == resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft == hard or hard == resource.RLIM_INFINITY
    assert fd_warning(10, 1024) is None
    warning = fd_warning(500, 1024)
    assert warning is not None
    assert "500 calls" in warning
    assert fds_needed(500) > 1024
