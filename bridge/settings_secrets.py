"""Every secret a configuration holds, for the log redactor (`bridge.logging.configure_logging`).

Found by walking the settings for `SecretStr` fields, so a secret added to the settings later is
covered without touching this: provider API keys, the AMI secret, the ARI password, tool header
values, and the connector/company API keys. A key configured as `sha256:<hex>` is not known in
clear; its digest is, and the redactor scrubs any token that hashes to it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from pydantic import BaseModel, SecretStr

from bridge.keys import digest_of, is_hashed
from bridge.settings import Settings


def _secrets_in(value: object) -> Iterator[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _secrets_in(getattr(value, name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _secrets_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secrets_in(item)


def _digest(secret: str) -> bytes | None:
    """The digest a `sha256:<hex>` value stands for; None for any other value."""
    if not is_hashed(secret):
        return None
    try:
        return digest_of(secret)
    except ValueError:  # not a well-formed digest (say, a tool header value): a plain secret
        return None


def secret_values(settings: Settings) -> list[str]:
    """The secrets known in clear (empty ones left out)."""
    return [secret for secret in _secrets_in(settings) if secret and _digest(secret) is None]


def secret_digests(settings: Settings) -> list[bytes]:
    """SHA-256 digests of the API keys configured as `sha256:` values."""
    return [digest for secret in _secrets_in(settings) if (digest := _digest(secret)) is not None]
