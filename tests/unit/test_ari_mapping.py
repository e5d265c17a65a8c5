"""The pure rules behind the ARI controller: dial outcomes, endpoints, digits, transfer targets."""

from __future__ import annotations

import pytest

from bridge.asterisk import ari_mapping as mapping
from bridge.session.control import ControlError, DialOutcome


@pytest.mark.parametrize(
    ("dialstatus", "cause", "ringing", "expected"),
    [
        ("BUSY", 17, False, DialOutcome.BUSY),
        ("", 17, False, DialOutcome.BUSY),
        ("BUSY", None, False, DialOutcome.BUSY),
        ("NOANSWER", 19, True, DialOutcome.NO_ANSWER),
        ("", 18, True, DialOutcome.NO_ANSWER),
        ("CONGESTION", 34, False, DialOutcome.CONGESTION),
        ("", 42, False, DialOutcome.CONGESTION),
        # main/dial.c reports a rejection while ringing as NOANSWER: the cause must win.
        ("NOANSWER", 21, True, DialOutcome.REJECTED),
        # dial.c's own timeout: no Dial event, no cause, after ringing.
        ("", 0, True, DialOutcome.NO_ANSWER),
        ("", None, True, DialOutcome.NO_ANSWER),
        ("", 16, True, DialOutcome.NO_ANSWER),
        # Nothing rang: a vague cause is a failure (no route, unavailable, ...).
        ("", 16, False, DialOutcome.FAILED),
        ("", None, False, DialOutcome.FAILED),
        ("CHANUNAVAIL", 3, False, DialOutcome.FAILED),
        ("", 1, False, DialOutcome.FAILED),
        ("", 38, True, DialOutcome.FAILED),
        ("CANCEL", 16, True, DialOutcome.FAILED),
        ("busy", None, False, DialOutcome.BUSY),
    ],
)
def test_dial_outcome(dialstatus: str, cause: int | None, ringing: bool, expected: DialOutcome) -> None:
    assert mapping.dial_outcome(dialstatus, cause, ringing=ringing) is expected


def test_describe_end_keeps_asterisks_words() -> None:
    assert mapping.describe_end("BUSY", 17, "User busy") == "dialstatus=BUSY, cause=17 (User busy)"
    assert mapping.describe_end("", 0, "") == "cause=0"
    assert mapping.describe_end("", None, "") == "channel destroyed"


@pytest.mark.parametrize(
    ("template", "number", "expected"),
    [
        ("PJSIP/{to}@trunk", "+34987654321", "PJSIP/34987654321@trunk"),
        ("PJSIP/{to}@trunk", "1001", "PJSIP/1001@trunk"),
        ("Local/{to}@from-internal", "+15551234", "Local/15551234@from-internal"),
    ],
)
def test_format_endpoint(template: str, number: str, expected: str) -> None:
    assert mapping.format_endpoint(template, number) == expected


@pytest.mark.parametrize("number", ["", "+", "123/456", "1@evil", "12 34", "1&app=x", "+" + "1" * 65])
def test_format_endpoint_refuses_what_could_break_the_dial_string(number: str) -> None:
    with pytest.raises(ControlError) as caught:
        mapping.format_endpoint("PJSIP/{to}@trunk", number)
    assert caught.value.code == "invalid_number"


def test_caller_id_is_the_number_in_angle_brackets() -> None:
    assert mapping.caller_id("+34987654321") == "<+34987654321>"
    with pytest.raises(ControlError):
        mapping.caller_id("<script>")


@pytest.mark.parametrize("digits", ["0", "0123456789", "ABCD", "*#", "1*2#A"])
def test_valid_dtmf(digits: str) -> None:
    assert mapping.validate_dtmf(digits) == digits


@pytest.mark.parametrize("digits", ["", "E", "a", "1 2", "12,3", "w", "1" * 65])
def test_invalid_dtmf(digits: str) -> None:
    with pytest.raises(ControlError) as caught:
        mapping.validate_dtmf(digits)
    assert caught.value.code == "invalid_digits"


def test_transfer_extension() -> None:
    assert mapping.transfer_extension("+34911222333") == "+34911222333"
    assert mapping.transfer_extension("operator") == "operator"
    for bad in ("", "+", "1,2", "a/b", "x y", "1&2"):
        with pytest.raises(ControlError) as caught:
            mapping.transfer_extension(bad)
        assert caught.value.code == "invalid_target"


def test_media_transport_data_encodes_each_value() -> None:
    data = mapping.media_transport_data("c:1(2),3", "+34987654321", "+442071234567")
    assert data == "f(json)v(callId=c%3A1%282%29%2C3,aNumberE164=34987654321,bNumberE164=442071234567)"
