"""The log redactor: every pattern it scrubs, what it leaves alone, and the whole logging chain."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import traceback
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import InvalidHeader, LineTooLong
from hypothesis import assume, given
from hypothesis import strategies as st

from bridge.keys import hash_key
from bridge.logging import REDACTED, Redactor, configure_logging, get_logger
from bridge.settings import build_settings
from bridge.settings_secrets import secret_digests, secret_values
from tests.helpers import ADMIN_KEY, raw_config

KEY = "Xk3v_9-QpL2mZ8rT"
HASHED_KEY = "stored-as-sha256-Yw4p"

# What a key looks like: URL-safe or token68 characters (`bridge hash-key` accepts any string, but a key
# with whitespace or quotes could not travel in a query string or a header unencoded anyway).
KEY_ALPHABET = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/")
keys = st.text(KEY_ALPHABET, min_size=8, max_size=64)
# Text around the secret that does not carry it: no character that would end the secret's value early.
filler = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789/_-"), max_size=30)


@pytest.fixture(autouse=True)
def _restore_root_level() -> Iterator[None]:
    """conftest's `_reset_logging` drops the handlers configure_logging installs; this puts back the level."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def scrub(text: str) -> str:
    return Redactor().scrub(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /v1/calls?api_key=K1abc&x=1 HTTP/1.1", "GET /v1/calls?api_key=[redacted]&x=1 HTTP/1.1"),
        ("/p?APIKEY=K1abc", "/p?APIKEY=[redacted]"),
        ("/p?a=1&key=K1abc#frag x", "/p?a=1&key=[redacted] x"),  # a raw # is not a URL's fragment here
        ("/p?token=K1abc'", "/p?token=[redacted]'"),
        ("/p?access_token=K1abc", "/p?access_token=[redacted]"),
        ('"/p?password=K1abc"', '"/p?password=[redacted]"'),
        ("/p?client_secret=K1abc", "/p?client_secret=[redacted]"),
        ("Authorization: Bearer K1abc.def", "Authorization: Bearer [redacted]"),
        ("authorization:Basic dXNlcjpwYXNz", "authorization:Basic [redacted]"),
        ("Authorization: K1abcdef", "Authorization: [redacted]"),
        ("Authorization: Foo K1abcdef", "Authorization: [redacted]"),  # unknown scheme: all of it goes
        ("x-connector-api-key: K1abc\r\nHost: h", "x-connector-api-key: [redacted]\r\nHost: h"),
        ("X-API-Key: K1abc", "X-API-Key: [redacted]"),
        ("api-key: K1abc", "api-key: [redacted]"),
        ("Action: Login\r\nSecret: K1abc\r\n", "Action: Login\r\nSecret: [redacted]\r\n"),
        ("{'Action': 'Login', 'Secret': 'K1abc'}", "{'Action': 'Login', 'Secret': '[redacted]'}"),
        ('{"authorization": "Bearer K1abc"}', '{"authorization": "Bearer [redacted]"}'),
        ("wss://user:K1abc@host/x", "wss://[redacted]@host/x"),
        ("http://K1abcdef@host", "http://[redacted]@host"),
        ("b'Bearer K1abcdef...'", "b'Bearer [redacted]'"),
    ],
)
def test_each_pattern_is_scrubbed(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "call_id=abc",
        "call_started company=acme call_id=c-42 state=ringing",
        "https://example.com/v1/calls?limit=10&cursor=abc",
        "ws://127.0.0.1:8080/media/c-1",
        "mailto ops@acme.example",
        "input_tokens=120 output_tokens=44 tokens: 164 monkey=3",
        "an API key is required (api_key, Bearer or X-API-Key)",
        "Error handling request from 127.0.0.1",
        "",
    ],
)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert scrub(text) == text


def test_known_values_are_scrubbed_wherever_they_appear() -> None:
    redactor = Redactor(["provider-key-1234", "ami 'sec' ret"])
    assert redactor.scrub("x provider-key-1234y") == f"x {REDACTED}y"
    assert redactor.scrub("in a repr: 'ami \\'sec\\' ret'") == f"in a repr: '{REDACTED}'"
    assert redactor.scrub("b\"ami 'sec' ret\"") == f'b"{REDACTED}"'
    assert redactor.scrub("ami%20%27sec%27%20ret and ami+%27sec%27+ret") == f"{REDACTED} and {REDACTED}"


