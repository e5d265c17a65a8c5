"""Pure AMI helpers for `ami.py`: action headers, reply classification, reason codes, health.

No I/O here: everything takes and returns plain values so it can be unit-tested without a socket.
Facts come from shared/specs/asterisk-control-ami-ari.md (Part A) and the Asterisk 22.10.1 captures.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridge.session.control import ControllerHealth, DialOutcome, OriginateRequest

# Header values travel as `Key: value\r\n`: a CR or LF inside one would inject headers or end the action.
_LINE_BREAK = re.compile(r"[\r\n]")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What `{to}` and a Redirect extension may contain once a leading '+' is stripped: dial strings and
# extensions, never a separator ('/', '&', ',', '@') that would change what Asterisk dials.
_DIALABLE = re.compile(r"[0-9A-Za-z*#]+")
_DTMF = re.compile(r"[0-9A-D*#]+")
# Asterisk splits each `Variable:` header at commas with its app-argument parser, which treats quotes,
# parentheses and brackets specially and drops a backslash before any character (inferred from
# main/manager.c man_do_variable_value + AST_STANDARD_APP_ARGS): escape those so a value arrives intact.
_VARIABLE_SPECIALS = re.compile(r'([\\,"()\[\]])')

# OriginateResponse `Reason` is a control-frame number (pbx.c pbx_dial_reason).
_REASONS: dict[int, tuple[DialOutcome, str]] = {
    4: (DialOutcome.ANSWERED, "answered"),
    5: (DialOutcome.BUSY, "busy"),
    8: (DialOutcome.CONGESTION, "congestion"),
    3: (DialOutcome.NO_ANSWER, "ringing, no answer"),
    1: (DialOutcome.REJECTED, "hung up before answer"),
    0: (DialOutcome.FAILED, "failed (no route, channel unavailable, ...)"),
}

# Replies that mean "no such channel": Hangup/Getvar say "No such channel", PlayDTMF "Channel not
# found", Redirect "Channel does not exist: <name>".
_CHANNEL_MISSING = ("no such channel", "channel not found", "channel does not exist")

# Backoff between connection attempts; a refused login waits longer so a wrong secret is not hammered.
BACKOFF_INITIAL_S = 0.25
BACKOFF_MAX_S = 10.0
AUTH_RETRY_S = 30.0
DTMF_GAP_S = 0.1
HANGUP_CAUSE_NORMAL = 16

# The inheritable variable the sample dialplan sets on an inbound caller before it dials the bridge
# (`Set(_BRIDGE_CALL_ID=${CALL_ID})`): it names the call on the caller's channel and on the media
# channel it dials. AMI `Status` with `Variables:` reads it on every channel (captures: ami_dtmf_events).
CALL_ID_VARIABLE = "BRIDGE_CALL_ID"
# Set on an originated channel when the call asks for answering-machine detection: [bridge-outbound]
# runs AMD() only then (app_amd is not loaded everywhere, and an unknown application hangs up).
AMD_REQUEST_VARIABLE = "BRIDGE_AMD"
# The bridge's own media channels, which carry the inherited call id too but are never the caller.
MEDIA_CHANNEL_PREFIXES = ("AudioSocket/", "WebSocket/")
_UNSET = "(null)"  # what Status prints for a variable the channel does not have


@dataclass(frozen=True, slots=True)
class HangupCause:
    code: int
    text: str = ""


def check_header_value(value: str, what: str) -> str:
    if _LINE_BREAK.search(value):
        raise ValueError(f"{what} must not contain a line break")
    return value


def check_endpoint_template(template: str) -> str:
    """The `[asterisk.originate] endpoint` must use exactly the `{to}` field, e.g. `PJSIP/{to}@trunk`."""
    check_header_value(template, "originate endpoint")
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != {"to"}:
        raise ValueError(f"originate endpoint must contain '{{to}}' and no other field: {template!r}")
    if "/" not in template:
        raise ValueError(f"originate endpoint must be a Tech/data dial string: {template!r}")
    return template


def dialable(number: str, what: str = "number") -> str:
    """E.164 or an extension, as Asterisk dials it: without a leading '+'.

    The sample dialplan passes numbers as digits without '+' (extensions.conf), and trunks disagree
    on '+', so the bridge drops it and lets the dialplan or endpoint template add a prefix if needed.
    """
    digits = number.strip().removeprefix("+")
    if not _DIALABLE.fullmatch(digits):
        raise ValueError(f"{what} is not dialable: {number!r}")
    return digits


def originate_channel(template: str, to_number: str) -> str:
    return template.format(to=dialable(to_number, "to_number"))


def check_dtmf(digits: str) -> str:
    if not _DTMF.fullmatch(digits):
        raise ValueError(f"DTMF digits must match [0-9A-D*#]+: {digits!r}")
    return digits


def escape_variable_value(value: str) -> str:
    check_header_value(value, "variable value")
    return _VARIABLE_SPECIALS.sub(r"\\\1", value)


def variable_line(name: str, value: str) -> str:
    # `_X`/`__X` prefixes (inheritance) are part of a valid name here.
    if not _VARIABLE_NAME.fullmatch(name):
        raise ValueError(f"not a channel variable name: {name!r}")
    return f"{name}={escape_variable_value(value)}"


def originate_variables(request: OriginateRequest) -> list[str]:
    """`Variable:` lines: the bridge's own (inheritable, `__`, so they reach the media channel the
    dialplan dials next) then the caller's, whose names are used verbatim (add `__` to inherit)."""
    own = {
        "__BRIDGE_CALL_ID": request.call_id,
        "__BRIDGE_FROM": request.from_number,
        "__BRIDGE_TO": request.to_number,
    }
    if request.amd:  # on the originated channel only: the dialplan reads it there, nothing inherits it
        own[AMD_REQUEST_VARIABLE] = "1"
    lines = [variable_line(k, v) for k, v in own.items()]
    lines += [variable_line(k, v) for k, v in request.variables.items()]
    return lines


