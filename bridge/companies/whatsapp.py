"""WhatsApp template messages through Meta's Graph API (Cloud API).

`POST {graph_url}/{graph_version}/{phone_number_id}/messages` with the company's bearer token and
`{"messaging_product": "whatsapp", "to", "type": "template", "template": {"name", "language": {"code"},
"components"}}`; Meta answers `{"messaging_product", "contacts": [{"input", "wa_id"}], "messages":
[{"id"}]}` or its error object `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`.
The token is sent only in the Authorization header and never appears in an error or a log line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp

from bridge.logging import get_logger


@dataclass(frozen=True, slots=True)
class TemplateMessage:
    phone_number_id: str
    to: str
    template_name: str
    language_code: str
    components: list[dict[str, Any]]

    def graph_body(self) -> dict[str, Any]:
        template: dict[str, Any] = {"name": self.template_name, "language": {"code": self.language_code}}
        if self.components:  # a template without variables takes none
            template["components"] = self.components
        return {
            "messaging_product": "whatsapp",
            "to": self.to,
            "type": "template",
            "template": template,
        }


@dataclass(frozen=True, slots=True)
class SentTemplate:
    message_id: str  # wamid....
    wa_id: str  # the recipient's WhatsApp id ("" when Meta gave none)
    input: str  # the number as sent
    message_status: str  # e.g. "accepted" ("" when Meta gave none)


class GraphError(Exception):
    """Meta answered with its error object (a bad template, parameter, recipient, or token)."""

    def __init__(self, status: int, message: str, code: int | None, subcode: int | None, trace: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.subcode = subcode
        self.trace = trace


class GraphUnavailable(Exception):
    """No usable answer: a timeout, a refused connection, or a reply that is not Meta's shape."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def graph_error(status: int, payload: object) -> GraphError | None:
    """Meta's error object in `payload`, if it is one."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    trace = error.get("fbtrace_id")
    return GraphError(
        status,
        error["message"][:500],
        _int_or_none(error.get("code")),
        _int_or_none(error.get("error_subcode")),
        trace if isinstance(trace, str) else "",
    )


def sent_template(payload: object) -> SentTemplate | None:
    """The success answer's message id (and recipient), or None when it is not Meta's shape."""
    if not isinstance(payload, dict):
        return None
    messages = payload.get("messages")
    first = messages[0] if isinstance(messages, list) and messages else None
    if not isinstance(first, dict) or not isinstance(first.get("id"), str) or not first["id"]:
        return None
    contacts = payload.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
    wa_id, given, status = contact.get("wa_id"), contact.get("input"), first.get("message_status")
    return SentTemplate(
        message_id=first["id"],
        wa_id=wa_id if isinstance(wa_id, str) else "",
        input=given if isinstance(given, str) else "",
        message_status=status if isinstance(status, str) else "",
    )


class WhatsAppGraph:
    def __init__(self, *, graph_url: str, graph_version: str, timeout_seconds: float) -> None:
        self._http: aiohttp.ClientSession | None = None  # made on first use, on the running loop
        self.base = graph_url.rstrip("/")
        self.version = graph_version
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._log = get_logger("whatsapp")

    async def send_template(self, token: str, message: TemplateMessage) -> SentTemplate:
        url = f"{self.base}/{self.version}/{message.phone_number_id}/messages"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            if self._http is None:
                self._http = aiohttp.ClientSession()
            async with self._http.post(
                url, json=message.graph_body(), headers=headers, timeout=self.timeout
            ) as response:
                status = response.status
                payload = await response.json(content_type=None)
        except TimeoutError as exc:
            self._log.warning("whatsapp_timeout", phone_number_id=message.phone_number_id)
            raise GraphUnavailable("Meta's Graph API did not answer in time", timed_out=True) from exc
        except (aiohttp.ClientError, ValueError) as exc:  # refused, reset, or not JSON
            self._log.warning("whatsapp_unreachable", error=type(exc).__name__)
            raise GraphUnavailable("Meta's Graph API could not be reached") from exc
        if status < 300:
            sent = sent_template(payload)
            if sent is not None:
                return sent
            raise GraphUnavailable("Meta's Graph API answered without a message id")
        error = graph_error(status, payload)
        if error is None or status >= 500:
            raise GraphUnavailable(f"Meta's Graph API answered {status}")
        self._log.info("whatsapp_refused", status=status, code=error.code, fbtrace_id=error.trace)
        raise error

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
