"""The pure AMI helpers: reason codes, dial strings, digits, variables, reply classification, health."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.asterisk.ami_mapping import (
    AUTH_RETRY_S,
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    HangupCause,
    caller_channel,
    check_dtmf,
    check_endpoint_template,
    compute_health,
    dial_result_of,
    dialable,
    error_code,
    escape_variable_value,
    find_error,
    find_event,
    hangup_cause_of,
    next_backoff,
    originate_action,
    originate_channel,
    originate_variables,
    status_action,
    status_variables,
    variable_line,
)
from bridge.session.control import ControllerHealth, DialOutcome, OriginateRequest
from tests.fakes.ami_server import split_variable_header

CAPTURES = Path(__file__).resolve().parents[3] / "shared" / "captures" / "asterisk-22.10.1"


@pytest.mark.parametrize(
    ("reason", "outcome"),
    [
        ("4", DialOutcome.ANSWERED),
        ("5", DialOutcome.BUSY),
        ("8", DialOutcome.CONGESTION),
        ("3", DialOutcome.NO_ANSWER),
        ("1", DialOutcome.REJECTED),
        ("0", DialOutcome.FAILED),
        ("2", DialOutcome.FAILED),
        ("7", DialOutcome.FAILED),
        ("garbage", DialOutcome.FAILED),
    ],
)
def test_reason_codes_map_to_outcomes(reason: str, outcome: DialOutcome) -> None:
    got, text = dial_result_of({"Response": "Failure", "Reason": reason})
    assert got is outcome
    assert reason in text


def test_reason_text_is_descriptive() -> None:
    assert dial_result_of({"Response": "Failure", "Reason": "5"}) == (DialOutcome.BUSY, "Reason 5: busy")


def test_success_without_reason_counts_as_answered() -> None:
    assert dial_result_of({"Response": "Success"})[0] is DialOutcome.ANSWERED


def test_originate_response_from_capture_is_answered() -> None:
    lines = (CAPTURES / "ami_plain.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    response = find_event(events, "OriginateResponse")
    assert response is not None
    assert dial_result_of(response)[0] is DialOutcome.ANSWERED
    hangups = [hangup_cause_of(e) for e in events if e.get("Event") == "Hangup"]
    assert HangupCause(16, "Normal Clearing") in hangups


def test_capture_no_server_hangup_cause() -> None:
    lines = (CAPTURES / "ami_no_server.jsonl").read_text().splitlines()
    causes = [hangup_cause_of(json.loads(line)) for line in lines if '"Event": "Hangup"' in line]
    assert HangupCause(3, "No route to destination") in causes


@pytest.mark.parametrize(
    ("template", "to", "channel"),
    [
        ("PJSIP/{to}@trunk", "+15551234567", "PJSIP/15551234567@trunk"),
        ("PJSIP/{to}@trunk", "15551234567", "PJSIP/15551234567@trunk"),
        ("Local/{to}@from-bridge", "100", "Local/100@from-bridge"),
        ("PJSIP/trunk/sip:+{to}@carrier.example", "+4420", "PJSIP/trunk/sip:+4420@carrier.example"),
    ],
)
def test_endpoint_formatting_drops_the_plus(template: str, to: str, channel: str) -> None:
    assert originate_channel(check_endpoint_template(template), to) == channel


@pytest.mark.parametrize(
    "template", ["PJSIP/trunk", "PJSIP/{number}@trunk", "{to}", "PJSIP/{to}@{x}", "P/{to}\r\n"]
)
def test_bad_endpoint_templates_are_refused(template: str) -> None:
    with pytest.raises(ValueError):
        check_endpoint_template(template)


@pytest.mark.parametrize(
    "number", ["", "+", "123&PJSIP/999", "12@other", "1,2", "12 34", "1\r\nAction: Hangup"]
)
def test_undialable_numbers_are_refused(number: str) -> None:
    with pytest.raises(ValueError):
        dialable(number)


@pytest.mark.parametrize("digits", ["1", "0123456789", "ABCD", "*#", "12#"])
def test_valid_dtmf(digits: str) -> None:
    assert check_dtmf(digits) == digits


@pytest.mark.parametrize("digits", ["", "E", "a", "1 2", "12,", "#\n"])
def test_invalid_dtmf(digits: str) -> None:
    with pytest.raises(ValueError):
        check_dtmf(digits)


@pytest.mark.parametrize("value", ["plain", "a,b", 'say "hi"', "f(x),[y]", "back\\slash", "", "ü"])
def test_variable_values_survive_asterisks_argument_split(value: str) -> None:
    line = variable_line("__X", value)
    assert split_variable_header(line) == [f"__X={value}"]


def test_variable_escaping_leaves_plain_values_alone() -> None:
    assert escape_variable_value("call-123_abc.9") == "call-123_abc.9"


@pytest.mark.parametrize("name", ["", "1X", "A-B", "A=B", "A B"])
def test_bad_variable_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        variable_line(name, "v")


def test_line_breaks_in_values_are_refused() -> None:
    with pytest.raises(ValueError):
        variable_line("X", "a\r\nAction: Hangup")


def test_originate_action_fields() -> None:
    request = OriginateRequest("call-1", "+15550001111", "+15552223333", {"__AGENT": "sales", "PLAIN": "1"})
    action = originate_action(
        request, endpoint="PJSIP/{to}@trunk", context="bridge-outbound", exten="s", timeout_s=25.5
    )
    assert action == {
        "Action": "Originate",
        "Channel": "PJSIP/15552223333@trunk",
        "Context": "bridge-outbound",
        "Exten": "s",
        "Priority": "1",
        "Timeout": "25500",
        "CallerID": "<+15550001111>",
        "Async": "true",
        "ChannelId": "call-1",
        "Variable": [
            "__BRIDGE_CALL_ID=call-1",
            "__BRIDGE_FROM=+15550001111",
            "__BRIDGE_TO=+15552223333",
            "__AGENT=sales",
            "PLAIN=1",
        ],
    }


@pytest.mark.parametrize("call_id", ["", "x" * 150, "a\nb"])
def test_originate_refuses_bad_call_ids(call_id: str) -> None:
    with pytest.raises(ValueError):
        originate_action(
            OriginateRequest(call_id, "+1", "+2"), endpoint="PJSIP/{to}", context="c", exten="s", timeout_s=1
        )


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ("Permission denied", "permission_denied"),
        ("No such channel", "channel_not_found"),
        ("Channel not found", "channel_not_found"),
        ("Channel does not exist: PJSIP/x-1", "channel_not_found"),
        ("Extension does not exist.", "asterisk_error"),
        ("Invalid timeout", "asterisk_error"),
    ],
)
def test_error_messages_map_to_codes(message: str, code: str) -> None:
    assert error_code(message) == code


def test_error_code_default_is_configurable() -> None:
    assert error_code("Originate failed", "originate_failed") == "originate_failed"
    assert error_code("Permission denied", "originate_failed") == "permission_denied"


def test_find_helpers() -> None:
    ack = {"Response": "Success", "Message": "Originate successfully queued"}
    event = {"Event": "OriginateResponse", "Response": "Failure", "Reason": "5"}
    assert find_event([ack, event], "originateresponse") is event
    assert find_error([ack, event]) is None
    error = {"Response": "Error", "Message": "Permission denied"}
    assert find_error([error]) is error


def test_hangup_cause_parsing() -> None:
    assert hangup_cause_of({"Cause": "17", "Cause-txt": "User busy"}) == HangupCause(17, "User busy")
    assert hangup_cause_of({"Cause": ""}) is None


def _health(**overrides: object) -> ControllerHealth:
    args: dict[str, object] = {
        "closed": False,
        "logged_in": False,
        "auth_refused": False,
        "was_up": False,
        "started": True,
        "since_start_s": 0.0,
        "connect_timeout_s": 5.0,
    } | overrides
    return compute_health(**args)  # type: ignore[arg-type]


def test_health_rules() -> None:
    assert _health(started=False) is ControllerHealth.DOWN
    assert _health() is ControllerHealth.DEGRADED  # first attempts, still within connect_timeout
    assert _health(since_start_s=6.0) is ControllerHealth.DOWN  # never came up
    assert _health(logged_in=True, was_up=True) is ControllerHealth.OK
    assert _health(was_up=True, since_start_s=600.0) is ControllerHealth.DEGRADED  # reconnecting
    assert _health(auth_refused=True) is ControllerHealth.DOWN
    assert _health(auth_refused=True, was_up=True) is ControllerHealth.DOWN
    assert _health(closed=True, logged_in=True) is ControllerHealth.DOWN


def test_backoff_doubles_to_a_cap() -> None:
    delays = [0.0]
    for _ in range(8):
        delays.append(next_backoff(delays[-1]))
    assert delays[1:] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert BACKOFF_INITIAL_S == 0.25
    assert BACKOFF_MAX_S == 10.0
    assert AUTH_RETRY_S > BACKOFF_MAX_S


# --- finding an inbound caller by the call id the sample dialplan marks it with --------------------------


def capture_status_events() -> list[dict[str, object]]:
    lines = (CAPTURES / "ami_dtmf_events.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [r for r in records if r.get("kind") == "ami_rx" and r.get("ActionID") == "status-3"]


def test_the_captured_status_list_names_the_audiosocket_caller() -> None:
    events = capture_status_events()
    assert [e.get("Event") or e.get("Response") for e in events] == [
        "Success",
        "Status",
        "Status",
        "Status",
        "StatusComplete",
    ]
    call_id = "62e4dcb8-e362-4a40-a2aa-458d9968463a"
    # Both the caller's leg and the AudioSocket channel carry it; the media channel is never the caller.
    assert caller_channel(events, call_id) == "Local/dtmf@cap-far-00000002;1"
    with pytest.raises(LookupError):
        caller_channel(events, "some-other-call")


def test_status_variables_reads_one_or_many_headers() -> None:
    assert status_variables({"Variable": "BRIDGE_CALL_ID=abc"}) == {"BRIDGE_CALL_ID": "abc"}
    assert status_variables({"Variable": ["A=(null)", "B=x=y", "C="]}) == {"B": "x=y", "C": ""}
    assert status_variables({}) == {}


def test_status_action_reads_the_call_id_by_its_plain_name() -> None:
    assert status_action() == {"Action": "Status", "Variables": "BRIDGE_CALL_ID"}
    with pytest.raises(ValueError):
        status_action("__BRIDGE_CALL_ID")  # Asterisk never finds a name given with its prefix
    with pytest.raises(ValueError):
        status_action("A,B")


def test_a_bridge_decides_between_two_marked_callers() -> None:
    def status(channel: str, bridge: str, call_id: str = "c1") -> dict[str, object]:
        return {
            "Event": "Status",
            "Channel": channel,
            "BridgeID": bridge,
            "Variable": f"BRIDGE_CALL_ID={call_id}",
        }

    events = [
        status("PJSIP/a-1", "b1"),
        status("PJSIP/b-2", "b2"),
        status("WebSocket/bridge_media/0x1", "b2"),
        status("PJSIP/c-3", "b2", call_id="c2"),
    ]
    assert caller_channel(events, "c1") == "PJSIP/b-2"
    with pytest.raises(LookupError, match="several"):
        caller_channel(events[:2], "c1")


def test_amd_is_requested_on_the_originated_channel_only_when_asked() -> None:
    asked = OriginateRequest(call_id="c", from_number="+1555", to_number="+1666", amd=True)
    assert "BRIDGE_AMD=1" in originate_variables(asked)
    plain = OriginateRequest(call_id="c", from_number="+1555", to_number="+1666")
    assert not [v for v in originate_variables(plain) if "AMD" in v]