def originate_action(
    request: OriginateRequest, *, endpoint: str, context: str, exten: str, timeout_s: float
) -> dict[str, str | list[str]]:
    """Headers of an async Originate whose channel gets the call id as its uniqueid."""
    check_header_value(request.call_id, "call_id")
    if not request.call_id or len(request.call_id) > 149:  # AST_MAX_PUBLIC_UNIQUEID
        raise ValueError("call_id must be 1..149 characters")
    check_header_value(request.from_number, "from_number")
    return {
        "Action": "Originate",
        "Channel": originate_channel(endpoint, request.to_number),
        "Context": check_header_value(context, "context"),
        "Exten": check_header_value(exten, "exten"),
        "Priority": "1",
        "Timeout": str(round(timeout_s * 1000)),  # AMI wants milliseconds
        "CallerID": f"<{request.from_number}>" if request.from_number else "",
        "Async": "true",  # false would block the AMI session until answer
        "ChannelId": request.call_id,
        "Variable": originate_variables(request),
    }


def status_action(variable: str = CALL_ID_VARIABLE) -> dict[str, str]:
    """`Status` of every channel with one variable read on each (an event list: Status..., StatusComplete)."""
    if not _VARIABLE_NAME.fullmatch(variable) or variable.startswith("_"):
        raise ValueError(f"Status reads variables by their plain name: {variable!r}")
    return {"Action": "Status", "Variables": variable}


def status_variables(event: Mapping[str, object]) -> dict[str, str]:
    """The `Variable: NAME=value` headers of a Status event (one header is a str, several a list);
    `(null)` means the channel does not have it."""
    raw = event.get("Variable", [])
    items = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list | tuple) else []
    found: dict[str, str] = {}
    for item in items:
        name, sep, value = str(item).partition("=")
        if sep and value != _UNSET:
            found[name] = value
    return found


def caller_channel(events: Sequence[Mapping[str, object]], call_id: str) -> str:
    """The caller's channel among `Status` events that read CALL_ID_VARIABLE: the channel carrying the
    call id that is not one of the bridge's media channels (which inherit it too). When several carry
    it, the one in the same bridge as the media channel. LookupError when none or no single one does."""
    carriers = [
        e
        for e in events
        if str(e.get("Event", "")) == "Status" and status_variables(e).get(CALL_ID_VARIABLE) == call_id
    ]
    media = [e for e in carriers if str(e.get("Channel", "")).startswith(MEDIA_CHANNEL_PREFIXES)]
    callers = [e for e in carriers if e not in media]
    bridges = {str(e.get("BridgeID", "")) for e in media} - {""}
    if len(callers) > 1 and bridges:
        callers = [e for e in callers if str(e.get("BridgeID", "")) in bridges]
    if not callers:
        raise LookupError(f"no caller's channel carries {CALL_ID_VARIABLE}={call_id}")
    if len(callers) > 1:
        names = ", ".join(str(e.get("Channel", "")) for e in callers)
        raise LookupError(f"several channels carry {CALL_ID_VARIABLE}={call_id}: {names}")
    return str(callers[0].get("Channel", ""))


def dial_result_of(response: Mapping[str, str]) -> tuple[DialOutcome, str]:
    """Outcome and a human reason from an OriginateResponse event's `Response` and `Reason`."""
    raw = str(response.get("Reason", "")).strip()
    try:
        code = int(raw)
    except ValueError:
        code = -1
    outcome, words = _REASONS.get(code, (DialOutcome.FAILED, "failed"))
    if code == -1 and str(response.get("Response", "")) == "Success":
        outcome, words = DialOutcome.ANSWERED, "answered"
    return outcome, f"Reason {raw or '?'}: {words}"


def is_channel_missing(message: str) -> bool:
    lowered = message.lower()
    return any(text in lowered for text in _CHANNEL_MISSING)


def error_code(message: str, default: str = "asterisk_error") -> str:
    """The ControlError code for an AMI `Response: Error` message."""
    lowered = message.lower()
    if "permission denied" in lowered:
        return "permission_denied"
    if is_channel_missing(lowered):
        return "channel_not_found"
    return default


def hangup_cause_of(event: Mapping[str, str]) -> HangupCause | None:
    try:
        code = int(str(event.get("Cause", "")).strip())
    except ValueError:
        return None
    return HangupCause(code, str(event.get("Cause-txt", "")))


def find_event(messages: Iterable[Mapping[str, str]], name: str) -> Mapping[str, str] | None:
    for message in messages:
        if str(message.get("Event", "")).lower() == name.lower():
            return message
    return None


def find_error(messages: Iterable[Mapping[str, str]]) -> Mapping[str, str] | None:
    for message in messages:
        if str(message.get("Response", "")).lower() == "error":
            return message
    return None


def compute_health(
    *,
    closed: bool,
    logged_in: bool,
    auth_refused: bool,
    was_up: bool,
    started: bool,
    since_start_s: float,
    connect_timeout_s: float,
) -> ControllerHealth:
    if closed or not started:
        return ControllerHealth.DOWN
    if logged_in:
        return ControllerHealth.OK
    if auth_refused:
        return ControllerHealth.DOWN
    if was_up or since_start_s < connect_timeout_s:
        return ControllerHealth.DEGRADED
    return ControllerHealth.DOWN


def next_backoff(previous_s: float) -> float:
    return min(BACKOFF_MAX_S, max(BACKOFF_INITIAL_S, previous_s * 2))
