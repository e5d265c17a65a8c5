"""Tasks: a company's scheduled outbound calls (create, list, read, edit, delete, run now, reset).

Every route works on the authenticated company's tasks only; another company's task id answers 404
exactly like an unknown one. A task dials from one of the company's phones (403 from_not_allowed
otherwise, as POST /api/calls/outbound does).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from bridge.agents.scheduler import TaskScheduler
from bridge.agents.tasks import DEFAULT_RETRY_ON, RetryPolicy, Task
from bridge.api.appkeys import COMPANY
from bridge.api.envelope import ok, parse_body, parse_query
from bridge.api.fields import E164, NO_CONTROL_PATTERN, RESOURCE_ID_PATTERN, Instant
from bridge.api.openapi import Operation, register
from bridge.api.routes_calls import MAX_PAGE, Pagination, VariableName, VariableValue
from bridge.directory import Company
from bridge.errors import BadRequest, Forbidden
from bridge.settings import WebhookEvent

TASKS = web.AppKey("tasks", TaskScheduler)

_RESOURCE_ID = re.compile(RESOURCE_ID_PATTERN)


def _json_number(value: object) -> object:
    """Numbers only: lax validation would also take "3" or true."""
    if isinstance(value, str | bool):
        raise ValueError("must be a number")
    return value


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


TaskStatus = Literal["pending", "in_progress", "completed", "failed"]
RetryOn = Literal["busy", "no_answer", "failed"]
Priority = Annotated[int, Field(ge=-1000, le=1000), BeforeValidator(_json_number)]
MaxAttempts = Annotated[int, Field(ge=1, le=20), BeforeValidator(_json_number)]
RetryDelay = Annotated[int, Field(ge=0, le=7 * 86400), BeforeValidator(_json_number)]
WebhookUrl = Annotated[str, Field(max_length=2000, pattern=r"^(https?://[!-~]+)?$")]
AgentRef = Annotated[str, Field(max_length=128, pattern=r"^([A-Za-z0-9._:-]{1,128})?$")]
ContextData = Annotated[
    dict[VariableName, VariableValue],
    Field(max_length=100),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": 100,
            "propertyNames": {"minLength": 1, "maxLength": 64, "pattern": NO_CONTROL_PATTERN},
            "additionalProperties": {"type": "string", "maxLength": 1000},
            "description": "Filled into {{name}} placeholders (the call's variables)",
        }
    ),
]
ObjectiveText = Annotated[str, Field(min_length=1, max_length=4000)]
MessageText = Annotated[str, Field(max_length=2000)]


# -- requests ------------------------------------------------------------------------------------


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: AgentRef = Field("", description='The agent that makes the call; "": the default agent')
    to_number: E164
    from_number: E164 | None = Field(None, description="One of the company's phones; default its first")
    starting_message: MessageText = Field(
        "", description="What the bot says first (the call's first_message)"
    )
    call_objective: ObjectiveText
    context_data: ContextData = Field(
        default_factory=dict, description="Filled into {{name}} placeholders (the call's variables)"
    )
    priority: Priority = Field(0, description="Among due tasks, higher runs first")
    scheduled_at: Instant | None = Field(None, description="When to call; absent: now")
    webhook_url: WebhookUrl = Field("", description="The call's events also go here")
    webhook_events: list[WebhookEvent] = Field(
        default_factory=list, max_length=10, description="Events for webhook_url; empty: all"
    )
    max_attempts: MaxAttempts = Field(3, description="Dials in all, the first included")
    retry_delay_seconds: RetryDelay = Field(300, description="Wait before a retry")
    retry_on: list[RetryOn] = Field(
        default_factory=lambda: list(DEFAULT_RETRY_ON), max_length=3, description="Outcomes that retry"
    )


class TaskPatch(BaseModel):
    """Only the fields given change (null: unchanged); a task is edited only while pending."""

    model_config = ConfigDict(extra="forbid")

    agent_id: AgentRef | None = None
    to_number: E164 | None = None
    from_number: E164 | None = None
    starting_message: MessageText | None = None
    call_objective: ObjectiveText | None = None
    context_data: ContextData | None = None
    priority: Priority | None = None
    scheduled_at: Instant | None = None
    webhook_url: WebhookUrl | None = None
    webhook_events: list[WebhookEvent] | None = Field(None, max_length=10)
    max_attempts: MaxAttempts | None = None
    retry_delay_seconds: RetryDelay | None = None
    retry_on: list[RetryOn] | None = Field(None, max_length=3)


class TaskListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: TaskStatus | None = None
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    offset: int = Field(0, ge=0, le=10_000_000)


# -- responses ----------------------------------------------------------------------------------


class TaskOut(BaseModel):
    id: str
    agent_id: str = Field(description='"": the company\'s default agent')
    to_number: str
    from_number: str
    starting_message: str
    call_objective: str
    context_data: dict[str, str]
    priority: int
    scheduled_at: str
    webhook_url: str
    webhook_events: list[str]
    max_attempts: int
    retry_delay_seconds: float
    retry_on: list[str]
    status: TaskStatus
    attempts: int = Field(description="Dials so far")
    last_call_id: str | None = Field(description="GET /api/calls/{call_id} of the latest attempt")
    last_error: str | None = Field(description="Why the latest attempt did not complete the task")
    created_at: str
    updated_at: str


class OneTask(BaseModel):
    task: TaskOut


class TaskPage(BaseModel):
    tasks: list[TaskOut]
    pagination: Pagination


class TaskDeleted(BaseModel):
    id: str
    deleted: bool = True


def task_out(task: Task) -> TaskOut:
    return TaskOut(
        id=task.id,
        agent_id=task.agent_id,
        to_number=task.to_number,
        from_number=task.from_number,
        starting_message=task.starting_message,
        call_objective=task.call_objective,
        context_data=dict(task.context_data),
        priority=task.priority,
        scheduled_at=_iso(task.scheduled_at),
        webhook_url=task.webhook_url,
        webhook_events=list(task.webhook_events),
        max_attempts=task.retry.max_attempts,
        retry_delay_seconds=task.retry.retry_delay_seconds,
        retry_on=list(task.retry.retry_on),
        status=task.status,
        attempts=task.attempts,
        last_call_id=task.last_call_id,
        last_error=task.last_error,
        created_at=_iso(task.created_at),
        updated_at=_iso(task.updated_at),
    )


# -- handlers -----------------------------------------------------------------------------------


def _task_id(request: web.Request) -> str:
    task_id = request.match_info["task_id"]
    if not _RESOURCE_ID.fullmatch(task_id):
        raise BadRequest("task_id: 1 to 128 letters, digits or . _ : -", code="validation_error")
    return task_id


def _caller_number(company: Company, number: str | None) -> str:
    """The number the task dials from: one of the company's phones (its first when none is given)."""
    if number is None:
        if not company.settings.phones:
            raise Forbidden("this company has no phone to call from", code="from_not_allowed")
        return company.settings.phones[0]
    if not company.owns_phone(number):
        raise Forbidden(f"{number} is not one of this company's numbers", code="from_not_allowed")
    return number


