"""Which agent runs a call: the company's agents, held in memory so a call's start never waits on the store.

Loaded from the store at start and updated by every write (`AgentService`), so an edit applies to the
next call at once, without a restart. The config's `[companies.agent]` is each company's default agent,
id `default` (or "" in a call), read from the directory at call time so SIGHUP still changes it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bridge.agents.templating import agent_texts, check_placeholders, template_variables
from bridge.directory import Directory
from bridge.errors import Conflict, NotFound
from bridge.keys import phone_digits
from bridge.settings_agents import AgentSettings

DEFAULT_AGENT_ID = "default"


@dataclass(frozen=True, slots=True)
class StoredAgent:
    """One API-made agent. `profile` is the JSON as accepted (its `env:` secrets unresolved), `settings`
    its validated form."""

    id: str
    company_id: str
    name: str
    enabled: bool
    phones: tuple[str, ...]
    profile: Mapping[str, Any]
    settings: AgentSettings
    created_at: float
    updated_at: float
    phone_digits: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phone_digits", frozenset(phone_digits(p) for p in self.phones))


class AgentCatalog:
    def __init__(self, directory: Callable[[], Directory]) -> None:
        self._directory = directory
        self._agents: dict[tuple[str, str], StoredAgent] = {}

    # -- cache upkeep (by AgentService, after the store has the change) --------------------------

    def load(self, agents: Iterable[StoredAgent]) -> None:
        self._agents = {(agent.company_id, agent.id): agent for agent in agents}

    def put(self, agent: StoredAgent) -> None:
        self._agents[(agent.company_id, agent.id)] = agent

    def remove(self, company_id: str, agent_id: str) -> None:
        self._agents.pop((company_id, agent_id), None)

    # -- lookups --------------------------------------------------------------------------------

    def get(self, company_id: str, agent_id: str) -> StoredAgent | None:
        return self._agents.get((company_id, agent_id))

    def of_company(self, company_id: str) -> list[StoredAgent]:
        """The company's API-made agents, oldest first."""
        found = [agent for (company, _), agent in self._agents.items() if company == company_id]
        return sorted(found, key=lambda agent: (agent.created_at, agent.id))

    def default_agent(self, company_id: str) -> AgentSettings:
        company = self._directory().companies.get(company_id)
        return company.settings.agent if company is not None else AgentSettings()

    def resolve(self, company_id: str, agent_id: str) -> AgentSettings:
        """The profile a call of `company_id` runs with; "" (or "default"): the company's default agent.

        Raises NotFound `unknown_agent` (also for another company's agent) and Conflict `agent_disabled`.
        """
        if agent_id in ("", DEFAULT_AGENT_ID):
            return self.default_agent(company_id)
        agent = self._agents.get((company_id, agent_id))
        if agent is None:
            # 404, as for any id that names nothing of the company's (a well-formed id is not a bad request).
            raise NotFound(f"agent_id: no agent {agent_id!r}", code="unknown_agent")
        if not agent.enabled:
            raise Conflict(f"agent {agent_id!r} is disabled", code="agent_disabled")
        return agent.settings

    def profile(self, company_id: str, agent_id: str) -> AgentSettings | None:
        """The agent's profile whether enabled or not (a finished call's report); None when unknown."""
        if agent_id in ("", DEFAULT_AGENT_ID):
            return self.default_agent(company_id)
        agent = self._agents.get((company_id, agent_id))
        return None if agent is None else agent.settings

    def check_call(
        self,
        company_id: str,
        agent_id: str,
        variables: Mapping[str, str],
        facts: Mapping[str, str],
        *texts: str,
    ) -> AgentSettings:
        """The call's agent, once every placeholder it and `texts` (the call's objective, first message)
        use can be filled: 400 `unknown_placeholder` naming them otherwise, before any call exists."""
        agent = self.resolve(company_id, agent_id)
        check_placeholders(agent_texts(agent, *texts), template_variables(variables, facts))
        return agent

    def inbound_agent(self, company_id: str, agent_id: str, called: str) -> str:
        """The agent of an inbound call: the one named (checked), else the called number's, else ""."""
        if agent_id:
            self.resolve(company_id, agent_id)  # 404 unknown_agent, 409 agent_disabled
            return "" if agent_id == DEFAULT_AGENT_ID else agent_id
        return self.for_number(company_id, called)

    def for_number(self, company_id: str, number: str) -> str:
        """The enabled agent answering inbound calls to `number` (one of the company's phones), or ""."""
        digits = phone_digits(number)
        if not digits:
            return ""
        for (company, agent_id), agent in self._agents.items():
            if company == company_id and agent.enabled and digits in agent.phone_digits:
                return agent_id
        return ""

    def owner_of_phone(self, company_id: str, number: str) -> str | None:
        """Which agent (enabled or not) lists `number`; None when none does."""
        digits = phone_digits(number)
        for (company, agent_id), agent in self._agents.items():
            if company == company_id and digits in agent.phone_digits:
                return agent_id
        return None
