"""Pure helpers for the ARI controller: outcome mapping, endpoint and argument formatting, validation.

No I/O here, so every rule can be unit-tested on its own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from urllib.parse import quote

from bridge.session.control import ControlError, DialOutcome

DTMF_PATTERN = re.compile(r"^[0-9A-D*#]{1,64}$")
_NUMBER_PATTERN = re.compile(r"^\+?[0-9A-Za-z*#]{1,64}$")
_EXTENSION_PATTERN = re.compile(r"^[0-9A-Za-z*#._-]{1,80}$")

# Q.850 causes (include/asterisk/causes.h) that say what happened on their own.
_CAUSE_OUTCOMES: dict[int, DialOutcome] = {
    17: DialOutcome.BUSY,
    18: DialOutcome.NO_ANSWER,
    19: DialOutcome.NO_ANSWER,
    21: DialOutcome.REJECTED,
    34: DialOutcome.CONGESTION,
    42: DialOutcome.CONGESTION,  # switching equipment congestion
}
# Final `Dial` dialstatus values (main/dial.c); RINGING/PROGRESS/ANSWER are not final failures.
_DIALSTATUS_OUTCOMES: dict[str, DialOutcome] = {
    "BUSY": DialOutcome.BUSY,
    "NOANSWER": DialOutcome.NO_ANSWER,
    "CONGESTION": DialOutcome.CONGESTION,
    "CHANUNAVAIL": DialOutcome.FAILED,
    "CANCEL": DialOutcome.FAILED,
}
# Causes that carry no meaning of their own (0 = none set, 16/31 = normal clearing).
_VAGUE_CAUSES = frozenset({0, 16, 31})


def dial_outcome(dialstatus: str, cause: int | None, *, ringing: bool) -> DialOutcome:
    """The outcome of an ARI originate that ended before StasisStart (i.e. before answer).

    A specific Q.850 cause wins over `dialstatus`: main/dial.c reports any hangup while ringing as
    NOANSWER unless the cause is busy/congestion/unavailable, so a 21 (rejected) arrives as NOANSWER.
    A dial timeout publishes no Dial event and sets no cause, hence "rang, then a vague cause" = no answer.
    """
    if cause is not None and cause in _CAUSE_OUTCOMES:
        return _CAUSE_OUTCOMES[cause]
    status = dialstatus.upper()
    if status in _DIALSTATUS_OUTCOMES:
        return _DIALSTATUS_OUTCOMES[status]
    if ringing and (cause is None or cause in _VAGUE_CAUSES):
        return DialOutcome.NO_ANSWER
    return DialOutcome.FAILED


def describe_end(dialstatus: str, cause: int | None, cause_txt: str) -> str:
    """Asterisk's own words about a failed dial, for the call record."""
    parts = []
    if dialstatus:
        parts.append(f"dialstatus={dialstatus}")
    if cause is not None:
        parts.append(f"cause={cause}" + (f" ({cause_txt})" if cause_txt else ""))
    return ", ".join(parts) or "channel destroyed"


def digits_of(number: str) -> str:
    """E.164 `+3498...` → `3498...`; extensions pass unchanged. Refuses anything that could break a
    dial string (`/`, `@`, `&`, spaces) before it reaches Asterisk."""
    if not _NUMBER_PATTERN.fullmatch(number):
        raise ControlError(f"{number!r} is not a phone number or extension", "invalid_number")
    return number.removeprefix("+")


def format_endpoint(template: str, to_number: str) -> str:
    """`PJSIP/{to}@trunk` with `{to}` = the number's digits without '+'."""
    return template.format(to=digits_of(to_number))


def caller_id(from_number: str) -> str:
    """ARI `callerId` in the `"Name" <num>` form, with no name."""
    digits_of(from_number)  # validates
    return f"<{from_number}>"


def validate_dtmf(digits: str) -> str:
    if not DTMF_PATTERN.fullmatch(digits):
        raise ControlError(f"{digits!r} is not a DTMF string (0-9, A-D, *, #; up to 64)", "invalid_digits")
    return digits


def transfer_extension(target: str) -> str:
    """The extension for the transfer context: E.164 keeps its '+' (the sample dialplan sends only `_+X.`
    to the trunk and everything else to local extensions)."""
    if not _EXTENSION_PATTERN.fullmatch(target.removeprefix("+")):
        raise ControlError(f"{target!r} is not a valid transfer target", "invalid_target")
    return target


