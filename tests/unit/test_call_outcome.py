"""How a call's end is recorded (one rule: an error fails a call only before it was active) and what a
finished session adds to the metrics (the reason label stays a small set)."""

from __future__ import annotations

import pytest

from bridge.session.call import record_outcome
from bridge.session.manager import call_outcome
from bridge.session.session import CallInfo, EndRequest, Session
from bridge.session.state import CallState, EndedBy


def finished(by: EndedBy, error_code: str | None = None, *, failed: bool = False) -> Session:
    session = Session(CallInfo("c1", "acme", "inbound", "+15551230001", "+34987654321"))
    session.finish(by, error_code, failed=failed)
    return session


def test_an_ended_call_is_labelled_with_who_ended_it() -> None:
    outcome = call_outcome(finished(EndedBy.CALLER))
    assert (outcome.status, outcome.reason) == ("ended", "caller")
    assert outcome.duration_s is None  # never had media


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("insufficient_quota", "insufficient_quota"),
        ("media_timeout", "media_timeout"),
        (None, "unknown"),
        ('bad"code\nwith spaces', "other"),
        ("x" * 41, "other"),
        ("Upper_Case", "other"),
    ],
)
def test_a_failed_call_is_labelled_with_its_error_code_when_it_is_a_plain_word(
    code: str | None, reason: str
) -> None:
    outcome = call_outcome(finished(EndedBy.ERROR, code, failed=True))
    assert (outcome.status, outcome.reason) == ("failed", reason)


# --- how a call's end is recorded: one rule for every producer -------------------------------------


def reached(state: CallState) -> Session:
    session = Session(CallInfo("c1", "acme", "inbound", "+15551230001", "+34987654321"))
    session.attach_owner()
    if state is CallState.ACTIVE:
        session.mark_active()
    return session


@pytest.mark.parametrize(
    ("state", "ending", "expected"),
    [
        # Before the call is active an error fails it, whatever produced the error.
        (
            CallState.CONNECTING,
            EndRequest(EndedBy.ERROR, "protocol_error"),
            ("failed", "error", "protocol_error"),
        ),
        (
            CallState.CONNECTING,
            EndRequest(EndedBy.ERROR, "media_start_timeout"),
            ("failed", "error", "media_start_timeout"),
        ),
        (
            CallState.CONNECTING,
            EndRequest(EndedBy.ERROR, "provider_timeout"),
            ("failed", "error", "provider_timeout"),
        ),
        (CallState.CONNECTING, EndRequest(EndedBy.ERROR), ("failed", "error", "internal_error")),
        (CallState.CONNECTING, EndRequest(EndedBy.CALLER), ("ended", "caller", None)),
        (CallState.CONNECTING, EndRequest(EndedBy.SHUTDOWN), ("ended", "shutdown", None)),
        # Once active, every ending is `ended`; an error says so and keeps its code.
        (CallState.ACTIVE, EndRequest(EndedBy.ERROR, "protocol_error"), ("ended", "error", "protocol_error")),
        (
            CallState.ACTIVE,
            EndRequest(EndedBy.ERROR, "insufficient_quota", failed=True),
            ("ended", "error", "insufficient_quota"),
        ),
        (CallState.ACTIVE, EndRequest(EndedBy.ERROR), ("ended", "error", "internal_error")),
        (CallState.ACTIVE, EndRequest(EndedBy.BOT, "transfer_failed"), ("ended", "bot", "transfer_failed")),
        (CallState.ACTIVE, EndRequest(EndedBy.CALLER), ("ended", "caller", None)),
    ],
)
def test_an_error_fails_a_call_only_before_it_was_active(
    state: CallState, ending: EndRequest, expected: tuple[str, str, str | None]
) -> None:
    session = reached(state)
    record_outcome(session, ending)
    record = session.record()
    assert (record.status, record.disconnected_by, record.error_code) == expected


def test_a_call_already_over_keeps_its_first_outcome() -> None:
    session = reached(CallState.ACTIVE)
    record_outcome(session, EndRequest(EndedBy.CALLER))
    record_outcome(session, EndRequest(EndedBy.ERROR, "protocol_error"))
    assert (session.state, session.disconnected_by, session.error_code) == (
        CallState.ENDED,
        EndedBy.CALLER,
        None,
    )
