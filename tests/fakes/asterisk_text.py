"""String rules of Asterisk 22's dialplan, as pure functions: argument splitting and character escapes
(main/app.c `__ast_app_separate_args`, `ast_get_encoded_char`), `${...}`/`$[...]` extents, variable
names with `:offset:length` and substrings (main/pbx_variables.c), conditions (pbx_checkcondition) and
the `$[a op b]` comparisons the samples use. Values are C strings: the UTF-8 bytes of a channel value,
cut at a NUL, held one byte per character (latin-1).

Whatever the samples do not use raises `Unmodelled`.
"""

from __future__ import annotations

import re

INT_MAX = 2**31 - 1
_TOKEN = re.compile(r"[A-Za-z0-9_.]+")  # an unquoted operand of `$[...]` the model compares
_INT = re.compile(r"-?[0-9]+")


class Unmodelled(Exception):
    """The dialplan does something this model does not reproduce faithfully."""


def c_string(text: str) -> str:
    """A channel value as Asterisk holds it: UTF-8 bytes up to the first NUL, one byte per char."""
    return text.encode("utf-8", "surrogatepass").split(b"\0")[0].decode("latin-1")


# --- arguments, escapes, variable names ------------------------------------------------------------


def separate_args(text: str, count: int, *, remove_chars: bool) -> list[str]:
    """`__ast_app_separate_args` with room for `count` arguments: the last one is the raw remainder."""
    args: list[str] = []
    index = 0
    paren = quote = bracket = 0
    ended_on_delimiter = False
    while index < len(text) and len(args) < count - 1:
        current: list[str] = []
        ended_on_delimiter = False
        while index < len(text):
            char = text[index]
            if char == "(":
                paren += 1
            elif char == ")":
                paren = max(0, paren - 1)
            elif char == "[":
                bracket += 1
            elif char == "]":
                bracket = max(0, bracket - 1)
            elif char == '"':
                quote = 1 - quote
                if remove_chars:
                    index += 1
                    continue
            elif char == "\\":
                if index + 1 >= len(text):
                    raise Unmodelled("a trailing backslash in arguments")
                current.append(text[index + 1] if remove_chars else text[index : index + 2])
                index += 2
                continue
            elif char == "," and not (paren or quote or bracket):
                index += 1
                ended_on_delimiter = True
                break
            current.append(char)
            index += 1
        args.append("".join(current))
    if index < len(text) or ended_on_delimiter:
        args.append(text[index:])
    return args


def encoded_char(text: str, index: int) -> tuple[int, int]:
    """`ast_get_encoded_char`: (byte value, characters consumed); \\n \\r \\t \\xHH \\0ooo \\<c>."""
    if index >= len(text):
        raise Unmodelled("an encoded character past the end")
    if text[index] != "\\":
        return ord(text[index]), 1
    follower = text[index + 1 : index + 2]
    simple = {"n": 10, "r": 13, "t": 9}
    if follower in simple:
        return simple[follower], 2
    if follower == "x":
        digits = re.match(r"[0-9A-Fa-f]{1,2}", text[index + 2 :])
        if digits is None:
            raise Unmodelled("an illegal hexadecimal escape")
        return int(digits.group(), 16), 2 + len(digits.group())
    if follower == "0":
        digits = re.match(r"[0-7]*", text[index + 2 :])
        octal = digits.group() if digits else ""
        return int(octal or "0", 8) & 0xFF, 2 + len(octal)
    if not follower:
        raise Unmodelled("a trailing backslash")
    return ord(follower), 2


def decoded(text: str) -> str:
    """`ast_get_encoded_str`: every escape of `text` decoded."""
    out: list[str] = []
    index = 0
    while index < len(text):
        value, used = encoded_char(text, index)
        out.append(chr(value))
        index += used
    return "".join(out)


