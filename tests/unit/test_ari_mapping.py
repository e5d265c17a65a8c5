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


def test_media_transport_data_carries_the_amd_status_only_when_there_is_one() -> None:
    plain = mapping.media_transport_data("c1", "+34987654321", "+34911222333")
    assert "amd" not in plain
    with_amd = mapping.media_transport_data("c1", "+34987654321", "+34911222333", "MACHINE")
    assert with_amd == "f(json)v(callId=c1,aNumberE164=34987654321,bNumberE164=34911222333,amd=MACHINE)"


def test_caller_id_variables_are_the_callerid_function_writes() -> None:
    assert mapping.caller_id_variables("+34600111555", "Alice Caller") == {
        "CALLERID(num)": "+34600111555",
        "CALLERID(name)": "Alice Caller",
    }


def test_party_reads_an_ari_caller_object() -> None:
    assert mapping.party({"name": "Alice Caller", "number": "+34600111555"}) == (
        "+34600111555",
        "Alice Caller",
    )
    assert mapping.party({"number": None}) == ("", "")
    assert mapping.party("not an object") == ("", "")


@pytest.mark.parametrize(
    ("args", "called"),
    [
        (["inbound", "34987654321"], "34987654321"),  # captures: ari_inbound_stasis
        (["inbound"], ""),
        ([], None),  # an externalMedia channel entering the app
        (["5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"], None),  # an AudioSocket leg: its UUID
        (["amd", "HUMAN", "HUMAN-200-300"], None),
        ("inbound", None),
        (None, None),
    ],
)
def test_inbound_called(args: object, called: str | None) -> None:
    assert mapping.inbound_called(args) == called


@pytest.mark.parametrize(
    ("number", "expected"),
    [("+34600111555", "+34600111555"), ("34600111555", "+34600111555"), ("anonymous", ""), ("", "")],
)
def test_plus_digits_matches_what_the_webhook_contexts_send(number: str, expected: str) -> None:
    assert mapping.plus_digits(number) == expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["amd", "MACHINE", "INITIALSILENCE-2500-2500"], ("MACHINE", "INITIALSILENCE-2500-2500")),
        (["amd", "HUMAN", "HUMAN-200-300"], ("HUMAN", "HUMAN-200-300")),
        (["amd", "notsure", "TOOLONG-5000"], ("NOTSURE", "TOOLONG-5000")),
        (["amd", "NOTSURE", "NO_APP_AMD"], ("NOTSURE", "NO_APP_AMD")),  # the sample without app_amd
        (["amd", "", ""], ("NOTSURE", "status ''")),
        (["amd", "BOGUS", "x"], ("NOTSURE", "x")),
        ([], ("NOTSURE", "not an AMD result: ")),
        (["inbound", "1"], ("NOTSURE", "not an AMD result: inbound,1")),
    ],
)
def test_amd_result(args: object, expected: tuple[str, str]) -> None:
    assert mapping.amd_result(args) == expected


def test_audiosocket_channel_is_found_by_the_uuid_in_its_name() -> None:
    uuid = "5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"
    names = ["PJSIP/trunk-00000001", f"AudioSocket/127.0.0.1:9092-{uuid}", "WebSocket/bridge_media/0x1"]
    assert mapping.audiosocket_channel(names, uuid) == f"AudioSocket/127.0.0.1:9092-{uuid}"
    assert mapping.audiosocket_channel(names, uuid.upper()) == f"AudioSocket/127.0.0.1:9092-{uuid}"
    assert mapping.audiosocket_channel(names, "1717171717.42") is None  # not a UUID: never guessed
    assert mapping.audiosocket_channel(names[:1], uuid) is None


def test_audiosocket_uuid_refuses_other_call_ids() -> None:
    uuid = "5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"
    assert mapping.audiosocket_uuid(uuid) == uuid
    with pytest.raises(ControlError) as caught:
        mapping.audiosocket_uuid("call-1")
    assert caught.value.code == "originate_failed"
