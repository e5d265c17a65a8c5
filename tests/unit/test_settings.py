from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import SecretStr

from bridge.cli import demo_settings
from bridge.keys import hash_key, phone_digits
from bridge.settings import (
    ConfigError,
    build_settings,
    cross_check,
    load_settings,
    used_providers,
    warnings_for,
)
from bridge.settings_agents import REALTIME_PROVIDERS, UnresolvedSecret
from tests.helpers import EXAMPLE_VARIABLES, raw_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config" / "bridge.example.toml"
UNSET = "SURELY_NOT_SET_ANYWHERE_123"


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
        build_settings({"asterisk": {"ami": {"secret": f"env:{UNSET}"}}})
    assert info.value.problems == [
        f'asterisk.ami.secret: environment variable {UNSET} is not set (asterisk.control is "ami")'
    ]


def test_every_problem_is_reported_at_once() -> None:
    raw = raw_config()
    raw["server"]["port"] = 70000
    raw["companies"][0]["phones"] = ["+34987654321", "0034-bad"]
    raw["companies"][1]["agent"] = {"provider": "telepathy"}
    raw["companies"].append({"id": "acme", "api_keys": [hash_key("other")]})
    raw["companies"].append(
        {"id": "initech", "api_keys": ["acme-key-0123456789"], "phones": ["+34987654321"]}
    )  # acme's key (hashed there) and acme's phone
    raw["unknown_section"] = {}
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    text = "\n".join(info.value.problems)
    assert "server.port:" in text
    assert "companies[0].phones[1]: '0034-bad' is not an E.164 number" in text
    expected = "companies[1].agent.provider: Input should be 'echo', 'openai', 'azure_openai', 'xai'"
    assert expected in text
    assert "companies[2].id: duplicate company id 'acme' (also companies[0])" in text
    assert "companies[3].api_keys[0]: the same API key is already used by companies[0].api_keys[0]" in text
    assert "companies[3].phones[0]: +34987654321 is already a phone of company 'acme' (companies[0])" in text
    assert "unknown_section:" in text
    assert len(info.value.problems) == 7


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


def documented_variables() -> list[str]:
    """The variables the example's header says it needs (the block after "needs exactly:")."""
    lines = EXAMPLE.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("this file needs exactly:"))
    names = []
    for line in lines[start + 1 :]:
        match = re.match(r"^#   ([A-Z][A-Z0-9_]+) ", line)
        if match is None:
            break
        names.append(match.group(1))
    return names


