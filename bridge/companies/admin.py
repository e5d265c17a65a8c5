"""Companies and keys as data: the admin API's service.

The store holds what the admin API created; memory holds the same (loaded at start), so the request path
never reads SQLite. Every write is persisted first, then the current `Directory` is rebuilt from the
settings plus the stored entries and swapped into the `DirectoryHolder`: a change takes effect on the
next request, on every route, and a SIGHUP reload (which calls `directory_for`) keeps it.

Config companies and keys are listed read-only. Key use is noted in memory and flushed every few
seconds in one batched write, never a write per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pydantic import SecretStr, ValidationError

from bridge.companies import admin_store as db
from bridge.companies.admin_store import KeyKind, StoredCompany, StoredKey
from bridge.directory import Directory, StoredEntries
from bridge.errors import Conflict, NotFound
from bridge.keys import new_api_key, phone_digits
from bridge.logging import get_logger
from bridge.settings import CompanySettings, Settings
from bridge.settings_agents import UnresolvedSecret
from bridge.store.base import Store

FLUSH_SECONDS: Final = 5.0
PREFIX_CHARS: Final = 8
_KEY_KINDS: Final[Mapping[KeyKind, str]] = {"company": "bck", "connector": "bcc"}


@dataclass(frozen=True, slots=True)
class CompanyView:
    settings: CompanySettings
    read_only: bool  # from the config file
    disabled: bool
    created_at: float | None
    updated_at: float | None


@dataclass(frozen=True, slots=True)
class KeyView:
    id: str
    name: str
    prefix: str | None  # None for a config key (only its digest is known)
    read_only: bool
    created_at: float | None
    last_used_at: float | None


def _reveal(value: Any) -> Any:
    """JSON-able settings with secrets kept (a plain dump masks them): `env:NAME` stays a reference."""
    if isinstance(value, UnresolvedSecret):
        return f"env:{value.variable}"
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_reveal(v) for v in value]
    return value


def _document(settings: CompanySettings) -> dict[str, Any]:
    dumped = _reveal(settings.model_dump(mode="python", exclude={"api_keys", "limits"}))
    assert isinstance(dumped, dict)
    return dumped


def _settings_of(stored: StoredCompany) -> CompanySettings:
    return CompanySettings.model_validate({**stored.settings, "limits": dict(stored.limits)})


class AdminService:
    def __init__(self, store: Store, settings: Settings, publish: Callable[[Directory], None]) -> None:
        self._store = store
        self._publish_directory = publish  # swaps the DirectoryHolder's current one
        self._settings = settings
        self._companies: dict[str, StoredCompany] = {}
        self._keys: dict[str, StoredKey] = {}
        self._by_digest: dict[bytes, str] = {}
        self._used: dict[str, float] = {}  # key id -> last use, not yet flushed
        self._lock = asyncio.Lock()  # one admin write at a time: checks and writes never interleave
        self._flusher: asyncio.Task[None] | None = None
        self._log = get_logger("admin")
        # Called after each change this process made (the fleet tells the other nodes to `load` again).
        self.changed: Callable[[], None] = lambda: None

    # -- life cycle --------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the stored companies and keys and publish the directory (before any listener starts)."""
        companies = await self._store.run(db.load_companies)
        keys = await self._store.run(db.load_keys)
        self._companies = {c.id: c for c in companies}
        self._keys = {k.id: k for k in keys}
        self._publish()

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_loop(), name="admin-key-use")

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        await self.flush()

    def directory_for(self, settings: Settings) -> Directory:
        """The directory for these settings plus the stored companies and keys (also SIGHUP's)."""
        self._settings = settings
        enabled = tuple(_settings_of(c) for c in self._companies.values() if not c.disabled)
        return Directory.from_settings(
            settings,
            StoredEntries(
                companies=enabled,
                company_keys=tuple(
                    (k.digest, k.company_id) for k in self._keys.values() if k.kind == "company"
                ),
                connector_keys=tuple(k.digest for k in self._keys.values() if k.kind == "connector"),
            ),
        )

    def _publish(self) -> None:
        self._reindex()
        self._publish_directory(self.directory_for(self._settings))

    def _reindex(self) -> None:
        self._by_digest = {k.digest: k.id for k in self._keys.values()}

    # -- key use -----------------------------------------------------------------------------------

    def key_used(self, key: str) -> None:
        """Called on the request path after authentication succeeded: a dict write, no I/O."""
        key_id = self._by_digest.get(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest())
        if key_id is not None:
            self._used[key_id] = time.time()

    async def flush(self) -> None:
        if not self._used or self._store.closed:
            return
        used, self._used = self._used, {}
        for key_id, at in used.items():
            key = self._keys.get(key_id)
            if key is not None:
                self._keys[key_id] = replace(key, last_used_at=at)
        await self._store.run(db.record_last_used, list(used.items()))

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except Exception:  # a failed flush must not stop the next ones
                self._log.exception("key_use_flush_failed")

    # -- companies ---------------------------------------------------------------------------------

    def companies(self) -> list[CompanyView]:
        views = [CompanyView(c, True, False, None, None) for c in self._settings.companies]
        configured = {c.id for c in self._settings.companies}
        views += [
            CompanyView(_settings_of(c), False, c.disabled, c.created_at, c.updated_at)
            for c in self._companies.values()
            if c.id not in configured
        ]
        return sorted(views, key=lambda view: view.settings.id)

    def company(self, company_id: str) -> CompanyView:
        for view in self.companies():
            if view.settings.id == company_id:
                return view
        raise NotFound(f"no company {company_id}", code="unknown_company")

    def _writable(self, company_id: str) -> StoredCompany:
        view = self.company(company_id)
        if view.read_only:
            raise Conflict(
                f"company {company_id} is in the config file: edit it there", code="company_read_only"
            )
        return self._companies[company_id]

    def _check_phones(self, company_id: str, settings: CompanySettings) -> None:
        taken: dict[str, str] = {}
        for other in self._settings.companies:
            taken.update({phone_digits(p): other.id for p in other.phones})
        for stored in self._companies.values():  # a disabled company keeps its numbers
            taken.update({phone_digits(p): stored.id for p in stored.settings.get("phones", ())})
        for phone in settings.phones:
            owner = taken.get(phone_digits(phone))
            if owner is not None and owner != company_id:
                raise Conflict(f"{phone} belongs to another company", code="phone_taken")

    async def create_company(self, fields: Mapping[str, Any]) -> CompanyView:
        async with self._lock:
            settings = self._validated(dict(fields))
            if settings.id in self._companies or any(c.id == settings.id for c in self._settings.companies):
                raise Conflict(f"company {settings.id} exists", code="company_exists")
            self._check_phones(settings.id, settings)
            now = time.time()
            stored = StoredCompany(
                settings.id, _document(settings), settings.limits.model_dump(), False, now, now
            )
            await self._store.run(db.put_company, stored)
            self._companies[stored.id] = stored
            self._publish()
            self.changed()
        self._log.info("company_created", company=stored.id)
        return self.company(stored.id)

    async def update_company(self, company_id: str, fields: Mapping[str, Any]) -> CompanyView:
        async with self._lock:
            current = self._writable(company_id)
            changes = dict(fields)
            disabled = current.disabled if changes.get("enabled") is None else not changes["enabled"]
            changes.pop("enabled", None)
            merged = {**current.settings, "limits": dict(current.limits), **changes, "id": company_id}
            settings = self._validated(merged)
            self._check_phones(company_id, settings)
            stored = replace(
                current,
                settings=_document(settings),
                limits=settings.limits.model_dump(),
                disabled=disabled,
                updated_at=time.time(),
            )
            await self._store.run(db.put_company, stored)
            self._companies[company_id] = stored
            self._publish()
            self.changed()
        return self.company(company_id)

    async def disable_company(self, company_id: str) -> CompanyView:
        return await self.update_company(company_id, {"enabled": False})

    @staticmethod
    def _validated(fields: dict[str, Any]) -> CompanySettings:
        try:
            return CompanySettings.model_validate(fields)
        except ValidationError as exc:
            # The API's models check each field; what is left is fields in conflict (as for agents).
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"])
            message = str(first["msg"]).removeprefix("Value error, ")
            raise Conflict(f"{where}: {message}", code="profile_conflict") from exc

    # -- keys --------------------------------------------------------------------------------------

    def keys(self, kind: KeyKind, company_id: str = "") -> list[KeyView]:
        if kind == "company":
            configured: Sequence[object] = next(
                (c.api_keys for c in self._settings.companies if c.id == company_id), ()
            )
        else:
            configured = self._settings.connector.api_keys
        views = [
            KeyView(f"config-{i}", f"config key {i + 1}", None, True, None, None)
            for i in range(len(configured))
        ]
        for key in self._keys.values():
            if key.kind == kind and key.company_id == company_id:
                last = max(key.last_used_at or 0.0, self._used.get(key.id, 0.0)) or None
                views.append(KeyView(key.id, key.name, key.prefix, False, key.created_at, last))
        return views

    def _key_owner(self, kind: KeyKind, company_id: str) -> None:
        if kind == "company":
            view = self.company(company_id)
            if view.disabled:
                raise Conflict(f"company {company_id} is disabled", code="company_disabled")

    async def create_key(
        self, kind: KeyKind, company_id: str, name: str, *, replacing: str | None = None
    ) -> tuple[str, KeyView]:
        """The new key (the only time it exists outside the caller's hands) and its metadata."""
        async with self._lock:
            self._key_owner(kind, company_id)
            if replacing is not None:
                old = self._stored_key(kind, company_id, replacing)
                name = name or old.name
            secret = new_api_key(_KEY_KINDS[kind])
            now = time.time()
            key = StoredKey(
                uuid.uuid4().hex,
                kind,
                company_id,
                name,
                secret[:PREFIX_CHARS],
                hashlib.sha256(secret.encode()).digest(),
                now,
                None,
                None,
            )
            await self._store.run(db.insert_key, key, replacing, now)
            if replacing is not None:
                del self._keys[replacing]
            self._keys[key.id] = key
            self._publish()
            self.changed()
        self._log.info("key_created", kind=kind, company=company_id, key_id=key.id, rotated=replacing)
        return secret, KeyView(key.id, key.name, key.prefix, False, key.created_at, None)

    def _stored_key(self, kind: KeyKind, company_id: str, key_id: str) -> StoredKey:
        if kind == "company":
            self.company(company_id)  # 404 for an unknown company first
        key = self._keys.get(key_id)
        if key is None or key.kind != kind or key.company_id != company_id:
            if any(view.id == key_id for view in self.keys(kind, company_id)):
                raise Conflict("a config file key: remove it there", code="key_read_only")
            raise NotFound(f"no key {key_id}", code="unknown_key")
        return key

    async def revoke_key(self, kind: KeyKind, company_id: str, key_id: str) -> None:
        async with self._lock:
            self._stored_key(kind, company_id, key_id)
            await self._store.run(db.revoke_key, key_id, time.time())
            del self._keys[key_id]
            self._used.pop(key_id, None)
            self._publish()
            self.changed()
        self._log.info("key_revoked", kind=kind, company=company_id, key_id=key_id)