def test_short_and_empty_values_are_not_redacted() -> None:
    redactor = Redactor(["", "abc", "bridge"])
    assert redactor.scrub("abc and a bridge") == f"abc and a {REDACTED}"


def test_a_value_that_contains_another_is_replaced_whole() -> None:
    redactor = Redactor(["secret", "secret-and-more"])
    assert redactor.scrub("<secret-and-more>") == f"<{REDACTED}>"


def test_tokens_hashing_to_a_configured_digest_are_scrubbed() -> None:
    redactor = Redactor(secret_digests=[hashlib.sha256(HASHED_KEY.encode()).digest()])
    # aiohttp's text for a header value holding a NUL byte: the value, with no header name before it.
    assert (
        redactor.scrub(f"Invalid HTTP header: b'{HASHED_KEY}\\x00'")
        == f"Invalid HTTP header: b'{REDACTED}\\x00'"
    )
    assert redactor.scrub(f"/{HASHED_KEY}.json") == f"/{REDACTED}.json"
    assert redactor.scrub(f"{HASHED_KEY}x") == f"{HASHED_KEY}x"  # a different token


def test_structured_values() -> None:
    redactor = Redactor([KEY])
    event = {
        "event": f"sent {KEY}",
        "api_key": "anything",
        "x_api_key": 1234,
        "attempts": 3,
        "ok": True,
        "nested": {"headers": {"Authorization": "Bearer zz", "Accept": "*/*"}, "list": [f"?token={KEY}", 5]},
        "error": LineTooLong(b"/p?api_key=" + KEY.encode() + b"...", 8190),
        "raw": b"Secret: " + KEY.encode(),
        "input_tokens": 12,
    }
    out = redactor(None, "info", event)
    assert out["event"] == f"sent {REDACTED}"
    assert out["api_key"] == out["x_api_key"] == REDACTED  # the key stays, its value goes
    assert (out["attempts"], out["ok"], out["input_tokens"]) == (3, True, 12)
    assert out["nested"] == {
        "headers": {"Authorization": REDACTED, "Accept": "*/*"},
        "list": [f"?token={REDACTED}", 5],
    }
    assert KEY not in out["error"]
    assert "LineTooLong" in out["error"]
    assert out["raw"] == f"b'Secret: {REDACTED}'"


@given(secret=keys, before=filler, after=filler, name=st.sampled_from(["api_key", "apikey", "key", "token"]))
def test_a_query_string_secret_never_survives(secret: str, before: str, after: str, name: str) -> None:
    assume(secret not in f"/{before} /{after}")
    for text in (
        f"GET /{before}?{name}={secret} HTTP/1.1",
        f"GET /{before}?a={after}&{name}={secret}&b={after} HTTP/1.1",
        # aiohttp's text for an over-long request line: its first 100 bytes, so maybe half a secret.
        f"Got more than 8190 bytes when reading: {(f'/{before}?{name}={secret}'.encode()[:100] + b'...')!r}.",
    ):
        scrubbed = scrub(text)
        assert secret not in scrubbed
        assert REDACTED in scrubbed


@given(
    secret=keys,
    after=filler,
    header=st.sampled_from(
        ["Authorization: Bearer ", "authorization: ", "X-API-Key: ", "x-connector-api-key: ", "Secret: "]
    ),
    line_end=st.sampled_from(["\r\n", "\n", ""]),
)
def test_a_header_secret_never_survives(secret: str, after: str, header: str, line_end: str) -> None:
    assume(secret not in f"/{after}")
    head = f"GET /{after} HTTP/1.1{line_end}Host: h{line_end}{header}{secret}{line_end}Accept: */*{line_end}"
    # Raw, as a repr inside an aiohttp exception, and inside a whole formatted traceback.
    assert secret not in scrub(head)
    try:
        raise InvalidHeader(head.encode())
    except InvalidHeader as exc:
        rendered = "".join(traceback.format_exception(exc))
    assert secret in rendered
    assert secret not in scrub(rendered)


