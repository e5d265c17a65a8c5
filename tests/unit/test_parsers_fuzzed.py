"""Hypothesis over the small parsers of what Asterisk and clients send that have no fuzz test elsewhere:
AMI event fields, ARI dial outcomes, and a media socket's presented credentials. Each either reads
its input or refuses it with its own error; none raises anything else."""

from __future__ import annotations

import base64

from hypothesis import given
from hypothesis import strategies as st

from bridge.asterisk.ami_mapping import dial_result_of, error_code, hangup_cause_of
from bridge.asterisk.ari_mapping import describe_end, dial_outcome, transfer_extension
from bridge.asterisk.media_ws import presented_credentials
from bridge.session.control import ControlError, DialOutcome

FIELDS = st.dictionaries(
    st.sampled_from(["Response", "Reason", "Cause", "Cause-txt", "Event", "Message"]) | st.text(max_size=8),
    st.text(max_size=20),
    max_size=6,
)


@given(FIELDS)
def test_ami_fields_never_break_the_mappings(fields: dict[str, str]) -> None:
    outcome, reason = dial_result_of(fields)
    assert isinstance(outcome, DialOutcome)
    assert reason.startswith("Reason ")
    cause = hangup_cause_of(fields)
    assert cause is None or isinstance(cause.code, int)
    assert error_code(fields.get("Message", "")) in (
        "asterisk_error",
        "permission_denied",
        "channel_not_found",
    )


@given(st.text(max_size=20), st.none() | st.integers(), st.booleans(), st.text(max_size=20))
def test_ari_dial_outcomes_are_total(status: str, cause: int | None, ringing: bool, text: str) -> None:
    assert isinstance(dial_outcome(status, cause, ringing=ringing), DialOutcome)
    assert describe_end(status, cause, text)


@given(st.text(max_size=40))
def test_transfer_targets_are_read_or_refused(target: str) -> None:
    try:
        extension = transfer_extension(target)
    except ControlError as exc:
        assert exc.code  # noqa: PT017  (every refusal carries its code)
        return
    assert extension == target
    assert not any(ch in extension for ch in "/@&,|();= \t\r\n")  # nothing that breaks a dial string


@given(
    st.dictionaries(
        st.sampled_from(["Authorization", "x-connector-api-key", "X-Other"]), st.text(max_size=60), max_size=3
    )
)
def test_media_credentials_are_read_from_any_headers(headers: dict[str, str]) -> None:
    found = presented_credentials(headers)
    assert len(found) == ("Authorization" in headers) + ("x-connector-api-key" in headers)


@given(st.text(max_size=20), st.text(max_size=40))
def test_basic_credentials_yield_the_password(user: str, password: str) -> None:
    token = base64.b64encode(f"{user.replace(':', '')}:{password}".encode()).decode()
    assert presented_credentials({"Authorization": f"Basic {token}"}) == (password,)
    assert presented_credentials({"Authorization": f"Bearer {password}"}) == (password.strip(),)
