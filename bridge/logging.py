"""structlog setup: JSON when not on a terminal, key=value on one; per-call context via contextvars.

Secrets never reach a log line. Every record, structlog's own and the stdlib ones of aiohttp, asyncio,
panoramisk and websockets, passes one `Redactor` after its message is formatted and its traceback
rendered, so exception text is scrubbed too. It replaces with `[redacted]`:

- the value of a key whose name says it holds a secret (`api_key=`, `password=`, ...);
- inside any text: secret-named query parameters (`?api_key=...`), credential headers
  (`Authorization:`, `X-API-Key:`, `x-connector-api-key:`, AMI `Secret:`), `Bearer <token>` and the
  user:password part of a URL. aiohttp puts the raw request line or header into the text of the
  error it logs for a malformed request, so a key sent by a client would otherwise land here;
- every occurrence of a secret value the caller names (provider keys, AMI secret, plain API keys),
  and every token whose SHA-256 is one the caller names (API keys configured as `sha256:` digests,
  which aiohttp may print with no header name in front: the start of an over-long header value).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Literal, TextIO, cast
from urllib.parse import quote, quote_plus

import structlog

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 6  # shorter values are common words: redacting them would garble every line

LogFormat = Literal["auto", "json", "console"]

# Key names (of event fields, or of dicts inside them) whose values are secrets.
_SECRET_KEY_NAME = re.compile(
    r"api[_-]?key|secret|passw(?:or)?d|authorization|credential|(?:^|[_-])token$", re.IGNORECASE
)
# `name=value` in a query string or a key=value text; the value runs up to &, whitespace or a quote.
_SECRET_PARAMETER = re.compile(
    r"(?<![\w-])(?P<name>[\w-]*?(?:api[_-]?key|secret|passw(?:or)?d|token)|key)=(?P<value>[^&\s'\"]+)",
    re.IGNORECASE,
)
# `Name: value` of a credential header (also `'Name': 'value'` in a dict repr, `"Name": "value"` in
# JSON). A header value is the rest of its line: everything up to a line end or a quote goes, a known
# auth scheme is kept so the line still says which kind of credential was sent.
_SECRET_HEADER = re.compile(
    r"(?<![\w-])(?P<name>[\w-]*?(?:authorization|api[_-]?key|secret|passw(?:or)?d|token))"
    r"(?P<separator>['\"]?[ \t]*:[ \t]*['\"]?)"
    r"(?P<scheme>(?:bearer|basic|digest|negotiate|ntlm|token)[ \t]+)?"
    r"(?P<value>[^\r\n'\"]+)",
    re.IGNORECASE,
)
_BEARER_TOKEN = re.compile(r"(?<![\w-])(?P<scheme>bearer[ \t]+)[^\s'\"]{6,}", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^\s/?#@'\"<>]+@", re.IGNORECASE)
# Every pattern above needs one of these: most text has none, and one search is cheaper than four.
_MAY_HOLD_CREDENTIALS = re.compile(r"key|secret|passw|token|authori|bearer|://", re.IGNORECASE)
# Where a hashed key may hide: token68 runs (Bearer tokens, base64) and the URL-safe runs inside them.
_TOKEN_RUNS = (re.compile(r"[A-Za-z0-9._~+/-]+=*"), re.compile(r"[A-Za-z0-9_-]+"))
# Set by the processors that run before the redactor: neither their names nor their values need a look.
_OWN_FIELDS = frozenset({"timestamp", "level"})
# Common field names, known not to name a secret without running the regex.
_ORDINARY_NAMES = frozenset({"event", "component", "call_id", "exception", "error", "path", "status"})
_MAX_DEPTH = 4  # nested lists/dicts in an event; deeper ones are rendered as text and scrubbed


def _spellings(secret: str) -> set[str]:
    """The ways a value shows up in log text: as is, percent-encoded, in a str/bytes repr, in JSON."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), json.dumps(secret)[1:-1]}
    for escaped in (repr(secret)[1:-1], repr(secret.encode("utf-8", "surrogatepass"))[2:-1]):
        # repr escapes a ' only when the whole string also holds a ": the text around decides.
        forms.update((escaped, escaped.replace("\\'", "'"), escaped.replace("'", "\\'")))
    return forms


