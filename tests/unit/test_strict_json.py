"""api/strict_json.py: what json.loads lets through is refused; everything else parses as json.loads does."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.api.strict_json import MAX_DEPTH, JsonRefused, loads

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=8), children, max_size=4
        )
    ),
    max_leaves=20,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


@given(JSON_VALUES)
def test_valid_json_parses_as_json_loads_does(value: Any) -> None:
    raw = json.dumps(value, ensure_ascii=False).encode()
    assert loads(raw) == json.loads(raw)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_are_refused_and_nothing_else(raw: bytes) -> None:
    try:
        loads(raw)
    except JsonRefused as exc:
        reason = str(exc)
        assert reason


@given(st.text(alphabet='[]{}",:\\0123456789abtrue ', max_size=200))
def test_bracket_soup_never_escapes_as_another_error(text: str) -> None:
    with contextlib.suppress(JsonRefused):
        loads(text.encode())


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key"),
        (b'{"x": {"b": 1, "b": 1}}', "duplicate key"),
        (b"[NaN]", "NaN"),
        (b"[Infinity]", "Infinity"),
        (b"[-Infinity]", "Infinity"),
        (b"[1e999]", "out of range"),
        (b"[-1e999]", "out of range"),
        (b"[" + b"1" * 5000 + b"]", "too large"),
        (b'["\\ud800"]', "surrogate"),
        (b'{"\\udfff": 1}', "surrogate"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{", "malformed JSON"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
        (b'{"a":' * 100_000, "nested deeper"),  # would be a RecursionError in json.loads
    ],
)
def test_refusals_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonRefused, match=reason):
        loads(raw)


def test_depth_counts_brackets_outside_strings_only() -> None:
    inside = "[" * 100 + "{" * 100
    assert loads(json.dumps({"text": inside}).encode()) == {"text": inside}
    exact = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert depth(loads(exact.encode())) == MAX_DEPTH
    assert loads(b'"a \\" [[[ \\\\"') == 'a " [[[ \\'


def test_large_finite_numbers_and_pairs_survive() -> None:
    value = loads(b'{"big": 1e308, "small": -1e-308, "int": 123456789012345678901234567890}')
    assert math.isfinite(value["big"])
    assert value["int"] == 123456789012345678901234567890