def filter_allowed(spec: str) -> frozenset[int]:
    """The byte values FILTER keeps for its allowed-chars argument, ranges expanded."""
    allowed: set[int] = set()
    index = 0
    while index < len(spec):
        first, used = encoded_char(spec, index)
        index += used
        if index < len(spec) and spec[index] == "-":
            last, used = encoded_char(spec, index + 1)
            index += used + 1
            if last < first:
                raise Unmodelled("a wrapping FILTER range (Asterisk warns)")
            allowed.update(range(first, last + 1))
        else:
            allowed.add(first)
    if any(value >= 0x80 for value in allowed):
        raise Unmodelled("FILTER bytes above 0x7f (signed char ranges)")
    return frozenset(allowed)


def substring(value: str, offset: int, length: int) -> str:
    """pbx_variables.c `substring` (negative offset and length count from the end)."""
    size = len(value)
    if offset == 0 and length >= size:
        return value
    if offset < 0:
        offset = max(0, size + offset)
    if offset >= size:
        return ""
    rest = value[offset:]
    if 0 <= length < size - offset:
        return rest[:length]
    if length < 0:
        return rest[: size + length - offset] if size > offset - length else ""
    return rest


def scan_int(text: str) -> tuple[int | None, str]:
    match = re.match(r"\s*([-+]?[0-9]+)", text)
    if match is None:
        return None, text
    return int(match.group(1)), text[match.end() :]


def parse_variable_name(text: str) -> tuple[str, int, int]:
    """The name (or function call) and `:offset:length`, split at the first ':' outside parentheses."""
    parens = 0
    for index, char in enumerate(text):
        if char == "(":
            parens += 1
        elif char == ")":
            parens -= 1
        elif char == ":" and parens == 0:
            # sscanf("%30d:%30d"): a length only after an offset and a ':'.
            offset, rest = scan_int(text[index + 1 :])
            length = scan_int(rest[1:])[0] if offset is not None and rest.startswith(":") else None
            return text[:index], offset or 0, INT_MAX if length is None else length
    return text, 0, INT_MAX


def closing(text: str, index: int, is_expression: bool) -> tuple[int, bool]:
    """Where `${...}` or `$[...]` ends (the index after its closer), counted as pbx_variables.c does."""
    depth, needs_sub = 1, False
    opener, closer = ("[", "]") if is_expression else ("{", "}")
    while depth and index < len(text):
        pair = text[index : index + 2]
        if pair in {"${", "$["}:
            needs_sub = True
            if is_expression:
                depth += pair == "$["
                index += 1
        elif text[index] == opener:
            depth += 1
        elif text[index] == closer:
            depth -= 1
        index += 1
    if depth:
        raise Unmodelled(f"missing {closer!r} in {text!r}")
    return index, needs_sub


def check_condition(condition: str) -> bool:
    """pbx_checkcondition: empty is false, a leading integer is its truth, any other text is true."""
    if not condition:
        return False
    number, _ = scan_int(condition)
    return bool(number) if number is not None else True


def evaluate_expression(text: str) -> str:
    """`$[a op b]` for op in =, ==, !=: integers compare as numbers, anything else as strings."""
    tokens = text.split()
    if len(tokens) != 3 or tokens[1] not in {"=", "==", "!="}:
        raise Unmodelled(f"expression $[{text}]")
    left, operator, right = tokens
    if not (_TOKEN.fullmatch(left) and _TOKEN.fullmatch(right)):
        raise Unmodelled(f"operands of $[{text}]")
    equal = int(left) == int(right) if _INT.fullmatch(left) and _INT.fullmatch(right) else left == right
    return "1" if equal == (operator != "!=") else "0"


def expressions_in(text: str) -> list[str]:
    """The raw (unsubstituted) bodies of every `$[...]` in a line, nested ones included."""
    found: list[str] = []
    start = text.find("$[")
    while start >= 0:
        end, _ = closing(text, start + 2, True)
        found.append(text[start + 2 : end - 1])
        start = text.find("$[", start + 2)
    return found
