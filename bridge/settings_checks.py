"""Checks that span settings entries (part of `bridge.settings`): shared ids, keys and phones, used
secrets that are missing, and warnings.

`cross_check` works on a mapping (the raw file, or the validated values dumped), so its problems can be
reported together with field-level ones; the others need validated `Settings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from bridge.keys import digest_of, is_hashed, phone_digits
from bridge.settings_agents import MODEL_PROVIDERS, UnresolvedSecret, resolve_env_reference

# A public ElevenLabs agent is joined by its id alone; a private one needs the key (for a signed URL).
KEYLESS_PROVIDERS = frozenset({"elevenlabs"})

if TYPE_CHECKING:
    from bridge.settings import Settings


def _entries(container: object, key: str) -> list[Any]:
    """`container[key]` when both are the expected shapes, else [] (field validation reports shapes)."""
    value = container.get(key, []) if isinstance(container, Mapping) else []
    return value if isinstance(value, list) else []


def _raw_key_digest(value: object) -> bytes | None:
    try:
        resolved = resolve_env_reference(value)
    except ValueError:
        return None
    if isinstance(resolved, SecretStr):  # an UnresolvedSecret's value is "", so it matches nothing
        resolved = resolved.get_secret_value()
    try:
        return digest_of(resolved) if isinstance(resolved, str) and resolved else None
    except ValueError:
        return None


def _duplicate_ids(companies: list[Any]) -> list[str]:
    problems = []
    seen: dict[str, int] = {}
    for index, company in enumerate(companies):
        company_id = company.get("id") if isinstance(company, Mapping) else None
        if not isinstance(company_id, str):
            continue
        if company_id in seen:
            first = seen[company_id]
            problems.append(
                f"companies[{index}].id: duplicate company id {company_id!r} (also companies[{first}])"
            )
        else:
            seen[company_id] = index
    return problems


def _shared_keys(raw: Mapping[str, Any], companies: list[Any]) -> list[str]:
    problems = []
    owner: dict[bytes, str] = {}
    for index, key in enumerate(_entries(raw.get("connector"), "api_keys")):
        digest = _raw_key_digest(key)
        if digest is not None:
            owner.setdefault(digest, f"connector.api_keys[{index}]")
    for index, company in enumerate(companies):
        for key_index, key in enumerate(_entries(company, "api_keys")):
            digest = _raw_key_digest(key)
            if digest is None:
                continue
            where = f"companies[{index}].api_keys[{key_index}]"
            if digest in owner:
                problems.append(f"{where}: the same API key is already used by {owner[digest]}")
            else:
                owner[digest] = where
    # An admin key that also opens a company or the connector would blur who is acting.
    for index, key in enumerate(_entries(raw.get("admin"), "api_keys")):
        digest = _raw_key_digest(key)
        if digest is not None and digest in owner:
            problems.append(f"admin.api_keys[{index}]: the same API key is already used by {owner[digest]}")
    return problems


def _shared_phones(companies: list[Any]) -> list[str]:
    """A phone on two companies would route inbound calls to the first and let the second dial out
    from the first's number; numbers are compared by their digits only."""
    problems = []
    owner: dict[str, tuple[int, str]] = {}  # digits -> (company index, how to name that company)
    for index, company in enumerate(companies):
        company_id = company.get("id") if isinstance(company, Mapping) else None
        name = (
            f"company {company_id!r} (companies[{index}])"
            if isinstance(company_id, str)
            else f"companies[{index}]"
        )
        for phone_index, phone in enumerate(_entries(company, "phones")):
            digits = phone_digits(phone) if isinstance(phone, str) else ""
            if not digits:
                continue
            first_index, first_name = owner.setdefault(digits, (index, name))
            if first_index != index:
                problems.append(
                    f"companies[{index}].phones[{phone_index}]: {phone} is already a phone of {first_name}"
                )
    return problems


def cross_check(raw: Mapping[str, Any]) -> list[str]:
    """Problems that span entries: duplicate company ids, a key used twice, a phone on two companies.

    Works on the raw mapping (tolerating wrong shapes, which field validation
    reports), so they are reported together with every field-level problem.
    """
    companies = _entries(raw, "companies")
    return _duplicate_ids(companies) + _shared_keys(raw, companies) + _shared_phones(companies)


@dataclass(frozen=True, slots=True)
class ProviderUse:
    """One place the settings name a provider."""

    key_path: str  # the key that names it, e.g. companies[0].agent.provider
    user: str  # who relies on it, e.g. companies[0] acme


