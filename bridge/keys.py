"""API keys: hashing for config, constant-time matching, and phone-number normalisation.

Pure. Keys are kept only as SHA-256 digests; a presented key is hashed once and
compared with `hmac.compare_digest` against every candidate without stopping at
the first match, so timing says nothing about which key (or company) matched.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

HASH_PREFIX: Final = "sha256:"
_HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")

Owner = TypeVar("Owner")


def new_api_key(kind: str) -> str:
    """A fresh key: a kind prefix (seen in lists and logs' redaction) and 192 random bits.

    The prefix also keeps the key from starting with '-', which command lines take for an option.
    """
    return f"{kind}_{secrets.token_urlsafe(24)}"


def hash_key(key: str) -> str:
    """The config form of a key: `sha256:<hex>`."""
    return HASH_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def is_hashed(configured: str) -> bool:
    return configured.startswith(HASH_PREFIX)


def digest_of(configured: str) -> bytes:
    """The digest a configured key stands for: `sha256:<hex>` as given, a plain key hashed.

    Raises ValueError for a malformed `sha256:` value (settings validation reports it).
    """
    if is_hashed(configured):
        hex_part = configured[len(HASH_PREFIX) :].lower()
        if not _HEX_DIGEST.match(hex_part):
            raise ValueError("a sha256: key must be followed by 64 hex digits")
        return bytes.fromhex(hex_part)
    return hashlib.sha256(configured.encode()).digest()


@dataclass(frozen=True, slots=True)
class KeyRing(Generic[Owner]):
    """Digests and who owns each; `match` is constant-time over the whole ring."""

    entries: tuple[tuple[bytes, Owner], ...]

    @classmethod
    def build(cls, entries: Iterable[tuple[bytes, Owner]]) -> KeyRing[Owner]:
        return cls(tuple(entries))

    def match(self, presented: str) -> Owner | None:
        # surrogatepass: a header that was not valid UTF-8 still hashes (and matches nothing).
        presented_digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: Owner | None = None
        for digest, owner in self.entries:
            # No early exit: every entry is compared whatever matched before.
            if hmac.compare_digest(digest, presented_digest) and found is None:
                found = owner
        return found

    def __len__(self) -> int:
        return len(self.entries)


def phone_digits(number: str) -> str:
    """One comparable form for `+34987654321`, `34987654321` and `+34 987 654 321`."""
    return "".join(ch for ch in number if ch.isdigit())


E164_PATTERN: Final = r"^\+[1-9][0-9]{6,14}$"
E164 = re.compile(E164_PATTERN)
# What a PBX may send as a number: digits with an optional '+' and the usual separators, or a word
# saying the caller withheld it (Asterisk: empty, "anonymous", ...). One pattern, also the API's schema.
_WITHHELD_WORDS = ("anonymous", "unknown", "restricted", "private", "unavailable")
_DIGITS = r"\+?[0-9][0-9 ().\-]{0,23}"
DIALLED_PATTERN: Final = rf"^ *{_DIGITS} *$"  # a number that must be there (the called one)
PHONE_PATTERN: Final = (
    rf"^ *({_DIGITS}|\+?|" + "|".join(f"{w}|{w.capitalize()}|{w.upper()}" for w in _WITHHELD_WORDS) + r") *$"
)
_PHONE = re.compile(PHONE_PATTERN)


def is_e164(number: str) -> bool:
    return bool(E164.match(number))


def canonical_number(number: str) -> str:
    """The one stored form of a number: `+` and its digits (`34987654321`, `+34 987 654 321` ->
    `+34987654321`); "" for a withheld caller. Raises ValueError for anything else (letters, control
    characters), so a PBX's garbage never reaches a record."""
    if not _PHONE.match(number):
        raise ValueError(f"{number.strip()[:40]!r} is not a phone number")
    digits = phone_digits(number)
    return "+" + digits if digits else ""
