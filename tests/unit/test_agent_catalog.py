"""The agent catalog (which profile a call runs with), the placeholder check, and the inbound webhook's
extra fields as variables."""

from __future__ import annotations

import pytest

from bridge.agents.catalog import AgentCatalog, StoredAgent
from bridge.agents.templating import call_facts
from bridge.api.routes_webhook import webhook_variables
from bridge.directory import Directory
from bridge.errors import BadRequest, Conflict, NotFound
from bridge.settings_agents import AgentSettings
from tests.helpers import ACME_PHONE, make_settings

DIRECTORY = Directory.from_settings(make_settings())
FACTS = call_facts(
    call_id="c1",
    caller="+34600111222",
    called=ACME_PHONE,
    direction="inbound",
    caller_name="",
    company="Acme",
)


def agent(agent_id: str, *, company: str = "acme", enabled: bool = True, **profile: object) -> StoredAgent:
    return StoredAgent(
        id=agent_id,
        company_id=company,
        name=agent_id,
        enabled=enabled,
        phones=tuple(str(p) for p in profile.pop("phones", ())),  # type: ignore[attr-defined]
        profile=profile,
        settings=AgentSettings.model_validate(profile),
        created_at=1.0,
        updated_at=1.0,
    )


@pytest.fixture
def catalog() -> AgentCatalog:
    catalog = AgentCatalog(lambda: DIRECTORY)
    catalog.load(
        [
            agent("sales", instructions="Sell to {{crm.name}}.", phones=[ACME_PHONE]),
            agent("off", enabled=False),
            agent("theirs", company="globex"),
        ]
    )
    return catalog


def test_resolve_gives_the_named_agent_or_the_config_default(catalog: AgentCatalog) -> None:
    assert catalog.resolve("acme", "sales").instructions == "Sell to {{crm.name}}."
    default = DIRECTORY.companies["acme"].settings.agent
    assert catalog.resolve("acme", "") == default
    assert catalog.resolve("acme", "default") == default


def test_unknown_disabled_and_other_companies_agents_are_refused(catalog: AgentCatalog) -> None:
    with pytest.raises(NotFound) as unknown:
        catalog.resolve("acme", "nope")
    assert unknown.value.code == "unknown_agent"
    with pytest.raises(NotFound):
        catalog.resolve("acme", "theirs")  # globex's agent does not exist for acme
    with pytest.raises(Conflict) as disabled:
        catalog.resolve("acme", "off")
    assert disabled.value.code == "agent_disabled"


def test_an_inbound_call_gets_the_named_agent_else_the_numbers(catalog: AgentCatalog) -> None:
    assert catalog.inbound_agent("acme", "", "34987654321") == "sales"  # either number form
    assert catalog.inbound_agent("acme", "default", ACME_PHONE) == ""
    assert catalog.inbound_agent("acme", "", "+34999999999") == ""
    catalog.put(agent("sales", enabled=False, phones=[ACME_PHONE]))
    assert catalog.inbound_agent("acme", "", ACME_PHONE) == ""  # a disabled agent answers nothing


def test_placeholders_are_checked_against_variables_and_call_facts(catalog: AgentCatalog) -> None:
    catalog.check_call("acme", "sales", {"name": "Ana"}, FACTS, "Call {{call.to}} for {{name}}")
    with pytest.raises(BadRequest) as refused:
        catalog.check_call("acme", "sales", {}, FACTS, "{{call.nope}}")
    assert refused.value.code == "unknown_placeholder"
    assert "{{crm.name}}" in refused.value.message
    assert "{{call.nope}}" in refused.value.message


def test_the_webhooks_extra_scalars_become_variables() -> None:
    extra = {
        "customer": "Ana",
        "tier": 2,
        "vip": True,
        "nested": {"a": 1},
        "bad name": "x",
        "long": "x" * 1001,
        "variables": {"order": "A-17", "customer": "overridden below"},
    }
    assert webhook_variables(extra) == {"order": "A-17", "customer": "Ana", "tier": "2", "vip": "true"}
