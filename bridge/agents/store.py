"""Agents in the `agents` table (migration 7). The functions here run on the store's writer thread
(`Store.run`); `AgentStore` is their asyncio face."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from bridge.agents.catalog import StoredAgent
from bridge.logging import get_logger
from bridge.settings_agents import AgentSettings
from bridge.store.base import Store
from bridge.store.schema import stored_text

_COLUMNS = "company_id, id, name, enabled, phones, profile, created_at, updated_at"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _upsert(conn: sqlite3.Connection, row: tuple[object, ...]) -> None:
    conn.execute(
        f"INSERT INTO agents ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "  # noqa: S608
        "ON CONFLICT(company_id, id) DO UPDATE SET name = excluded.name, enabled = excluded.enabled, "
        "phones = excluded.phones, profile = excluded.profile, updated_at = excluded.updated_at",
        row,
    )


def _delete(conn: sqlite3.Connection, company_id: str, agent_id: str) -> bool:
    cursor = conn.execute(
        "DELETE FROM agents WHERE company_id = ? AND id = ?", (stored_text(company_id), stored_text(agent_id))
    )
    return cursor.rowcount > 0


def _all(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return list(conn.execute(f"SELECT {_COLUMNS} FROM agents ORDER BY created_at"))  # noqa: S608


def _agent(row: tuple[Any, ...]) -> StoredAgent:
    profile: Mapping[str, Any] = json.loads(row[5])
    return StoredAgent(
        id=row[1],
        company_id=row[0],
        name=row[2],
        enabled=bool(row[3]),
        phones=tuple(json.loads(row[4])),
        profile=profile,
        settings=AgentSettings.model_validate(profile),
        created_at=row[6],
        updated_at=row[7],
    )


class AgentStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def save(self, agent: StoredAgent) -> None:
        row = (
            stored_text(agent.company_id),
            stored_text(agent.id),
            stored_text(agent.name),
            int(agent.enabled),
            _json(list(agent.phones)),
            _json(dict(agent.profile)),
            agent.created_at,
            agent.updated_at,
        )
        await self._store.run(_upsert, row)

    async def delete(self, company_id: str, agent_id: str) -> bool:
        return await self._store.run(_delete, company_id, agent_id)

    async def all(self) -> list[StoredAgent]:
        """Every agent; one whose stored profile no longer validates (e.g. a provider this version
        dropped) is skipped with a warning rather than stopping the daemon."""
        agents: list[StoredAgent] = []
        for row in await self._store.run(_all):
            try:
                agents.append(_agent(row))
            except (ValidationError, ValueError) as exc:
                get_logger("agents").warning(
                    "agent_profile_invalid", company_id=row[0], agent_id=row[1], error=str(exc)
                )
        return agents