async def create_task(request: web.Request) -> web.Response:
    company = request[COMPANY]
    body = await parse_body(request, TaskCreate)
    now = time.time()
    task = Task(
        id=str(uuid.uuid4()),
        company_id=company.id,
        agent_id=body.agent_id,
        to_number=body.to_number,
        from_number=_caller_number(company, body.from_number),
        starting_message=body.starting_message,
        call_objective=body.call_objective,
        context_data=body.context_data,
        priority=body.priority,
        scheduled_at=now if body.scheduled_at is None else body.scheduled_at,
        webhook_url=body.webhook_url,
        webhook_events=tuple(body.webhook_events),
        retry=RetryPolicy(body.max_attempts, float(body.retry_delay_seconds), tuple(body.retry_on)),
        created_at=now,
        updated_at=now,
    )
    created = await request.app[TASKS].create(task)
    return ok(OneTask(task=task_out(created)), status=201)


async def list_tasks(request: web.Request) -> web.Response:
    query = parse_query(request, TaskListQuery)
    tasks, total = await request.app[TASKS].page(request[COMPANY].id, query.status, query.limit, query.offset)
    page = Pagination(total=total, limit=query.limit, offset=query.offset)
    return ok(TaskPage(tasks=[task_out(t) for t in tasks], pagination=page))


