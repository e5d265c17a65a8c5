"""Storage URLs: which database a `[storage] url` names, and how to quote one without secrets."""

from __future__ import annotations

import re
from typing import Final

MEMORY: Final = ":memory:"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: safe to quote in errors and logs."""
    match = _SCHEME.match(url)
    if match is None:
        return "<unparseable URL>"
    rest = url[match.end() :]
    # Credentials first, up to the LAST '@': a password may itself hold '@', '/', '?' or '#'.
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    return match.group(0) + rest


def store_scheme(url: str) -> str:
    """The engine a `[storage] url` names: "sqlite", or "postgresql" (also spelled "postgres")."""
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(
            f"storage URL {redact_url(url)!r} is not a URL; expected sqlite:///path/to/file.db "
            "or postgresql://user@host/db"
        )
    scheme = match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    raise ValueError(
        f"unsupported storage URL scheme {scheme!r} in {redact_url(url)!r}; "
        "use sqlite:///path/to/file.db or postgresql://user@host/db"
    )


def sqlite_path(url: str) -> str:
    """The database path in a `sqlite:` URL (SQLAlchemy's convention), or ":memory:".

    `sqlite:///var/bridge.db` is relative to the working directory, `sqlite:////var/bridge.db`
    absolute; `sqlite://`, `sqlite://:memory:` and `sqlite:///:memory:` are in-memory.
    """
    match = _SCHEME.match(url)
    if match is None:
        raise ValueError(f"storage URL {redact_url(url)!r} is not a URL; expected sqlite:///path/to/file.db")
    scheme = match.group(1).lower()
    if scheme != "sqlite":
        raise ValueError(
            f"unsupported storage URL scheme {scheme!r} in {redact_url(url)!r}; "
            "only sqlite:///path/to/file.db is supported"
        )
    rest = url[match.end() :]
    if "?" in rest or "#" in rest:
        raise ValueError(f"storage URL {redact_url(url)!r}: query parameters are not supported")
    if rest in ("", MEMORY, "/" + MEMORY):
        return MEMORY
    if not rest.startswith("/"):
        raise ValueError(
            f"storage URL {redact_url(url)!r}: sqlite takes no host; use sqlite:///relative.db "
            "or sqlite:////absolute/path.db"
        )
    path = rest[1:]
    if not path or path.endswith("/"):
        raise ValueError(f"storage URL {redact_url(url)!r} names no database file")
    return path
