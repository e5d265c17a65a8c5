"""What a finished session adds to the metrics: the reason label stays a small set."""

from __future__ import annotations

import pytest

from bridge.session.manager import call_outcome
from bridge.session.session import CallInfo, Session
from bridge.session.state import EndedBy


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