def used_providers(settings: Settings) -> dict[str, list[ProviderUse]]:
    """Every provider the configuration uses, with each place that names it, in file order.

    The one definition of "used": a provider's secrets are required only when it is used here.
    """
    uses: dict[str, list[ProviderUse]] = {}
    for index, company in enumerate(settings.companies):
        user = f"companies[{index}] {company.id}"
        uses.setdefault(company.agent.provider, []).append(
            ProviderUse(f"companies[{index}].agent.provider", user)
        )
        for fallback_index, name in enumerate(company.agent.fallback_providers):
            uses.setdefault(name, []).append(
                ProviderUse(f"companies[{index}].agent.fallback_providers[{fallback_index}]", user)
            )
    return uses


def _unset(where: str, secret: SecretStr, because: str = "") -> list[str]:
    if not isinstance(secret, UnresolvedSecret):
        return []
    return [f"{where}: environment variable {secret.variable} is not set{because}"]


def missing_secrets(settings: Settings) -> list[str]:
    """Secrets that something uses but that are not there.

    An `env:NAME` that is not set is an error only where it is used (a used provider's key, the
    selected call control's credential, a company tool's headers); elsewhere it stays an empty secret.
    A used provider with an empty key is an error too (`echo` needs none).
    """
    problems = []
    for provider, uses in used_providers(settings).items():
        if provider not in MODEL_PROVIDERS:
            continue
        section = settings.providers.section(provider)
        key_path = f"providers.{provider}.api_key"
        key = section.api_key
        if isinstance(key, UnresolvedSecret):
            problems += _unset(key_path, key, f" (used by {', '.join(use.user for use in uses)})")
        elif not key.get_secret_value() and provider not in KEYLESS_PROVIDERS:
            problems += [f"{use.key_path}: {provider} needs {key_path}" for use in uses]
        if not section.model:
            problems += [f"{use.key_path}: {provider} needs providers.{provider}.model" for use in uses]
    asterisk = settings.asterisk
    because = f' (asterisk.control is "{asterisk.control}")'
    if asterisk.control == "ami":
        problems += _unset("asterisk.ami.secret", asterisk.ami.secret, because)
    else:
        problems += _unset("asterisk.ari.password", asterisk.ari.password, because)
    # The post-call report's text model is needed once any agent asks for an analysis.
    analysts = [
        f"companies[{index}] {company.id}"
        for index, company in enumerate(settings.companies)
        if company.agent.analysis_prompt.strip()
    ]
    if analysts:
        key = settings.analysis.api_key
        if isinstance(key, UnresolvedSecret):
            problems += _unset("analysis.api_key", key, f" (analysis_prompt of {', '.join(analysts)})")
        elif not key.get_secret_value():
            problems.append(f"analysis.api_key: required by the analysis_prompt of {', '.join(analysts)}")
    for index, company in enumerate(settings.companies):
        for tool_index, tool in enumerate(company.agent.tools):
            for header, value in tool.headers.items():
                problems += _unset(f"companies[{index}].agent.tools[{tool_index}].headers.{header}", value)
        # A webhook secret is used once the company's webhooks have a url to sign for.
        if company.webhooks.url:
            problems += _unset(
                f"companies[{index}].webhooks.secret", company.webhooks.secret, " (webhooks.url is set)"
            )
    return problems


def warnings_for(settings: Settings) -> list[str]:
    """Things that work but should be fixed (never errors)."""
    notes = []
    for index, key in enumerate(settings.connector.api_keys):
        if not is_hashed(key.get_secret_value()):
            notes.append(f"connector.api_keys[{index}]: plain key; store it as `bridge hash-key` prints it")
    for ci, company in enumerate(settings.companies):
        for ki, key in enumerate(company.api_keys):
            if not is_hashed(key.get_secret_value()):
                notes.append(f"companies[{ci}].api_keys[{ki}]: plain key; store it hashed (sha256:...)")
    if not settings.connector.api_keys:
        notes.append("connector.api_keys: empty; only media sockets announced by a webhook can attach")
    asterisk = settings.asterisk
    control_key, credential = (
        ("asterisk.ami.secret", asterisk.ami.secret)
        if asterisk.control == "ami"
        else ("asterisk.ari.password", asterisk.ari.password)
    )
    if not credential.get_secret_value():
        notes.append(f"{control_key}: empty; call control is off (no outbound calls, transfers or DTMF)")
    for provider in used_providers(settings):
        if provider in MODEL_PROVIDERS:
            section = settings.providers.section(provider)
            if section.model and section.price() is None:
                notes.append(
                    f'providers.{provider}.prices."{section.model}": no price; its calls show no cost'
                )
    # A warning, not an error: WhatsApp is a side channel; without a token its sends answer 503.
    for ci, company in enumerate(settings.companies):
        if company.whatsapp_numbers and not company.whatsapp.access_token.get_secret_value():
            token = company.whatsapp.access_token
            why = (
                f"environment variable {token.variable} is not set"
                if isinstance(token, UnresolvedSecret)
                else "empty"
            )
            notes.append(f"companies[{ci}].whatsapp.access_token: {why}; WhatsApp template sends answer 503")
    return notes