@given(secret=st.text(min_size=6, max_size=40), before=st.text(max_size=20), after=st.text(max_size=20))
def test_a_known_secret_never_survives_in_any_spelling(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    text = before + secret + after
    for spelling in (text, repr(text), repr(text.encode("utf-8", "surrogatepass"))):
        assert secret not in redactor.scrub(spelling)
    try:
        raise ValueError(text)
    except ValueError as exc:
        rendered = "".join(traceback.format_exception(exc))
    assert secret not in redactor.scrub(rendered)


@given(secret=keys, before=filler)
def test_a_hashed_secret_never_survives_as_a_token(secret: str, before: str) -> None:
    assume(secret not in before)
    redactor = Redactor(secret_digests=[hashlib.sha256(secret.encode()).digest()])
    with_nul = secret.encode() + bytes(1)
    assert secret not in redactor.scrub(f"Invalid HTTP header: {with_nul!r} {before}")


# --- through the logging chain ----------------------------------------------------------------------


def test_structlog_events_and_their_tracebacks_are_scrubbed() -> None:
    stream = io.StringIO()
    configure_logging("debug", "json", stream=stream, secrets=[KEY])
    log = get_logger("test")
    try:
        raise RuntimeError(f"upstream said: Authorization: Bearer {KEY}")
    except RuntimeError:
        log.exception("upstream_failed", url=f"wss://u:{KEY}@host/?api_key={KEY}", api_key=KEY)
    text = stream.getvalue()
    assert KEY not in text
    record = json.loads(text)
    assert record["event"] == "upstream_failed"
    assert record["api_key"] == REDACTED
    assert record["url"] == f"wss://{REDACTED}@host/?api_key={REDACTED}"
    assert "RuntimeError: upstream said: Authorization: Bearer [redacted]" in record["exception"]


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_stdlib_records_their_arguments_and_tracebacks_are_scrubbed(fmt: str) -> None:
    stream = io.StringIO()
    configure_logging("debug", "json" if fmt == "json" else "console", stream=stream, secrets=[KEY])
    try:
        raise LineTooLong(f"/p?api_key={KEY}".encode(), 8190)
    except LineTooLong as exc:
        logging.getLogger("aiohttp.server").exception(
            "Error handling request from %s", "127.0.0.1", exc_info=exc
        )
    logging.getLogger("panoramisk.manager").debug(
        "Action %r sent", {"Action": "Login", "Secret": "other-ami-pw"}
    )
    logging.getLogger("websockets.client").debug(
        "> %s: %s", "Authorization", f"Bearer {KEY}", stack_info=True
    )
    text = stream.getvalue()
    assert KEY not in text
    assert "other-ami-pw" not in text
    assert "Error handling request from 127.0.0.1" in text
    assert "LineTooLong" in text  # the traceback is there, scrubbed
    assert "Got more than 8190 bytes when reading" in text
    assert "> Authorization: Bearer [redacted]" in text
    if fmt == "json":
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert [r["level"] for r in records] == ["error", "debug", "debug"]


# --- what the daemon passes in ----------------------------------------------------------------------


def test_every_secret_of_the_settings_is_collected() -> None:
    raw = raw_config()
    raw["providers"] = {"openai": {"api_key": "openai-key-1"}, "xai": {"api_key": "xai-key-1"}}
    raw["asterisk"] = {"ami": {"secret": "ami-secret-1"}, "ari": {"password": "ari-password-1"}}
    raw["connector"] = {"api_keys": ["plain-connector-key", hash_key("hashed-connector-key")]}
    raw["companies"][1]["agent"]["tools"] = [
        {"name": "crm", "url": "https://crm.example", "headers": {"Authorization": "Bearer tool-token-1"}}
    ]
    settings = build_settings(raw)
    values = secret_values(settings)
    assert set(values) >= {
        "openai-key-1",
        "xai-key-1",
        "ami-secret-1",
        "ari-password-1",
        "plain-connector-key",
        "Bearer tool-token-1",
        "acme-key-second-9876",  # tests.helpers' one plain company key
    }
    assert "" not in values  # unset secrets (azure_openai's key here) are left out
    assert not any(value.startswith("sha256:") for value in values)
    digests = secret_digests(settings)
    # The hashed connector key, the helpers' two hashed company keys and their hashed admin key.
    assert hashlib.sha256(b"hashed-connector-key").digest() in digests
    assert hashlib.sha256(ADMIN_KEY.encode()).digest() in digests
    assert len(digests) == 4
