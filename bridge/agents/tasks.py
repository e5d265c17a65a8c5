"""Scheduled outbound calls ("tasks"): what one is, and what happens to it after each attempt.

Pure rules, no I/O: the store keeps tasks (bridge/agents/task_store.py), the scheduler runs them
(bridge/agents/scheduler.py). Field names follow the platforms' task APIs (`starting_message`,
`context_data`); a task's call gets them as `first_message` and `variables`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

TaskStatus = Literal["pending", "in_progress", "completed", "failed"]
TASK_STATUSES: Final[tuple[TaskStatus, ...]] = ("pending", "in_progress", "completed", "failed")
RetryReason = Literal["busy", "no_answer", "failed"]
RETRY_REASONS: Final[tuple[RetryReason, ...]] = ("busy", "no_answer", "failed")
DEFAULT_RETRY_ON: Final[tuple[RetryReason, ...]] = ("busy", "no_answer")
# Outcomes the task may be reset from, or edited/deleted in.
FINISHED: Final = frozenset({"completed", "failed"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 3  # dials in all, the first one included
    retry_delay_seconds: float = 300.0
    retry_on: tuple[RetryReason, ...] = DEFAULT_RETRY_ON


@dataclass(frozen=True, slots=True)
class Task:
    id: str
    company_id: str
    to_number: str
    from_number: str
    call_objective: str
    scheduled_at: float
    created_at: float
    updated_at: float
    agent_id: str = ""  # "": the company's default agent
    starting_message: str = ""
    context_data: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0  # higher first among the tasks that are due
    webhook_url: str = ""
    webhook_events: tuple[str, ...] = ()
    retry: RetryPolicy = RetryPolicy()
    status: TaskStatus = "pending"
    attempts: int = 0
    last_call_id: str | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one dial ended, as the task sees it: `completed`, or a reason to retry and the error."""

    completed: bool
    reason: RetryReason = "failed"
    error: str | None = None
    retryable: bool | None = None  # None: as the policy's retry_on says; True/False: decided already


@dataclass(frozen=True, slots=True)
class Next:
    """Where the task goes after an attempt."""

    status: TaskStatus
    scheduled_at: float
    last_error: str | None


def call_attempt(dial_outcome: str | None, call_state: str, error_code: str | None) -> Attempt:
    """A finished call as an attempt: answered and ended normally completes the task; busy and
    no-answer are their own reasons; everything else (a failed dial, a call that failed) is `failed`."""
    if dial_outcome == "answered" and call_state == "ended":
        return Attempt(completed=True)
    if dial_outcome in ("busy", "no_answer"):
        reason: RetryReason = "busy" if dial_outcome == "busy" else "no_answer"
        return Attempt(completed=False, reason=reason, error=dial_outcome)
    return Attempt(completed=False, reason="failed", error=error_code or dial_outcome or "failed")


def refusal_attempt(code: str, status: int) -> Attempt:
    """The call could not even be placed: a server-side refusal (503: Asterisk down, at capacity) or the
    company's own live-call cap (429 too_many_calls) retries while attempts remain; a client-side one
    (4xx: unknown agent, bad placeholder) never will."""
    return Attempt(completed=False, reason="failed", error=code, retryable=status >= 500 or status == 429)


def after_attempt(task: Task, attempt: Attempt, now: float) -> Next:
    """The task's next state once the attempt counted in `task.attempts` is over."""
    if attempt.completed:
        return Next("completed", task.scheduled_at, None)
    retryable = attempt.retryable
    if retryable is None:
        retryable = attempt.reason in task.retry.retry_on
    if retryable and task.attempts < task.retry.max_attempts:
        return Next("pending", now + task.retry.retry_delay_seconds, attempt.error)
    return Next("failed", task.scheduled_at, attempt.error)
