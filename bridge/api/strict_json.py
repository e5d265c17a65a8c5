"""Request bodies as JSON, refusing what `json.loads` lets through: deep nesting (a RecursionError
is a 500), duplicate keys (the last one silently wins, so a key can be smuggled past a check),
non-finite numbers (`NaN`, `Infinity`, `1e999`), huge integers, lone surrogates and invalid UTF-8.

Pure: bytes in, a value or `JsonRefused` out.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

MAX_DEPTH: Final = 32
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)  # the unrolled form: no backtracking blow-up
_BRACKET = re.compile(r"[\[\]{}]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JsonRefused(ValueError):
    """The body is not JSON we accept; the message says why, in words fit for the client."""


def _depth(text: str) -> int:
    deepest = level = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        level += 1 if match.group() in "[{" else -1
        deepest = max(deepest, level)
    return deepest


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise JsonRefused(f"duplicate key {key[:40]!r}")
        result[key] = value
    return result


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"number {text[:20]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a JSON number")


def _check_text(value: Any) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise JsonRefused("a string holds a lone surrogate (not valid Unicode)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def loads(raw: bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse one JSON document; raise JsonRefused for anything we do not accept."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonRefused("the body is not UTF-8") from exc
    if _depth(text) > max_depth:
        raise JsonRefused(f"nested deeper than {max_depth} levels")
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_float=_number, parse_constant=_constant)
    except JsonRefused:
        raise
    except RecursionError as exc:  # unreachable after the depth check; kept as a guard
        raise JsonRefused(f"nested deeper than {max_depth} levels") from exc
    except json.JSONDecodeError as exc:
        raise JsonRefused(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except ValueError as exc:  # e.g. an integer over Python's 4300-digit limit
        raise JsonRefused("a number is too large") from exc
    _check_text(value)
    return value
