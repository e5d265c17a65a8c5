from __future__ import annotations

from pathlib import Path

import pytest

from bridge.keys import hash_key
from bridge.settings import ConfigError, build_settings, load_settings, warnings_for
from tests.helpers import raw_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_bind_loopback_only() -> None:
    settings = build_settings({})
    assert settings.server.host == "127.0.0.1"
    assert settings.audiosocket.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.storage.url == "sqlite:///var/bridge.db"


def test_toml_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text(
        "[server]\nport = 9000\nmax_calls = 7\n"
        '[[companies]]\nid = "acme"\napi_keys = ["sha256:' + "a" * 64 + '"]\nphones = ["+34987654321"]\n'
    )
    settings = load_settings(path)
    assert settings.server.port == 9000
    assert settings.server.max_calls == 7
    assert settings.companies[0].id == "acme"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bridge.toml"
    path.write_text("[server]\nport = 9000\nmax_calls = 7\n")
    monkeypatch.setenv("BRIDGE_SERVER__PORT", "9100")
    monkeypatch.setenv("BRIDGE_ASTERISK__AMI__HOST", "10.0.0.5")
    settings = load_settings(path)
    assert settings.server.port == 9100
    assert settings.server.max_calls == 7  # untouched keys of the same section stay from the file
    assert settings.asterisk.ami.host == "10.0.0.5"


def test_env_secrets_are_resolved_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_OPENAI_KEY", "sk-very-secret")
    settings = build_settings({"providers": {"openai": {"api_key": "env:MY_OPENAI_KEY"}}})
    assert settings.providers.openai.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings)
    assert "sk-very-secret" not in str(settings.model_dump())


def test_missing_env_secret_is_reported_with_its_path() -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({"asterisk": {"ami": {"secret": "env:SURELY_NOT_SET_ANYWHERE_123"}}})
    assert info.value.problems == [
        "asterisk.ami.secret: environment variable SURELY_NOT_SET_ANYWHERE_123 is not set"
    ]


def test_every_problem_is_reported_at_once() -> None:
    raw = raw_config()
    raw["server"]["port"] = 70000
    raw["companies"][0]["phones"] = ["+34987654321", "0034-bad"]
    raw["companies"][1]["agent"] = {"provider": "telepathy"}
    raw["companies"].append({"id": "acme", "api_keys": [hash_key("other")]})
    raw["companies"].append(
        {"id": "initech", "api_keys": ["acme-key-0123456789"]}
    )  # acme's key, hashed there
    raw["unknown_section"] = {}
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    text = "\n".join(info.value.problems)
    assert "server.port:" in text
    assert "companies[0].phones[1]: '0034-bad' is not an E.164 number" in text
    assert "companies[1].agent.provider: Input should be 'echo', 'openai', 'azure_openai' or 'xai'" in text
    assert "companies[2].id: duplicate company id 'acme' (also companies[0])" in text
    assert "companies[3].api_keys[0]: the same API key is already used by companies[0].api_keys[0]" in text
    assert "unknown_section:" in text
    assert len(info.value.problems) == 6


def test_company_key_reused_as_connector_key_is_an_error() -> None:
    raw = raw_config()
    raw["companies"][0]["api_keys"] = ["connector-key-xyz"]
    with pytest.raises(
        ConfigError, match=r"companies\[0\].api_keys\[0\]: the same API key is already used by connector"
    ):
        build_settings(raw)


def test_malformed_hashed_key_is_an_error() -> None:
    raw = raw_config()
    raw["connector"]["api_keys"] = ["sha256:nothex"]
    with pytest.raises(
        ConfigError, match=r"connector.api_keys\[0\]: a sha256: key must be followed by 64 hex"
    ):
        build_settings(raw)


def test_plain_keys_work_with_a_warning() -> None:
    settings = build_settings(raw_config())
    notes = warnings_for(settings)
    assert any("companies[0].api_keys[1]: plain key" in n for n in notes)
    assert all("acme-key-second" not in n for n in notes)


def test_unreadable_and_invalid_toml_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\nport=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)


def test_example_config_is_valid_and_covers_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_AMI_SECRET", "x")
    monkeypatch.setenv("BRIDGE_ARI_PASSWORD", "x")
    monkeypatch.setenv("OPENAI_API_KEY", "x")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "x")
    monkeypatch.setenv("XAI_API_KEY", "x")
    monkeypatch.setenv("ACME_CRM_TOKEN", "x")
    example = REPO / "config" / "bridge.example.toml"
    settings = load_settings(example)
    text = example.read_text()

    def keys_of(model: object, prefix: str = "") -> list[str]:
        from pydantic import BaseModel

        assert isinstance(model, BaseModel)
        found = []
        for name, value in model:
            found.append(name)
            if isinstance(value, BaseModel):
                found += keys_of(value, f"{prefix}{name}.")
        return found

    missing = [
        key
        for key in keys_of(settings)
        if not any(form in text for form in (f"{key} ", f"[{key}", f".{key}]", f".{key}."))
    ]
    assert not missing, f"example config lacks: {missing}"
