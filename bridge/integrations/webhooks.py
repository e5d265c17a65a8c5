"""The company's view of its webhooks, for the API: the effective settings (the API's override, else
the config's), editing them, and the deliveries with their dead letters."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bridge.errors import BadRequest, Conflict, NotFound
from bridge.integrations import keymap
from bridge.integrations.sender import WebhookSender
from bridge.integrations.webhook_store import Delivery, Override, WebhookStore
from bridge.settings import CompanySettings
from bridge.store.records import iso_utc

__all__ = ["EffectiveSettings", "WebhookService", "iso_utc", "masked"]


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    source: Literal["config", "api"]
    url: str
    secret: str
    events: tuple[str, ...]
    key_map: Mapping[str, str]
    updated_at: float | None


def masked(secret: str) -> str:
    """Enough to tell two secrets apart, never enough to sign with."""
    if not secret:
        return ""
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


class WebhookService:
    def __init__(self, store: WebhookStore, sender: WebhookSender, retry_for_seconds: float) -> None:
        self.store = store
        self.sender = sender
        self.retry_for_seconds = retry_for_seconds

    async def effective(self, company: CompanySettings) -> EffectiveSettings:
        override = await self.store.override(company.id)
        if override is not None:
            return EffectiveSettings(
                "api", override.url, override.secret, override.events, override.key_map, override.updated_at
            )
        hooks = company.webhooks
        return EffectiveSettings(
            "config",
            hooks.url,
            hooks.secret.get_secret_value(),
            tuple(hooks.events),
            dict(hooks.key_map),
            None,
        )

    async def put(
        self,
        company: CompanySettings,
        *,
        url: str,
        secret: str | None,
        events: Sequence[str],
        key_map: Mapping[str, str],
    ) -> EffectiveSettings:
        """Replace the company's settings; `secret` None keeps the one in force."""
        unknown = keymap.unknown_names(key_map)
        if unknown:
            listed = ", ".join("{{" + name + "}}" for name in unknown)
            raise BadRequest(
                f"key_map: unknown placeholder(s) {listed}; use {{{{call.<field>}}}} of the call result",
                code="unknown_placeholder",
            )
        if secret is None:
            secret = (await self.effective(company)).secret
        if url and not secret:
            # State, not shape: an omitted secret keeps the current one, and there is none yet.
            raise Conflict("secret: required with a url, and none is set yet", code="secret_required")
        override = Override(url, secret, tuple(dict.fromkeys(events)), dict(key_map), time.time())
        await self.store.put_override(company.id, override)
        return await self.effective(company)

    async def reset(self, company: CompanySettings) -> EffectiveSettings:
        """Back to the config's settings."""
        await self.store.delete_override(company.id)
        return await self.effective(company)

    async def deliveries(
        self, company_id: str, status: str | None, call_id: str | None, limit: int, offset: int
    ) -> tuple[list[Delivery], int]:
        return await self.store.deliveries(company_id, status, call_id, limit, offset)

    async def retry(self, company_id: str, delivery_id: str) -> Delivery:
        """A dead or failing delivery goes again now (404: not this company's; 409: already delivered)."""
        delivery = await self.store.get(company_id, delivery_id)
        if delivery is None:
            raise NotFound(f"no delivery {delivery_id!r}", code="delivery_not_found")
        if delivery.status == "delivered":
            raise Conflict(f"delivery {delivery_id!r} was delivered already", code="already_delivered")
        await self.store.retry(delivery_id, time.time(), self.retry_for_seconds)
        self.sender.wake()
        fresh = await self.store.get(company_id, delivery_id)
        return fresh if fresh is not None else delivery