async def get_task(request: web.Request) -> web.Response:
    task = await request.app[TASKS].get(request[COMPANY].id, _task_id(request))
    return ok(OneTask(task=task_out(task)))


async def patch_task(request: web.Request) -> web.Response:
    company = request[COMPANY]
    task_id = _task_id(request)
    body = await parse_body(request, TaskPatch)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    changes = {name: value for name, value in changes.items() if value is not None}
    scheduler = request.app[TASKS]
    await scheduler.get(company.id, task_id)  # 404 before anything about the body's numbers
    if "from_number" in changes:
        changes["from_number"] = _caller_number(company, body.from_number)
    task = await scheduler.edit(company.id, task_id, changes)
    return ok(OneTask(task=task_out(task)))


async def delete_task(request: web.Request) -> web.Response:
    task_id = _task_id(request)
    await request.app[TASKS].delete(request[COMPANY].id, task_id)
    return ok(TaskDeleted(id=task_id))


async def execute_task(request: web.Request) -> web.Response:
    task = await request.app[TASKS].execute(request[COMPANY].id, _task_id(request))
    return ok(OneTask(task=task_out(task)))


async def reset_task(request: web.Request) -> web.Response:
    task = await request.app[TASKS].reset(request[COMPANY].id, _task_id(request))
    return ok(OneTask(task=task_out(task)))


_ONE = "/api/tasks/{task_id}"
OPERATIONS = (
    Operation(
        "GET",
        "/api/tasks",
        list_tasks,
        "The company's tasks (scheduled outbound calls), newest first",
        "tasks",
        query=TaskListQuery,
        response=TaskPage,
    ),
    Operation(
        "POST",
        "/api/tasks",
        create_task,
        "Schedule an outbound call (now, or at scheduled_at), retried per its policy",
        "tasks",
        body=TaskCreate,
        response=OneTask,
        errors=(403, 409),
        success_status=201,
        description="400 unknown_placeholder and 409 agent_disabled are refused now, not at the call; "
        "an agent_id that names no agent when the task dials fails it with last_error unknown_agent",
    ),
    Operation(
        "GET",
        _ONE,
        get_task,
        "One task",
        "tasks",
        response=OneTask,
        errors=(404,),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
    Operation(
        "PATCH",
        _ONE,
        patch_task,
        "Change a pending task (409 task_not_pending otherwise)",
        "tasks",
        body=TaskPatch,
        response=OneTask,
        errors=(403, 404, 409),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
    Operation(
        "DELETE",
        _ONE,
        delete_task,
        "Delete a task that is not calling now (409 task_in_progress)",
        "tasks",
        response=TaskDeleted,
        errors=(404, 409),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
    Operation(
        "POST",
        _ONE + "/execute",
        execute_task,
        "Dial a pending task now, whatever its scheduled_at (409 task_not_pending otherwise)",
        "tasks",
        response=OneTask,
        errors=(404, 409),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
    Operation(
        "POST",
        _ONE + "/reset",
        reset_task,
        "Make a completed or failed task pending again, its attempts back to 0 (409 task_not_finished)",
        "tasks",
        response=OneTask,
        errors=(404, 409),
        path_pattern=RESOURCE_ID_PATTERN,
    ),
)


def setup_routes(app: web.Application, scheduler: TaskScheduler) -> None:
    app[TASKS] = scheduler
    register(app, OPERATIONS)