def media_transport_data(call_id: str, from_number: str, to_number: str, amd: str = "") -> str:
    """chan_websocket dial options for externalMedia: JSON control, plus the `v()` query parameters the
    media socket reads (callId, aNumberE164, bNumberE164, and `amd` = AMDSTATUS when the call went through
    AMD()). Asterisk does not encode `v()` values, so each is percent-encoded here (commas and parentheses
    included)."""
    params = {
        "callId": call_id,
        "aNumberE164": from_number.removeprefix("+"),
        "bNumberE164": to_number.removeprefix("+"),
    }
    if amd:
        params["amd"] = amd
    joined = ",".join(f"{key}={quote(value, safe='-._~')}" for key, value in params.items())
    return f"f(json)v({joined})"


def caller_id_variables(number: str, name: str) -> dict[str, str]:
    """externalMedia `variables` that give the media channel a caller id. A two-party bridge copies each
    side's CALLERID into the other's CONNECTEDLINE, so a media channel without one blanks the caller's
    connected line (and, across a Local pair or a trunk, the far end's identity); giving it the Stasis
    channel's own keeps everything as it was (captures: ari_inbound_stasis B, ari_callerid_propagation F)."""
    return {"CALLERID(num)": number, "CALLERID(name)": name}


def party(value: object) -> tuple[str, str]:
    """(number, name) of an ARI CallerID object (`{"name": .., "number": ..}`); empty when absent."""
    if not isinstance(value, dict):
        return "", ""
    return str(value.get("number") or ""), str(value.get("name") or "")


def inbound_called(args: object) -> str | None:
    """The called number of a dialplan `Stasis(<app>,inbound,${EXTEN})` entry (StasisStart `args`);
    None when the StasisStart is not an inbound call."""
    if not isinstance(args, list) or not args or args[0] != "inbound":
        return None
    return str(args[1]) if len(args) > 1 else ""


def plus_digits(number: str) -> str:
    """A number from the dialplan as the inbound contexts send it to the webhook: `+` and its digits, ""
    for a caller with none (withheld, `anonymous`): the same call is admitted on either path."""
    digits = "".join(ch for ch in number if ch in "0123456789")
    return "+" + digits if digits else ""


AMD_STATUSES = frozenset({"HUMAN", "MACHINE", "NOTSURE", "HANGUP"})


def amd_result(args: object) -> tuple[str, str]:
    """(AMDSTATUS, AMDCAUSE) from the StasisStart of `Stasis(<app>,amd,${AMDSTATUS},${AMDCAUSE})`.
    Anything else that brings the channel back (a changed dialplan, an empty status) reads NOTSURE: the
    call goes on as a conversation rather than being dropped on a guess."""
    values = [str(a) for a in args] if isinstance(args, list) else []
    if values[:1] != ["amd"]:
        return "NOTSURE", "not an AMD result: " + ",".join(values)[:80]
    status = values[1].upper() if len(values) > 1 else ""
    cause = values[2] if len(values) > 2 else ""
    return (status, cause) if status in AMD_STATUSES else ("NOTSURE", cause or f"status {status!r}")


def audiosocket_channel(names: Iterable[str], call_uuid: str) -> str | None:
    """The AudioSocket channel of a call whose id is its UUID: Asterisk names it
    `AudioSocket/<host:port>-<uuid>` (captures: audiosocket_dtmf). None when the id is no UUID or no
    channel carries it."""
    try:
        wanted = str(uuid.UUID(call_uuid))
    except ValueError:
        return None
    for name in names:
        if name.startswith("AudioSocket/") and name.lower().endswith("-" + wanted):
            return name
    return None


def audiosocket_uuid(call_id: str) -> str:
    """The `data` of an AudioSocket externalMedia leg: the call id itself, which must be a UUID (Asterisk
    refuses anything else, and the leg's first message names the call by it)."""
    try:
        uuid.UUID(call_id)
    except ValueError as exc:
        raise ControlError(
            f"call id {call_id!r} is no UUID: AudioSocket media legs are named by one", "originate_failed"
        ) from exc
    return call_id
