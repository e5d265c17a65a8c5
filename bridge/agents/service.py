"""What the API may do with a company's agents, and which agent a call gets.

Every write lands in the store first, then in the catalog, so the next call uses it (no restart) and a
restart loses nothing. The config's `[companies.agent]` is the read-only agent `default`. Another
company's agent id is a 404 exactly like an unknown one.

Deleting an agent that tasks still name is allowed: those tasks then fail with `unknown_agent` when
they dial (a task is a request like any other, checked when it is made).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import ValidationError

from bridge.agents.catalog import DEFAULT_AGENT_ID, AgentCatalog, StoredAgent
from bridge.agents.store import AgentStore
from bridge.directory import Directory
from bridge.errors import Conflict, Forbidden, NotFound
from bridge.keys import phone_digits
from bridge.settings_agents import AgentSettings

# API names (the platforms' terms) of profile keys that the config calls otherwise.
API_NAMES: Mapping[str, str] = {"instructions": "system_prompt", "greeting": "starting_message"}


@dataclass(frozen=True, slots=True)
class AgentView:
    """One agent as the API shows it (the default agent too)."""

    id: str
    name: str
    enabled: bool
    read_only: bool
    phones: tuple[str, ...]
    settings: AgentSettings
    created_at: float | None
    updated_at: float | None


@dataclass(frozen=True, slots=True)
class AgentChange:
    """A create or a PATCH: None leaves a field as it is; `profile` holds AgentSettings keys to set."""

    name: str | None = None
    enabled: bool | None = None
    phones: tuple[str, ...] | None = None
    profile: Mapping[str, Any] | None = None


def _profile_error(exc: ValidationError) -> Conflict:
    parts = []
    for item in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in item["loc"]]
        if loc:
            loc[0] = API_NAMES.get(loc[0], loc[0])
        message = str(item["msg"]).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return Conflict("; ".join(parts) or "invalid agent profile", code="profile_conflict")


def validate_profile(profile: Mapping[str, Any]) -> AgentSettings:
    """The profile as AgentSettings. The API's models already refused (400) any field bad on its own;
    what is left is fields in conflict with each other or with what the agent had: 409, naming them."""
    try:
        return AgentSettings.model_validate(dict(profile))
    except ValidationError as exc:
        raise _profile_error(exc) from exc


class AgentService:
    def __init__(self, store: AgentStore, catalog: AgentCatalog, directory: Callable[[], Directory]) -> None:
        self.store = store
        self.catalog = catalog
        self._directory = directory
        # One write at a time: a check (a phone on one agent only) and its write must not interleave.
        self._writing = asyncio.Lock()

    async def load(self) -> int:
        agents = await self.store.all()
        self.catalog.load(agents)
        return len(agents)

    # -- reads ----------------------------------------------------------------------------------

    def _default(self, company_id: str) -> AgentView:
        company = self._directory().companies.get(company_id)
        name = f"{company.settings.name or company_id} (config)" if company is not None else "default"
        return AgentView(
            DEFAULT_AGENT_ID, name, True, True, (), self.catalog.default_agent(company_id), None, None
        )

    @staticmethod
    def _view(agent: StoredAgent) -> AgentView:
        return AgentView(
            agent.id,
            agent.name,
            agent.enabled,
            False,
            agent.phones,
            agent.settings,
            agent.created_at,
            agent.updated_at,
        )

    def list(self, company_id: str) -> list[AgentView]:
        return [self._default(company_id), *(self._view(a) for a in self.catalog.of_company(company_id))]

    def _stored(self, company_id: str, agent_id: str) -> StoredAgent:
        agent = self.catalog.get(company_id, agent_id)
        if agent is None:
            raise NotFound(f"no agent {agent_id}", code="unknown_agent")
        return agent

    def get(self, company_id: str, agent_id: str) -> AgentView:
        if agent_id == DEFAULT_AGENT_ID:
            return self._default(company_id)
        return self._view(self._stored(company_id, agent_id))

    # -- writes ---------------------------------------------------------------------------------

    def _check_phones(self, company_id: str, agent_id: str, phones: Iterable[str]) -> tuple[str, ...]:
        """`phones` once each; 403 for a number not the company's, 409 for one another agent answers."""
        company = self._directory().companies.get(company_id)
        kept: dict[str, str] = {}
        for number in phones:
            if company is None or not company.owns_phone(number):
                raise Forbidden(
                    f"phones: {number} is not one of this company's numbers", code="phone_not_allowed"
                )
            owner = self.catalog.owner_of_phone(company_id, number)
            if owner is not None and owner != agent_id:
                raise Conflict(f"phones: {number} already answers for agent {owner}", code="phone_taken")
            kept.setdefault(phone_digits(number), number)
        return tuple(kept.values())

    async def create(self, company_id: str, change: AgentChange) -> AgentView:
        async with self._writing:
            return await self._create(company_id, change)

    async def update(self, company_id: str, agent_id: str, change: AgentChange) -> AgentView:
        async with self._writing:
            return await self._update(company_id, agent_id, change)

    async def delete(self, company_id: str, agent_id: str) -> None:
        async with self._writing:
            await self._delete(company_id, agent_id)

    async def _create(self, company_id: str, change: AgentChange) -> AgentView:
        agent_id = str(uuid.uuid4())
        profile = dict(change.profile or {})
        settings = validate_profile(profile)
        phones = self._check_phones(company_id, agent_id, change.phones or ())
        now = time.time()
        agent = StoredAgent(
            id=agent_id,
            company_id=company_id,
            name=change.name or "",
            enabled=True if change.enabled is None else change.enabled,
            phones=phones,
            profile=profile,
            settings=settings,
            created_at=now,
            updated_at=now,
        )
        await self.store.save(agent)
        self.catalog.put(agent)
        return self._view(agent)

    def _read_only(self, agent_id: str) -> None:
        if agent_id == DEFAULT_AGENT_ID:
            raise Conflict(
                "the default agent is the config's [companies.agent]: edit the config file",
                code="agent_read_only",
            )

    async def _update(self, company_id: str, agent_id: str, change: AgentChange) -> AgentView:
        self._read_only(agent_id)
        current = self._stored(company_id, agent_id)
        profile = {**current.profile, **(change.profile or {})}
        settings = validate_profile(profile) if change.profile else current.settings
        phones = (
            current.phones
            if change.phones is None
            else self._check_phones(company_id, agent_id, change.phones)
        )
        agent = replace(
            current,
            name=current.name if change.name is None else change.name,
            enabled=current.enabled if change.enabled is None else change.enabled,
            phones=phones,
            profile=profile,
            settings=settings,
            updated_at=max(time.time(), current.updated_at),
        )
        await self.store.save(agent)
        self.catalog.put(agent)
        return self._view(agent)

    async def _delete(self, company_id: str, agent_id: str) -> None:
        self._read_only(agent_id)
        self._stored(company_id, agent_id)  # 404 unless it is theirs
        await self.store.delete(company_id, agent_id)
        self.catalog.remove(company_id, agent_id)
