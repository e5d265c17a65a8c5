"""The Asterisk sample configuration (asterisk-sample-conf/) read the way Asterisk's config loader
(main/config.c) reads it: `[section]` headers, `key = value` or `key => value`, `;` comments unless
escaped as `\\;`, blanks around keys and values trimmed. Enough for the samples; anything else raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "asterisk-sample-conf"


@dataclass(frozen=True)
class ConfLine:
    section: str
    key: str
    value: str
    number: int  # 1-based line number, for messages


@dataclass(frozen=True)
class AmiClasses:
    read: frozenset[str]
    write: frozenset[str]


def strip_comment(line: str) -> str:
    """The line without its comment; `\\;` is a literal semicolon (config.c removes the backslash)."""
    kept: list[str] = []
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\" and line[index + 1 : index + 2] == ";":
            kept.append(";")
            index += 2
            continue
        if char == ";":
            break
        kept.append(char)
        index += 1
    return "".join(kept)


def read_conf(name: str) -> list[ConfLine]:
    section = ""
    lines: list[ConfLine] = []
    for number, raw in enumerate((SAMPLES / name).read_text().splitlines(), start=1):
        text = strip_comment(raw).strip()
        if not text:
            continue
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError(f"{name}:{number}: section options are not modelled: {text!r}")
            section = text[1:-1].strip()
            continue
        key, sep, value = text.partition("=")
        if not sep:
            raise ValueError(f"{name}:{number}: not `key = value`: {text!r}")
        value = value.removeprefix(">")  # `key => value`
        lines.append(ConfLine(section, key.strip(), value.strip(), number))
    return lines


def section(name: str, wanted: str) -> dict[str, str]:
    """A section's keys (the last value wins, as for single-valued options)."""
    return {line.key: line.value for line in read_conf(name) if line.section == wanted}


def manager_classes(user: str = "bridge") -> AmiClasses:
    """The `read` and `write` classes of a manager.conf user."""
    options = section("manager.conf", user)

    def classes(key: str) -> frozenset[str]:
        return frozenset(name.strip().lower() for name in options.get(key, "").split(",") if name.strip())

    return AmiClasses(read=classes("read"), write=classes("write"))
