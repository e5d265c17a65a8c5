"""The Asterisk samples (asterisk-sample-conf/) do what their comments promise, run through a faithful
model of Asterisk's dialplan (tests/fakes/dialplan.py): a hostile caller cannot change the webhook's
JSON, a bridge that is down, slow or refusing sends the caller to a human, transfers reach the trunk
only for E.164 numbers, and the AMI account has no more rights than the bridge uses.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.api.routes_calls import TARGET_PATTERN
from bridge.asterisk import ari_mapping as mapping
from bridge.asterisk.ami_mapping import caller_channel, originate_variables
from bridge.asterisk.ari_mapping import transfer_extension
from bridge.asterisk.call_metadata import announced_call_id, call_variables, dial_options
from bridge.session.control import OriginateRequest
from bridge.settings import AriSettings
from tests.fakes.ami_server import ACTION_CLASSES, split_variable_header
from tests.fakes.asterisk_conf import SAMPLES, manager_classes, section
from tests.fakes.asterisk_text import (
    INT_MAX,
    Unmodelled,
    expressions_in,
    filter_allowed,
    parse_variable_name,
    separate_args,
    substring,
)
from tests.fakes.dialplan import Channel, Dialplan, Engine, NoSuchExtension, Run

PLAN = Dialplan.load()
INBOUND = ("bridge-inbound", "bridge-inbound-audiosocket")  # announced by the `connect` webhook
ARI_INBOUND = "bridge-inbound-ari"  # announced by entering the ARI app
UNIQUEID = "1717171717.42"
CALL_UUID = "5a1c2f0e-3b4d-4e6f-8a9b-0c1d2e3f4a5b"
MEDIA_URL = "ws://127.0.0.1:8080/api/real-time-voice-stream"
SUCCESS = '{"success": true, "data": {"callId": "1717171717.42", "status": "pending"}}'
SAFE_NAME = frozenset(string.ascii_letters + string.digits + " .-'")
NAME_LIMIT = 64
OPERATOR = "PJSIP/operator"


# --- running a call through the sample dialplan ---------------------------------------------------------


def strict_json(body: bytes | None) -> dict[str, Any]:
    """The body as JSON, refusing duplicate keys (Python's json would keep the last one silently)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(keys) != len(set(keys)):
            raise ValueError(f"duplicate keys in {keys}")
        return dict(pairs)

    assert body is not None, "the webhook must be a POST with a body"
    document = json.loads(body, object_pairs_hook=unique)
    assert isinstance(document, dict)
    return document


def call(
    context: str,
    *,
    exten: str = "34987654321",
    num: str = "34600111555",
    name: str = "Alice Caller",
    answer: str | None = SUCCESS,
    dialer: Callable[[str], str] | None = None,
) -> Run:
    channel = Channel(exten, num, name, UNIQUEID, uuids=iter([CALL_UUID]))
    engine = Engine(PLAN, channel, lambda _request: answer, dialer or (lambda _dial: "ANSWER"))
    return engine.execute(context, exten)


def c_text(text: str) -> str:
    return text.split("\0", maxsplit=1)[0]  # what a C string holds


def digits(text: str) -> str:
    return "".join(char for char in c_text(text) if char in "0123456789")


def safe_name(name: str) -> str:
    return "".join(char for char in c_text(name) if char in SAFE_NAME)[:NAME_LIMIT]


def expected_webhook(context: str, exten: str, num: str, name: str) -> dict[str, str]:
    return {
        "callId": UNIQUEID if context == "bridge-inbound" else CALL_UUID,
        "callerPhone": "+" + digits(num),
        "callerName": safe_name(name),
        "b_number": "+" + digits(exten),
        "event": "connect",
        "websocketUrl": MEDIA_URL,
    }


def bridge_dial(context: str, exten: str, num: str) -> str:
    if context == "bridge-inbound":
        numbers = f"aNumberE164={digits(num)},bNumberE164={digits(exten)}"
        return f"WebSocket/bridge_media/c(ulaw)f(json)v(callId={UNIQUEID},{numbers})"
    return f"AudioSocket/127.0.0.1:9092/{CALL_UUID}/c(slin16)"


def check_webhook(context: str, *, exten: str, num: str, name: str) -> None:
    run = call(context, exten=exten, num=num, name=name)
    [request] = run.requests
    assert strict_json(request.body) == expected_webhook(context, exten, num, name)
    assert run.dials == [bridge_dial(context, exten, num)]


# --- the webhook body cannot be shaped by the caller ---------------------------------------------------

HOSTILE_NAMES = [
    'x","callerPhone":"+15551234567',
    'x", "b_number": "+34911000111", "z": "',
    '"',
    "\\",
    '\\"',
    "}",
    '{"a": 1}',
    "a\nb",
    'a\r\n"event":"terminate"',
    "\x01\x08\x1b[31m\x7f",
    'ok\x00","callerPhone":"+1555',
    "José Ñoño 李小龍",
    "😀 emoji",
    "\u2028\u2029",
    "\udc80 lone surrogate",
    "x" * 200,
    "",
    " ",
    "O'Brien-Smith Jr.",
    "x):5",
    "a):0:1",
    "(a):b",
    "${UNIQUEID}",
    "$[1+1]",
    "a,b,c",
    "<script>",
]
HOSTILE_NUMBERS = [
    "+1 (555) 123-4567",
    '"',
    '1","callerName":"evil',
    "\\",
    "",
    "anonymous",
    "١٢٣",
    "1):9",
    "12\x0034",
    "+" + "9" * 40,
]
HOSTILE_EXTENS = ["34987654321", '3498765432"}', "1):99", "1\n2", "3,4"]


@pytest.mark.parametrize("context", INBOUND)
@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_display_name_is_only_text_in_the_webhook(context: str, name: str) -> None:
    check_webhook(context, exten="34987654321", num="34600111555", name=name)


@pytest.mark.parametrize("context", INBOUND)
@pytest.mark.parametrize("num", HOSTILE_NUMBERS)
def test_a_hostile_caller_number_is_only_digits_in_the_webhook(context: str, num: str) -> None:
    check_webhook(context, exten="34987654321", num=num, name="Alice")


@pytest.mark.parametrize("context", INBOUND)
@pytest.mark.parametrize("exten", HOSTILE_EXTENS)
def test_a_hostile_called_number_is_only_digits_in_the_webhook(context: str, exten: str) -> None:
    check_webhook(context, exten=exten, num="34600111555", name="Alice")


def test_the_spoofing_name_from_the_field_report_stays_a_name() -> None:
    run = call("bridge-inbound", num="34600111555", name='x","callerPhone":"+15551234567')
    body = strict_json(run.requests[0].body)
    assert body["callerPhone"] == "+34600111555"
    assert body["callerName"] == "xcallerPhone15551234567"


def test_unicode_letters_are_dropped_and_long_names_cut() -> None:
    assert strict_json(call("bridge-inbound", name="José Ñoño").requests[0].body)["callerName"] == "Jos oo"
    long_name = strict_json(call("bridge-inbound", name="ab" * 100).requests[0].body)["callerName"]
    assert long_name == "ab" * 32


@pytest.mark.parametrize("context", INBOUND)
@settings(max_examples=150, deadline=None)
@given(
    name=st.text(max_size=300),
    num=st.text(max_size=40),
    exten_tail=st.text(alphabet=st.characters(exclude_characters="\0"), min_size=1, max_size=20),
)
def test_any_caller_yields_exactly_the_intended_webhook(
    context: str, name: str, num: str, exten_tail: str
) -> None:
    check_webhook(context, exten="3" + exten_tail, num=num, name=name)


# --- failover ------------------------------------------------------------------------------------------

REFUSALS = {
    "refused_or_timed_out": None,
    "empty": "",
    "refused_by_the_bridge": '{"success": false, "error": "unknown number", "code": "company_not_found"}',
    "not_json": "<html><body>502 Bad Gateway</body></html>",
    "not_the_envelope": '{"success": "yes"}',
    "truncated": '{"success": tr',
}


@pytest.mark.parametrize("context", INBOUND)
@pytest.mark.parametrize("answer", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_bridge_that_does_not_accept_sends_the_caller_to_a_human(context: str, answer: str | None) -> None:
    run = call(context, answer=answer)
    assert len(run.requests) == 1
    assert run.dials == [OPERATOR]


@pytest.mark.parametrize("context", INBOUND)
def test_a_media_leg_that_fails_sends_the_caller_to_a_human(context: str) -> None:
    def dialer(dial: str) -> str:
        return "ANSWER" if dial == OPERATOR else "CHANUNAVAIL"

    run = call(context, dialer=dialer)
    assert run.dials == [bridge_dial(context, "34987654321", "34600111555"), OPERATOR]


@pytest.mark.parametrize("context", INBOUND)
def test_an_accepted_call_goes_to_the_bridge_only(context: str) -> None:
    run = call(context)
    assert run.dials == [bridge_dial(context, "34987654321", "34600111555")]
    assert run.hangup_cause == ""  # Hangup() once the bridge's call ends


@pytest.mark.parametrize("context", INBOUND)
def test_the_webhook_is_bounded_and_authenticated(context: str) -> None:
    [request] = call(context).requests
    assert request.url == "http://127.0.0.1:8080/api/voip/webhook"
    connect, total = float(request.options["conntimeout"]), float(request.options["httptimeout"])
    assert 0 < connect <= total <= 5  # seconds of silence a caller may hear before the failover
    assert "x-connector-api-key: change-me-connector-key" in request.headers
    assert "Content-Type: application/json" in request.headers


def test_every_curl_is_preceded_by_both_timeouts() -> None:
    curls = 0
    for context in PLAN.contexts.values():
        options: set[str] = set()
        for extension in context.extensions:
            for priority in extension.priorities:
                option = re.match(r"CURLOPT\((\w+)\)=([0-9.]+)$", priority.data)
                if priority.app == "Set" and option:
                    options.add(option.group(1))
                if re.search(r"\bCURL\(", priority.data):
                    curls += 1
                    assert {"conntimeout", "httptimeout"} <= options, f"line {priority.line}"
    assert curls == len(INBOUND)


def test_every_inbound_context_has_a_failover_to_a_human() -> None:
    inbound = [name for name in PLAN.contexts if name.startswith("bridge-inbound")]
    assert sorted(inbound) == sorted((*INBOUND, ARI_INBOUND))
    for name in inbound:
        [extension] = PLAN.contexts[name].extensions
        after = extension.priorities[extension.index_of("failover") :]
        assert any(p.app == "Goto" and p.data.startswith("human-operator,") for p in after)


def test_acceptance_is_read_with_json_decode() -> None:
    for name in INBOUND:
        [extension] = PLAN.contexts[name].extensions
        checks = [p.data for p in extension.priorities if p.app == "GotoIf" and "WEBHOOK" in p.data]
        assert checks == ["$[x${JSON_DECODE(WEBHOOK,success)} != x1]?failover"]


def test_no_expression_holds_a_double_quote() -> None:
    expressions = [
        body
        for context in PLAN.contexts.values()
        for extension in context.extensions
        for priority in extension.priorities
        for body in expressions_in(priority.data)
    ]
    assert expressions  # the samples do use $[...]
    assert [body for body in expressions if '"' in body] == []


# --- the call id on the caller's channel: how call control finds an inbound caller --------------------


@pytest.mark.parametrize("context", INBOUND)
def test_inbound_callers_are_marked_with_the_call_id_the_bridge_knows(context: str) -> None:
    channel = Channel("34987654321", "34600111555", "Alice", UNIQUEID, uuids=iter([CALL_UUID]))
    engine = Engine(PLAN, channel, lambda _request: SUCCESS, lambda _dial: "ANSWER")
    run = engine.execute(context, "34987654321")
    call_id = strict_json(run.requests[0].body)["callId"]
    assert channel.variables["_BRIDGE_CALL_ID"] == call_id  # inheritable by the media channel it dials
    [media] = run.inherited
    assert media["BRIDGE_CALL_ID"] == call_id  # _X arrives as X (captures ws_inherited_vars)
    # What AMI Status then lists (captures ami_dtmf_events): both carry it, the caller is the one to act on.
    media_name = (
        "AudioSocket/127.0.0.1:9092-" + CALL_UUID
        if "audiosocket" in context
        else "WebSocket/bridge_media/0x1"
    )
    listed = [
        {"Event": "Status", "Channel": "PJSIP/carrier-00000001", "Variable": f"BRIDGE_CALL_ID={call_id}"},
        {"Event": "Status", "Channel": media_name, "Variable": f"BRIDGE_CALL_ID={media['BRIDGE_CALL_ID']}"},
    ]
    assert caller_channel(listed, call_id) == "PJSIP/carrier-00000001"
    if context == "bridge-inbound":  # chan_websocket: MEDIA_START names the same call as v()
        assert announced_call_id(media) == dict(query_of(run.dials[0]))["callId"]


def test_a_refused_call_is_not_marked() -> None:
    channel = Channel("34987654321", "34600111555", "Alice", UNIQUEID)
    engine = Engine(PLAN, channel, lambda _request: None, lambda _dial: "ANSWER")
    run = engine.execute("bridge-inbound", "34987654321")
    assert run.dials == [OPERATOR]
    assert run.inherited == [{}]  # the operator's channel carries no call id of the bridge's


# --- outbound: AMD only when the call asks for it ----------------------------------------------------------

OUTBOUND_ID = "out-7f3a.1"


def query_of(dial: str) -> list[tuple[str, str]]:
    """The v() parameters of a WebSocket dial string, as the media URI's query carries them."""
    pairs = dial_options(dial.removeprefix("WebSocket/"))["v"].split(",")
    return [(name, value) for name, _, value in (pair.partition("=") for pair in pairs)]


def originate(amd: bool, amd_outcome: tuple[str, str] | None = None) -> tuple[Run, dict[str, str]]:
    """[bridge-outbound] on a channel carrying exactly the variables the AMI Originate sets."""
    request = OriginateRequest(OUTBOUND_ID, "+34987654321", "+34600111555", amd=amd)
    variables: dict[str, str] = {}
    for line in originate_variables(request):
        for item in split_variable_header(line):  # as Asterisk splits each Variable: header
            name, _, value = item.partition("=")
            variables[name] = value
    channel = Channel("s", variables=variables)
    amd_app = (lambda: amd_outcome) if amd_outcome is not None else None
    engine = Engine(PLAN, channel, lambda _request: None, lambda _dial: "ANSWER", amd=amd_app)
    return engine.execute("bridge-outbound", "s"), variables


def expected_outbound_dial(amd: str) -> str:
    numbers = "aNumberE164=34987654321,bNumberE164=34600111555"
    return f"WebSocket/bridge_media/c(ulaw)f(json)v(callId={OUTBOUND_ID},{numbers},amd={amd})"


@pytest.mark.parametrize("app_amd_loaded", [True, False])
def test_a_call_that_does_not_ask_for_amd_never_runs_it(app_amd_loaded: bool) -> None:
    run, variables = originate(
        amd=False, amd_outcome=("MACHINE", "INITIALSILENCE-2500-2500") if app_amd_loaded else None
    )
    assert "BRIDGE_AMD" not in variables
    assert run.missing_application is None  # AMD() was not reached: no app_amd needed
    assert run.dials == [expected_outbound_dial("")]
    [media] = run.inherited
    assert "BRIDGE_AMD_STATUS" not in media
    assert media["__BRIDGE_CALL_ID"] == OUTBOUND_ID
    assert "amd" not in call_variables(dict(query_of(run.dials[0])), media)  # no verdict reaches the call


@pytest.mark.parametrize(
    ("status", "verdict"),
    [("MACHINE", "MACHINE"), ("HUMAN", "HUMAN"), ("NOTSURE", "NOTSURE"), ("HANGUP", "HANGUP")],
)
def test_amd_runs_when_asked_and_its_verdict_reaches_the_bridge_both_ways(status: str, verdict: str) -> None:
    run, variables = originate(amd=True, amd_outcome=(status, "MAXWORDS-3-3"))
    assert variables["BRIDGE_AMD"] == "1"
    assert run.dials == [expected_outbound_dial(verdict)]
    [media] = run.inherited
    assert media["BRIDGE_AMD_STATUS"] == verdict  # MEDIA_START channel_variables
    query = dict(query_of(run.dials[0]))
    assert query["amd"] == verdict  # v(): plain-text control carries no variables
    assert call_variables(query, media)["amd"] == verdict
    assert call_variables(query, {})["amd"] == verdict
    assert announced_call_id(media) == query["callId"] == OUTBOUND_ID


@pytest.mark.parametrize("status", ["MACHINE),x(", "HU,MAN", "MACHINE}", "${EVIL}", "machine", ""])
def test_an_odd_amdstatus_cannot_break_the_dial_string(status: str) -> None:
    run, _ = originate(amd=True, amd_outcome=(status, ""))
    kept = "".join(char for char in status if "A" <= char <= "Z")
    assert run.dials == [expected_outbound_dial(kept)]
    assert dial_options(run.dials[0].removeprefix("WebSocket/"))["c"] == "ulaw"


def test_asking_for_amd_without_app_amd_goes_on_as_notsure() -> None:
    # Without app_amd Asterisk has no AMD application (captures: "app_amd is not in this build"), and
    # calling it would hang the callee up: IFMODULE keeps the call going with the verdict NOTSURE.
    run, _ = originate(amd=True, amd_outcome=None)
    assert run.missing_application is None
    assert run.dials == [expected_outbound_dial("NOTSURE")]
    [media] = run.inherited
    assert media["BRIDGE_AMD_STATUS"] == "NOTSURE"


def test_amd_is_guarded_by_the_call_and_by_the_module() -> None:
    # Every AMD() in the samples is reached only after both checks, whatever the path to it.
    [extension] = PLAN.contexts["bridge-outbound"].extensions
    apps = [(p.app, p.data) for p in extension.priorities]
    amd_at = apps.index(("AMD", ""))
    guards = [data for app, data in apps[:amd_at] if app == "GotoIf"]
    assert guards == ["$[x${BRIDGE_AMD} != x1]?media", "$[x${IFMODULE(app_amd.so)} != x1]?verdict"]


# --- ARI mode: [bridge-inbound-ari] and [bridge-amd] ---------------------------------------------------


def stasis_run(
    context: str, exten: str, *, status: str = "SUCCESS", amd: tuple[str, str] | None = None
) -> Run:
    channel = Channel(exten, "34600111555", "Alice Caller", UNIQUEID)
    engine = Engine(
        PLAN, channel, lambda _request: None, lambda _dial: "ANSWER", amd=(lambda: amd) if amd else None
    )
    engine.stasis = lambda _args: status
    return engine.execute(context, exten)


def test_an_ari_caller_enters_the_app_with_the_called_number() -> None:
    run = stasis_run(ARI_INBOUND, "34987654321")
    assert run.stasis == [[AriSettings().app, "inbound", "34987654321"]]
    assert mapping.inbound_called(run.stasis[0][1:]) == "34987654321"  # what the controller reads
    assert run.requests == []  # no webhook: the bridge admits the call itself
    assert run.dials == []  # no media dial: the bridge adds the media leg over ARI
    assert run.hangup_cause == ""  # the app let it go: it was hung up or continued elsewhere


@pytest.mark.parametrize("exten", HOSTILE_EXTENS)
def test_a_hostile_called_number_cannot_add_a_stasis_argument(exten: str) -> None:
    [args] = stasis_run(ARI_INBOUND, exten).stasis
    assert args == [AriSettings().app, "inbound", digits(exten)]


def test_an_ari_caller_goes_to_a_human_when_no_bridge_holds_the_app() -> None:
    run = stasis_run(ARI_INBOUND, "34987654321", status="FAILED")
    assert run.dials == [OPERATOR]


def test_the_ari_settings_name_contexts_of_the_sample() -> None:
    ari = AriSettings()
    assert {ari.failover_context, ari.amd_context} <= PLAN.contexts.keys()
    assert PLAN.find(ari.failover_context, "s")[0] == "human-operator"
    assert PLAN.find(ari.amd_context, "s")[0] == "bridge-amd"


@pytest.mark.parametrize(
    ("verdict", "status"),
    [
        (("MACHINE", "INITIALSILENCE-2500-2500"), "MACHINE"),
        (("HUMAN", "HUMAN-200-300"), "HUMAN"),
        (("NOTSURE", "TOOLONG-5000"), "NOTSURE"),
        (("MA,CHINE", "x,y)"), "MACHINE"),  # nothing AMD() writes can add an argument
    ],
)
def test_amd_in_ari_mode_returns_the_verdict_to_the_app(verdict: tuple[str, str], status: str) -> None:
    run = stasis_run("bridge-amd", "s", amd=verdict)
    [args] = run.stasis
    assert args[:3] == [AriSettings().app, "amd", status]
    assert len(args) == 4
    assert mapping.amd_result(args[1:])[0] == status  # what the controller reads


def test_amd_in_ari_mode_without_app_amd_is_not_sure_and_keeps_the_call() -> None:
    run = stasis_run("bridge-amd", "s", amd=None)
    assert run.missing_application is None  # AMD() never runs where it does not exist
    assert run.stasis == [[AriSettings().app, "amd", "NOTSURE", "NO_APP_AMD"]]
    assert mapping.amd_result(run.stasis[0][1:]) == ("NOTSURE", "NO_APP_AMD")


# --- transfers -------------------------------------------------------------------------------------------


def transfer(target: str) -> Run:
    exten = transfer_extension(target)  # what the bridge sends (ARI continue; AMI Redirect alike)
    engine = Engine(PLAN, Channel(exten), lambda _request: None, lambda _dial: "ANSWER")
    return engine.execute("bridge-transfer", exten)


@pytest.mark.parametrize(
    ("target", "dials"),
    [
        ("+34911222333", ["PJSIP/34911222333@trunk"]),
        ("+15551234567", ["PJSIP/15551234567@trunk"]),
        ("200", ["PJSIP/200"]),
        ("34911222333", ["PJSIP/34911222333"]),  # no '+': a local extension, never the trunk
        ("+12*3", []),
        ("12#", []),
    ],
)
def test_transfers_reach_the_trunk_only_for_e164(target: str, dials: list[str]) -> None:
    run = transfer(target)
    assert run.dials == dials
    if not dials:
        assert run.hangup_cause == "28"  # invalid number format


@pytest.mark.parametrize("target", ["operator", "*72", "#"])
def test_other_transfer_targets_match_nothing(target: str) -> None:
    with pytest.raises(NoSuchExtension):
        transfer(target)


@settings(max_examples=200, deadline=None)
@given(target=st.from_regex(TARGET_PATTERN, fullmatch=True))
def test_no_transfer_target_but_e164_reaches_the_trunk(target: str) -> None:
    try:
        dials = transfer(target).dials
    except NoSuchExtension:
        dials = []
    trunk = [dial for dial in dials if dial.endswith("@trunk")]
    if re.fullmatch(r"\+[0-9]{2,}", target):
        assert trunk == [f"PJSIP/{target[1:]}@trunk"]
    else:
        assert trunk == []


def test_only_e164_patterns_dial_the_trunk() -> None:
    trunk_dials = [
        (context.name, extension.pattern)
        for context in PLAN.contexts.values()
        for extension in context.extensions
        for priority in extension.priorities
        if priority.app == "Dial" and "@trunk" in priority.data
    ]
    assert trunk_dials == [("bridge-transfer", "_+X.")]


# --- modules, credentials, least privilege ------------------------------------------------------------

MODULES = {
    "CURL": "func_curl",
    "CURLOPT": "func_curl",
    "JSON_DECODE": "func_json",
    "FILTER": "func_strings",
    "REPLACE": "func_strings",
    "LEN": "func_strings",
    "CALLERID": "func_callerid",
    "URIENCODE": "func_uri",
    "UUID": "func_uuid",
    "Dial": "app_dial",
    "AMD": "app_amd",
    "Stasis": "app_stasis",
    "IFMODULE": "func_module",
    "WebSocket/": "chan_websocket",
    "AudioSocket/": "chan_audiosocket",
    "PJSIP/": "chan_pjsip",
}
CORE_APPLICATIONS = {"NoOp", "Set", "GotoIf", "Goto", "Hangup"}


def test_the_header_names_the_module_of_everything_used() -> None:
    text = (SAMPLES / "extensions.conf").read_text()
    header = "".join(line for line in text.splitlines(keepends=True) if line.startswith(";"))
    body = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(";"))
    functions = set(re.findall(r"\$\{([A-Z_]+)\(", body)) | set(re.findall(r"\b(CURLOPT)\(", body))
    applications = set(re.findall(r"^\s*(?:exten => [^,]+|same => [^,]+),([A-Za-z]+)\(", body, re.M))
    technologies = set(re.findall(r"\b(WebSocket/|AudioSocket/|PJSIP/)", body))
    used = functions | (applications - CORE_APPLICATIONS) | technologies
    assert used <= MODULES.keys(), f"add the module of {used - MODULES.keys()} to MODULES and the header"
    assert {MODULES[name] for name in used} <= set(re.findall(r"\b([a-z]+_[a-z_]+)\b", header))


def test_media_sockets_carry_the_connector_credentials() -> None:
    media = section("websocket_client.conf", "bridge_media")
    assert media["username"]
    assert media["password"] == PLAN.globals["BRIDGE_CONNECTOR_KEY"]  # one connector key, both places


def test_the_ami_account_has_only_what_the_bridge_uses() -> None:
    classes = manager_classes("bridge")
    assert classes.read == {"call"}  # OriginateResponse, Newchannel, Hangup
    assert classes.write == {"originate", "call"}
    assert "system" not in classes.read | classes.write  # Originate Application=System = a shell
    for action in ("originate", "hangup", "redirect", "playdtmf", "getvar", "status"):
        assert ACTION_CLASSES[action] & classes.write, action


# --- the model's own rules, pinned to Asterisk's sources -----------------------------------------------


def test_the_model_splits_arguments_as_asterisk_does() -> None:
    # The last argument is the raw remainder: a POST body keeps its commas and quotes.
    assert separate_args('u,{"a":"b","c":"d"}', 2, remove_chars=True) == ["u", '{"a":"b","c":"d"}']
    assert separate_args('"a,b",c', 3, remove_chars=True) == ["a,b", "c"]
    assert separate_args("f(x,y),z", 3, remove_chars=True) == ["f(x,y)", "z"]
    assert separate_args("a\\,b,c", 3, remove_chars=False) == ["a\\,b", "c"]
    assert separate_args("0123456789,", 2, remove_chars=False) == ["0123456789", ""]


def test_the_model_reads_filter_sets_as_documented() -> None:
    # docs.asterisk.org FILTER(): ranges with '-', a literal '-' as '\-', \xHH and \0ooo escapes.
    assert filter_allowed("a-c\\-\\x20\\041") == {ord(c) for c in "abc- !"}
    with pytest.raises(Unmodelled):
        filter_allowed("z-a")  # Asterisk warns "Range wrapping in FILTER"


def test_the_model_knows_the_substring_quirk_of_function_calls() -> None:
    # pbx_variables.c parse_variable_name: the first ':' outside parentheses starts `:offset:length`.
    assert parse_variable_name("FILTER(0-9,1):5):2") == ("FILTER(0-9,1)", 5, INT_MAX)
    assert parse_variable_name("A_NAME:0:64") == ("A_NAME", 0, 64)
    assert parse_variable_name('CURL(http://h:80/x,{"a":1})') == ('CURL(http://h:80/x,{"a":1})', 0, INT_MAX)
    assert substring("abcdef", -2, INT_MAX) == "ef"
    assert substring("abcdef", 1, -1) == "bcde"
