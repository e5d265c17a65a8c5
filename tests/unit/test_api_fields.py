"""api/fields.py and keys.canonical_number: instants, phone numbers, text without control characters."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.api.fields import EPOCH_PATTERN, ISO_YEAR_PATTERN, no_control_chars, parse_instant
from bridge.keys import DIALLED_PATTERN, PHONE_PATTERN, canonical_number

FROM_1970 = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2279, 12, 30))
ZONES = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])


@given(FROM_1970, ZONES)
def test_iso_instants_with_a_zone_round_trip(moment: datetime, zone: timezone) -> None:
    aware = moment.replace(tzinfo=zone)
    text = aware.isoformat()
    assert parse_instant(text) == aware.timestamp()
    assert parse_instant(text.replace("+00:00", "Z")) == aware.timestamp()


@given(st.integers(min_value=0, max_value=9_999_999_999), st.integers(min_value=0, max_value=999_999))
def test_epoch_seconds_up_to_ten_digits(seconds: int, micros: int) -> None:
    assert parse_instant(str(seconds)) == seconds
    assert parse_instant(f"{seconds}.{micros:06d}") == pytest.approx(seconds + micros / 1e6)


@pytest.mark.parametrize(
    "raw",
    [
        "34987654321",  # a phone number: eleven digits, once read as the year 3078
        "1767225600000",  # milliseconds
        "-1",
        "1e9",
        "nan",
        "inf",
        "Infinity",
        "",
        " 1767225600",
        "2026-01-01T00:00:00",  # no zone
        "2026-01-01",
        "1969-12-31T23:59:59Z",
        "2280-01-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "yesterday",
    ],
)
def test_other_instants_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(raw)


@given(st.text(max_size=40))
def test_parse_instant_raises_only_value_error(raw: str) -> None:
    try:
        value = parse_instant(raw)
    except ValueError:
        return
    # Whatever it accepts is what the documented schema accepts.
    assert re.match(EPOCH_PATTERN, raw) or re.match(ISO_YEAR_PATTERN, raw)
    assert value >= -86_400  # 1970, give or take a zone


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("+34987654321", "+34987654321"),
        ("34987654321", "+34987654321"),
        ("+34 987 654 321", "+34987654321"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("200", "+200"),
        ("", ""),
        ("+", ""),
        ("anonymous", ""),
        ("Restricted", ""),
        ("UNKNOWN", ""),
    ],
)
def test_numbers_have_one_stored_form(raw: str, stored: str) -> None:
    assert canonical_number(raw) == stored


@pytest.mark.parametrize(
    "raw", ["abc", "+34\n987", "34987\x00", "+1" + "2" * 30, "1;DROP", "anonymous1", "++1"]
)
def test_garbage_is_not_a_number(raw: str) -> None:
    with pytest.raises(ValueError):
        canonical_number(raw)


@given(st.text(max_size=40))
def test_canonical_number_is_the_documented_pattern(raw: str) -> None:
    try:
        stored = canonical_number(raw)
    except ValueError:
        assert not re.match(PHONE_PATTERN, raw)
        return
    assert re.match(PHONE_PATTERN, raw)
    assert stored == "" or re.fullmatch(r"\+[0-9]{1,24}", stored)
    if re.match(DIALLED_PATTERN, raw):
        assert stored


@given(st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), max_size=40))
def test_text_without_control_characters_passes(text: str) -> None:
    if any(0x80 <= ord(ch) <= 0x9F for ch in text):
        return
    assert no_control_chars(text) == text


@pytest.mark.parametrize("text", ["a\nb", "\x00", "tab\there", "del\x7f", "c1\x85", "\ud800"])
def test_control_characters_and_surrogates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        no_control_chars(text)