@pytest.fixture
def only_documented_variables(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    names = documented_variables()
    for name in names:
        monkeypatch.setenv(name, f"value-of-{name}")
    return names


def test_example_config_documents_exactly_the_variables_it_needs() -> None:
    assert documented_variables() == ["BRIDGE_AMI_SECRET", "ACME_CRM_TOKEN", "ACME_WEBHOOK_SECRET"]


@pytest.mark.usefixtures("only_documented_variables")
def test_example_config_is_valid_and_covers_every_key() -> None:
    example = EXAMPLE
    settings = load_settings(example)
    assert settings.asterisk.ami.secret.get_secret_value() == "value-of-BRIDGE_AMI_SECRET"
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


@pytest.mark.parametrize("missing", ["BRIDGE_AMI_SECRET", "ACME_CRM_TOKEN", "ACME_WEBHOOK_SECRET"])
def test_example_config_fails_naming_a_missing_variable(
    only_documented_variables: list[str], missing: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(missing)
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLE)
    assert len(info.value.problems) == 1
    assert f"environment variable {missing} is not set" in info.value.problems[0]


def test_unused_secrets_need_no_variable_and_stay_unusable(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXAMPLE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    raw = raw_config()  # both companies on echo; AMI control without a secret
    raw["providers"] = {name: {"api_key": f"env:{UNSET}"} for name in REALTIME_PROVIDERS}
    raw["asterisk"] = {"control": "ami", "ari": {"password": f"env:{UNSET}"}}
    settings = build_settings(raw)
    for name in REALTIME_PROVIDERS:
        key = settings.providers.realtime(name).api_key
        assert isinstance(key, UnresolvedSecret)
        assert key.get_secret_value() == ""
    assert settings.asterisk.ari.password.get_secret_value() == ""
    assert all(UNSET not in note for note in warnings_for(settings))


def test_an_unresolved_secret_is_never_taken_for_a_configured_one() -> None:
    unresolved = UnresolvedSecret("SOME_NAME")
    assert unresolved.get_secret_value() == ""
    assert unresolved != SecretStr("")
    assert SecretStr("") != unresolved
    assert unresolved == UnresolvedSecret("SOME_NAME")
    assert unresolved != UnresolvedSecret("OTHER_NAME")
    assert "SOME_NAME" in repr(unresolved)


def company_on(provider: str, company_id: str = "acme", **extra: Any) -> dict[str, Any]:
    return {"id": company_id, "api_keys": [hash_key(company_id)], "agent": {"provider": provider}, **extra}


@pytest.mark.parametrize("provider", REALTIME_PROVIDERS)
def test_a_used_provider_key_must_resolve(provider: str) -> None:
    raw = {
        "providers": {provider: {"api_key": f"env:{UNSET}"}},
        "companies": [company_on(provider), company_on("echo", "globex"), company_on(provider, "initech")],
    }
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert info.value.problems == [
        f"providers.{provider}.api_key: environment variable {UNSET} is not set "
        "(used by companies[0] acme, companies[2] initech)"
    ]


@pytest.mark.parametrize("provider", REALTIME_PROVIDERS)
def test_a_used_provider_without_a_key_is_an_error(provider: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({"companies": [company_on("echo"), company_on(provider, "globex")]})
    assert info.value.problems == [
        f"companies[1].agent.provider: {provider} needs providers.{provider}.api_key"
    ]


def test_a_used_provider_key_from_the_environment_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_XAI_KEY", "xai-secret")
    settings = build_settings(
        {"providers": {"xai": {"api_key": "env:MY_XAI_KEY"}}, "companies": [company_on("xai")]}
    )
    assert settings.providers.xai.api_key.get_secret_value() == "xai-secret"


def test_environment_overrides_decide_what_is_used_and_what_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = {"providers": {"openai": {"api_key": f"env:{UNSET}"}}, "companies": [company_on("openai")]}
    monkeypatch.setenv("BRIDGE_PROVIDERS__OPENAI__API_KEY", "sk-from-override")
    assert build_settings(raw).providers.openai.api_key.get_secret_value() == "sk-from-override"

    monkeypatch.setenv("BRIDGE_ASTERISK__CONTROL", "ari")
    raw["asterisk"] = {"ari": {"password": f"env:{UNSET}"}}
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert info.value.problems == [
        f'asterisk.ari.password: environment variable {UNSET} is not set (asterisk.control is "ari")'
    ]


def test_a_company_tool_header_secret_is_always_required() -> None:
    tool = {
        "name": "lookup",
        "url": "https://crm.example/lookup",
        "headers": {"Authorization": f"env:{UNSET}"},
    }
    raw = {"companies": [company_on("echo", agent={"provider": "echo", "tools": [tool]})]}
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert info.value.problems == [
        f"companies[0].agent.tools[0].headers.Authorization: environment variable {UNSET} is not set"
    ]


def test_an_unset_variable_for_an_api_key_is_an_error_where_it_is_written() -> None:
    with pytest.raises(ConfigError) as info:
        build_settings({"connector": {"api_keys": [f"env:{UNSET}"]}})
    assert info.value.problems == [f"connector.api_keys[0]: environment variable {UNSET} is not set"]


def test_an_empty_control_secret_is_a_warning_and_the_demo_still_validates() -> None:
    settings, _, _ = demo_settings()
    assert settings.asterisk.ami.secret.get_secret_value() == ""
    notes = warnings_for(settings)
    assert any(note.startswith("asterisk.ami.secret: empty; call control is off") for note in notes)


def test_used_providers_names_each_use() -> None:
    settings = build_settings(
        {
            "providers": {"openai": {"api_key": "sk-x"}},
            "companies": [
                company_on("openai"),
                company_on("echo", "globex"),
                company_on("openai", "initech"),
            ],
        }
    )
    uses = used_providers(settings)
    assert list(uses) == ["openai", "echo"]
    assert [(use.key_path, use.user) for use in uses["openai"]] == [
        ("companies[0].agent.provider", "companies[0] acme"),
        ("companies[2].agent.provider", "companies[2] initech"),
    ]


def test_a_phone_on_two_companies_is_an_error() -> None:
    raw = raw_config()
    raw["companies"][1]["phones"] = ["+442071234567", "+34987654321"]
    with pytest.raises(ConfigError) as info:
        build_settings(raw)
    assert info.value.problems == [
        "companies[1].phones[1]: +34987654321 is already a phone of company 'acme' (companies[0])"
    ]


def test_a_phone_shared_through_an_environment_override_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    companies = [
        {"id": "acme", "phones": ["+34987654321"]},
        {"id": "globex", "phones": ["+34987654321"]},
    ]
    monkeypatch.setenv("BRIDGE_COMPANIES", json.dumps(companies))
    with pytest.raises(ConfigError) as info:
        build_settings({})
    assert info.value.problems == [
        "companies[1].phones[0]: +34987654321 is already a phone of company 'acme' (companies[0])"
    ]


E164_NUMBERS = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


@st.composite
def formatted(draw: st.DrawFn, number: str) -> str:
    """The same number as people write it: with or without '+', digits grouped by spaces or dashes."""
    digits = number[1:]
    separators = draw(
        st.lists(st.sampled_from(["", "", " ", "-"]), min_size=len(digits), max_size=len(digits))
    )
    body = "".join(sep + digit for sep, digit in zip(separators, digits, strict=True)).strip(" -")
    return draw(st.sampled_from(["+", "", "+ "])) + body


@given(data=st.data(), number=E164_NUMBERS)
def test_a_shared_phone_is_found_however_it_is_written(data: st.DataObject, number: str) -> None:
    other = "+15550000000"
    assume(number != other)
    variant = data.draw(formatted(number))
    raw = {"companies": [{"id": "acme", "phones": [number]}, {"id": "globex", "phones": [other, variant]}]}
    assert cross_check(raw) == [
        f"companies[1].phones[1]: {variant} is already a phone of company 'acme' (companies[0])"
    ]


@given(numbers=st.lists(E164_NUMBERS, min_size=2, max_size=6, unique_by=phone_digits))
def test_distinct_phones_never_collide(numbers: list[str]) -> None:
    raw = {"companies": [{"id": f"c{index}", "phones": [number]} for index, number in enumerate(numbers)]}
    assert cross_check(raw) == []
