"""Field types the API's request models share: text without control characters, phone numbers, instants.

Each refuses what a client must not send with a message naming the problem (pydantic adds the field).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Final

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from bridge.keys import DIALLED_PATTERN, E164_PATTERN, PHONE_PATTERN, canonical_number

# C0 and C1 control characters and DEL; tabs and newlines included (no field of ours is multi-line).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone surrogates (JSON "\ud800") cannot be stored or encoded as UTF-8.
_SURROGATE = re.compile(r"[\ud800-\udfff]")

# Instants: epoch seconds (at most 10 digits) or RFC 3339 with a zone, from 1970 on. A wider form
# would let a mistake through silently (a phone number read as epoch seconds is the year 2462).
EPOCH_PATTERN: Final = r"^[0-9]{1,10}(\.[0-9]{1,9})?$"
ISO_YEAR_PATTERN: Final = r"^(19[7-9][0-9]|2[01][0-9][0-9]|22[0-7][0-9])-"  # 1970 to 2279
_EPOCH = re.compile(EPOCH_PATTERN)
_ISO_YEAR = re.compile(ISO_YEAR_PATTERN)


def no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    if _SURROGATE.search(value):
        raise ValueError("must be valid Unicode text")
    return value


def phone_number(value: str) -> str:
    """A number as a PBX sends it (`+34...`, `34...`, withheld); refused if it is not one."""
    canonical_number(value)  # raises ValueError with the reason
    return value


def parse_instant(raw: str) -> float:
    """Epoch seconds (`1767225600`, `1767225600.5`) or RFC 3339 with a zone (`2026-01-01T00:00:00Z`)."""
    if _EPOCH.match(raw):
        return float(raw)
    if not _ISO_YEAR.match(raw):
        raise ValueError(
            "not an ISO-8601 date (1970 to 2279) with a time zone, nor epoch seconds (10 digits)"
        )
    try:
        moment = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError("not a valid ISO-8601 date and time") from exc
    if moment.tzinfo is None:
        raise ValueError("give a time zone (e.g. 2026-01-01T00:00:00Z)")
    return moment.timestamp()


def _instant(value: object) -> object:
    if isinstance(value, str):
        return parse_instant(value)
    # As documented, a string: a JSON number or boolean (true would read as 1970) is refused.
    raise ValueError("must be a string: epoch seconds or ISO-8601 with a time zone")


# Patterns the OpenAPI document shows (ECMA-262 and Rust-regex compatible); the validators say why.
NO_CONTROL_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"

NoControlChars = Annotated[str, Field(pattern=NO_CONTROL_PATTERN), AfterValidator(no_control_chars)]
PhoneNumber = Annotated[str, Field(max_length=64, pattern=PHONE_PATTERN), AfterValidator(phone_number)]
CalledNumber = Annotated[str, Field(max_length=64, pattern=DIALLED_PATTERN)]
E164 = Annotated[str, Field(max_length=16, pattern=E164_PATTERN, examples=["+34987654321"])]
Instant = Annotated[
    float,
    BeforeValidator(_instant),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": EPOCH_PATTERN},
                {"type": "string", "format": "date-time", "pattern": ISO_YEAR_PATTERN},
            ],
            "description": "Epoch seconds, or ISO-8601 with a time zone (from 1970)",
            "examples": ["2026-01-01T00:00:00Z", "1767225600"],
        }
    ),
]


# Ids of a company's agents and tasks (the bridge makes UUIDs; config agents are named by the operator).
RESOURCE_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
ResourceId = Annotated[str, Field(min_length=1, max_length=128, pattern=RESOURCE_ID_PATTERN)]
