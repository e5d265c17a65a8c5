"""The companies and keys the daemon serves, indexed for the request path.

Pure and immutable: built from `Settings`, swapped whole on SIGHUP reload, so a
request sees either the old directory or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from bridge.keys import KeyRing, digest_of, phone_digits
from bridge.settings import CompanySettings, Settings


@dataclass(frozen=True, slots=True)
class Company:
    settings: CompanySettings
    phone_digits: frozenset[str]
    allowed_caller_digits: frozenset[str]

    @property
    def id(self) -> str:
        return self.settings.id

    def owns_phone(self, number: str) -> bool:
        return phone_digits(number) in self.phone_digits

    def allows_caller(self, number: str) -> bool:
        return not self.allowed_caller_digits or phone_digits(number) in self.allowed_caller_digits


@dataclass(frozen=True, slots=True)
class StoredEntries:
    """What the admin API keeps in the store (enabled companies, live keys' digests), added to the
    config's. The config wins: a stored company whose id or phone the config now uses loses it."""

    companies: tuple[CompanySettings, ...] = ()
    company_keys: tuple[tuple[bytes, str], ...] = ()  # (digest, company id)
    connector_keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Directory:
    companies: Mapping[str, Company]
    company_keys: KeyRing[str]
    connector_keys: KeyRing[bool]
    by_phone: Mapping[str, str]
    admin_keys: KeyRing[bool] = field(default_factory=lambda: KeyRing(()))

    @classmethod
    def from_settings(cls, settings: Settings, stored: StoredEntries | None = None) -> Directory:
        stored = stored or StoredEntries()
        configured = {company.id for company in settings.companies}
        extra = [company for company in stored.companies if company.id not in configured]
        companies: dict[str, Company] = {}
        by_phone: dict[str, str] = {}
        for company in [*settings.companies, *extra]:
            entry = Company(
                settings=company,
                phone_digits=frozenset(phone_digits(p) for p in company.phones),
                allowed_caller_digits=frozenset(phone_digits(p) for p in company.allowed_callers),
            )
            companies[company.id] = entry
            for digits in entry.phone_digits:
                by_phone.setdefault(digits, company.id)
        return cls(
            companies=MappingProxyType(companies),
            company_keys=KeyRing.build(
                [
                    *(
                        (digest_of(key.get_secret_value()), company.id)
                        for company in settings.companies
                        for key in company.api_keys
                    ),
                    *((digest, owner) for digest, owner in stored.company_keys if owner in companies),
                ]
            ),
            connector_keys=KeyRing.build(
                [
                    *((digest_of(key.get_secret_value()), True) for key in settings.connector.api_keys),
                    *((digest, True) for digest in stored.connector_keys),
                ]
            ),
            by_phone=MappingProxyType(by_phone),
            admin_keys=KeyRing.build(
                (digest_of(key.get_secret_value()), True) for key in settings.admin.api_keys
            ),
        )

    def company_for_key(self, key: str) -> Company | None:
        company_id = self.company_keys.match(key)
        return None if company_id is None else self.companies.get(company_id)

    def is_connector_key(self, key: str) -> bool:
        return self.connector_keys.match(key) is not None

    def is_admin_key(self, key: str) -> bool:
        return self.admin_keys.match(key) is not None

    def company_for_phone(self, number: str) -> Company | None:
        company_id = self.by_phone.get(phone_digits(number))
        return None if company_id is None else self.companies.get(company_id)
