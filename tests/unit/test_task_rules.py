"""What happens to a task after each attempt (bridge/agents/tasks.py, pure)."""

from __future__ import annotations

import pytest

from bridge.agents.tasks import RetryPolicy, Task, after_attempt, call_attempt, refusal_attempt

NOW = 1_000_000.0


def task(attempts: int, *, max_attempts: int = 3, retry_on: tuple[str, ...] = ("busy", "no_answer")) -> Task:
    return Task(
        id="t-1",
        company_id="acme",
        to_number="+15551234567",
        from_number="+34987654321",
        call_objective="x",
        scheduled_at=NOW - 10,
        created_at=NOW - 20,
        updated_at=NOW - 10,
        retry=RetryPolicy(max_attempts, 60.0, retry_on),  # type: ignore[arg-type]
        status="in_progress",
        attempts=attempts,
    )


@pytest.mark.parametrize(
    ("outcome", "state", "error", "completed", "reason", "last_error"),
    [
        ("answered", "ended", None, True, "failed", None),
        ("answered", "failed", "provider_error", False, "failed", "provider_error"),
        ("busy", "failed", "busy", False, "busy", "busy"),
        ("no_answer", "failed", "no_answer", False, "no_answer", "no_answer"),
        ("congestion", "failed", "congestion", False, "failed", "congestion"),
        (None, "failed", "cancelled", False, "failed", "cancelled"),
    ],
)
def test_a_finished_call_as_an_attempt(
    outcome: str | None, state: str, error: str | None, completed: bool, reason: str, last_error: str | None
) -> None:
    attempt = call_attempt(outcome, state, error)
    assert (attempt.completed, attempt.reason, attempt.error) == (completed, reason, last_error)


def test_answered_completes_whatever_the_attempts_left() -> None:
    after = after_attempt(task(3), call_attempt("answered", "ended", None), NOW)
    assert (after.status, after.last_error) == ("completed", None)


def test_busy_retries_after_the_delay_while_attempts_remain() -> None:
    busy = call_attempt("busy", "failed", "busy")
    after = after_attempt(task(1), busy, NOW)
    assert (after.status, after.scheduled_at, after.last_error) == ("pending", NOW + 60, "busy")
    last = after_attempt(task(3), busy, NOW)
    assert (last.status, last.scheduled_at, last.last_error) == ("failed", NOW - 10, "busy")


def test_only_the_outcomes_the_policy_names_retry() -> None:
    failed = call_attempt("failed", "failed", "failed")
    assert after_attempt(task(1), failed, NOW).status == "failed"
    assert after_attempt(task(1, retry_on=("failed",)), failed, NOW).status == "pending"


def test_a_refusal_retries_when_the_server_refused_and_never_when_the_request_was_wrong() -> None:
    assert after_attempt(task(1, retry_on=()), refusal_attempt("asterisk_unavailable", 503), NOW).status == (
        "pending"
    )
    assert after_attempt(task(1), refusal_attempt("unknown_agent", 404), NOW).status == "failed"
    assert after_attempt(task(3), refusal_attempt("asterisk_unavailable", 503), NOW).status == "failed"
