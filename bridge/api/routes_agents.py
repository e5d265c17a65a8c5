"""The company's agents: `GET/POST /api/agents`, `GET/PATCH/DELETE /api/agents/{agent_id}`.

Fields use the platforms' names where ours differ (`system_prompt` is the config's `instructions`,
`starting_message` its `greeting`; see agent_models.py). The config's agent is `default`, read-only here
(409 agent_read_only). Another company's agent is a 404, exactly like an unknown one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from bridge.agents.service import AgentChange, AgentService, AgentView
from bridge.api.agent_models import (
    PROFILE_KEYS,
    AgentCreate,
    AgentDeleted,
    AgentFields,
    AgentList,
    AgentOut,
    OneAgent,
)
from bridge.api.appkeys import COMPANY
from bridge.api.envelope import ok, parse_body
from bridge.api.fields import RESOURCE_ID_PATTERN
from bridge.api.openapi import Operation, register
from bridge.errors import BadRequest

AGENTS = web.AppKey("agents", AgentService)

_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def agent_out(view: AgentView) -> AgentOut:
    profile = view.settings.model_dump(mode="json")  # SecretStr header values come out masked
    return AgentOut(
        id=view.id,
        name=view.name,
        enabled=view.enabled,
        read_only=view.read_only,
        phones=list(view.phones),
        system_prompt=view.settings.instructions,
        starting_message=view.settings.greeting,
        voice=view.settings.voice,
        language=view.settings.language,
        provider=view.settings.provider,
        settings=profile,
        created_at=_iso(view.created_at),
        updated_at=_iso(view.updated_at),
    )


def _change(body: BaseModel) -> AgentChange:
    # Top level only: a null inside a tool's JSON schema is the tool's own business.
    dumped = body.model_dump(mode="python")
    given = {name: dumped[name] for name in body.model_fields_set if dumped[name] is not None}
    profile: dict[str, Any] = {
        PROFILE_KEYS[api]: value for api, value in given.items() if api in PROFILE_KEYS
    }
    phones = given.get("phones")
    return AgentChange(
        name=given.get("name"),
        enabled=given.get("enabled"),
        phones=None if phones is None else tuple(phones),
        profile=profile or None,
    )


def _agent_id(request: web.Request) -> str:
    agent_id = request.match_info["agent_id"]
    if not _RESOURCE_ID.match(agent_id):
        raise BadRequest("agent_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
    return agent_id


async def list_agents(request: web.Request) -> web.Response:
    views = request.app[AGENTS].list(request[COMPANY].id)
    return ok(AgentList(agents=[agent_out(v) for v in views]))


async def create_agent(request: web.Request) -> web.Response:
    body = await parse_body(request, AgentCreate)
    view = await request.app[AGENTS].create(request[COMPANY].id, _change(body))
    return ok(OneAgent(agent=agent_out(view)))


async def get_agent(request: web.Request) -> web.Response:
    view = request.app[AGENTS].get(request[COMPANY].id, _agent_id(request))
    return ok(OneAgent(agent=agent_out(view)))


async def update_agent(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    body = await parse_body(request, AgentFields)
    view = await request.app[AGENTS].update(request[COMPANY].id, agent_id, _change(body))
    return ok(OneAgent(agent=agent_out(view)))


async def delete_agent(request: web.Request) -> web.Response:
    agent_id = _agent_id(request)
    await request.app[AGENTS].delete(request[COMPANY].id, agent_id)
    return ok(AgentDeleted(id=agent_id, deleted=True))


OPERATIONS = (
    Operation(
        "GET",
        "/api/agents",
        list_agents,
        "The company's agents (`default` first)",
        "agents",
        response=AgentList,
    ),
    Operation(
        "POST",
        "/api/agents",
        create_agent,
        "Create an agent (calls name it as agent_id)",
        "agents",
        body=AgentCreate,
        response=OneAgent,
        errors=(403, 409),
    ),
    Operation(
        "GET",
        "/api/agents/{agent_id}",
        get_agent,
        "One agent",
        "agents",
        response=OneAgent,
        errors=(404,),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
    Operation(
        "PATCH",
        "/api/agents/{agent_id}",
        update_agent,
        "Change an agent; the next call uses it (409 agent_read_only for `default`)",
        "agents",
        body=AgentFields,
        response=OneAgent,
        errors=(403, 404, 409),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
    Operation(
        "DELETE",
        "/api/agents/{agent_id}",
        delete_agent,
        "Delete an agent (409 agent_read_only for `default`; tasks naming it then fail unknown_agent)",
        "agents",
        response=AgentDeleted,
        errors=(404, 409),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
)


def setup_routes(app: web.Application, agents: AgentService) -> None:
    app[AGENTS] = agents
    register(app, OPERATIONS)
