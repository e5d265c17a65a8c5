from __future__ import annotations

import hashlib
import hmac

import pytest

from bridge.keys import KeyRing, digest_of, hash_key, is_e164, phone_digits


def test_hash_key_is_sha256_hex_with_prefix() -> None:
    assert hash_key("abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()


def test_digest_of_accepts_hashed_and_plain_forms_alike() -> None:
    assert digest_of(hash_key("secret")) == digest_of("secret") == hashlib.sha256(b"secret").digest()
    assert digest_of(hash_key("secret").upper().replace("SHA256:", "sha256:")) == digest_of("secret")


@pytest.mark.parametrize("bad", ["sha256:", "sha256:abc", "sha256:" + "g" * 64, "sha256:" + "a" * 65])
def test_malformed_hash_is_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        digest_of(bad)


def test_keyring_matches_owner_and_refuses_others() -> None:
    ring = KeyRing.build([(digest_of("k1"), "a"), (digest_of(hash_key("k2")), "b")])
    assert ring.match("k1") == "a"
    assert ring.match("k2") == "b"
    assert ring.match("k3") is None
    assert ring.match("") is None


def test_keyring_compares_every_entry_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    ring = KeyRing.build([(digest_of(f"k{i}"), i) for i in range(5)])
    assert ring.match("k0") == 0
    # The match was the first entry, yet all five were compared: no early exit.
    assert len(calls) == 5
    # What is compared are digests, never the presented key itself.
    assert all(len(a) == len(b) == 32 for a, b in calls)


def test_phone_forms_normalise_to_one() -> None:
    assert phone_digits("+34987654321") == phone_digits("34987654321") == phone_digits("+34 987 654 321")


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("+34987654321", True),
        ("34987654321", False),
        ("+0123456789", False),
        ("+1", False),
        ("+3498765432a", False),
    ],
)
def test_e164(number: str, valid: bool) -> None:
    assert is_e164(number) is valid