class Redactor:
    """Scrubs secrets out of log records: the last step before rendering, for every record."""

    def __init__(self, secrets: Iterable[str] = (), secret_digests: Iterable[bytes] = ()) -> None:
        spellings = {
            form for secret in secrets if len(secret) >= MIN_SECRET_LENGTH for form in _spellings(secret)
        }
        # Longest first: a secret that contains another is replaced whole.
        ordered = sorted(spellings, key=len, reverse=True)
        self._known: re.Pattern[str] | None = (
            re.compile("|".join(re.escape(form) for form in ordered)) if ordered else None
        )
        self._digests = frozenset(secret_digests)

    def scrub(self, text: str) -> str:
        if len(text) < MIN_SECRET_LENGTH:
            return text
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        if self._digests:
            text = self._scrub_hashed(text)
        if _MAY_HOLD_CREDENTIALS.search(text) is None:
            return text
        text = _URL_CREDENTIALS.sub(rf"\g<scheme>{REDACTED}@", text)
        text = _SECRET_HEADER.sub(rf"\g<name>\g<separator>\g<scheme>{REDACTED}", text)
        text = _SECRET_PARAMETER.sub(rf"\g<name>={REDACTED}", text)
        return _BEARER_TOKEN.sub(rf"\g<scheme>{REDACTED}", text)

    def _scrub_hashed(self, text: str) -> str:
        tokens = {
            token for runs in _TOKEN_RUNS for token in runs.findall(text) if len(token) >= MIN_SECRET_LENGTH
        }
        found = [token for token in tokens if hashlib.sha256(token.encode()).digest() in self._digests]
        for token in sorted(found, key=len, reverse=True):
            text = text.replace(token, REDACTED)
        return text

    def scrub_value(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return self.scrub(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if depth < _MAX_DEPTH and isinstance(value, (list, tuple)):
            return [self.scrub_value(item, depth + 1) for item in value]
        if depth < _MAX_DEPTH and isinstance(value, Mapping):
            return {
                key: REDACTED if _is_secret_name(key) else self.scrub_value(item, depth + 1)
                for key, item in value.items()
            }
        # Anything else (an exception, bytes, an object) is rendered as text anyway, as the renderers
        # would: render it here so that text is scrubbed too.
        hook = getattr(value, "__structlog__", None)
        return self.scrub(str(hook()) if callable(hook) else repr(value))

    def __call__(self, _: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            if key not in _OWN_FIELDS:
                event_dict[key] = REDACTED if _is_secret_name(key) else self.scrub_value(value)
        return event_dict


def _is_secret_name(key: object) -> bool:
    return isinstance(key, str) and key not in _ORDINARY_NAMES and _SECRET_KEY_NAME.search(key) is not None


def configure_logging(
    level: str = "info",
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    *,
    secrets: Iterable[str] = (),
    secret_digests: Iterable[bytes] = (),
) -> None:
    """Configure structlog (and route stdlib logging, e.g. aiohttp's, through the same renderer).

    `secrets`: values scrubbed wherever they appear (shorter than MIN_SECRET_LENGTH: ignored).
    `secret_digests`: SHA-256 digests (of the UTF-8 value, as `bridge.keys` hashes keys) of values
    scrubbed wherever they appear as a token.
    """
    out = stream or sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    # Tracebacks are rendered to text before the redactor, so the redactor sees them.
    redactor = Redactor(secrets, secret_digests)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per line (print() makes two): `--workers` share one stderr, and lines must not mix.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redactor,
                renderer,
            ],
            # The record's own exc_info/stack_info would be appended unscrubbed by logging.Formatter.
            keep_exc_info=False,
            keep_stack_info=False,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric_level)
    # aiohttp's access log would print query strings (they may carry ?api_key=); we log requests ourselves.
    logging.getLogger("aiohttp.access").disabled = True


def get_logger(component: str) -> structlog.typing.FilteringBoundLogger:
    return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger(component=component))
