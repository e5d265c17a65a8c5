"""No secret reaches the log: the whole daemon at DEBUG, driven with malformed requests over raw sockets.

aiohttp answers a request it cannot parse with a 400 and logs the parser's exception, whose text holds
the offending request line or header (an over-long line, a bare LF, a bad header byte), at error level
with a traceback. A client's key sent in that request must come out as `[redacted]`, whether the key
is configured in clear or as a `sha256:` digest, and so must every other secret the settings hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from bridge.app import Services
from bridge.asterisk.ami import AmiController
from bridge.logging import REDACTED, configure_logging
from bridge.settings import AmiSettings, OriginateSettings, Settings, build_settings
from bridge.settings_secrets import secret_digests, secret_values
from tests.fakes.ami_server import FakeAmiServer
from tests.helpers import ACME_KEY, ACME_KEY_2, CONNECTOR_KEY, GLOBEX_KEY, raw_config

OPENAI_KEY = "sk-proj-openai-4Qz81LmNvB"
AZURE_KEY = "azure-key-77c1e0f2a9"
AMI_SECRET = "ami-secret-9Jd3kqW"
TOOL_TOKEN = "crm-token-5Rt8Wq2xZ"
GUESSED_KEY = "guessed-key-0Jw7Tn"  # configured nowhere: only the patterns can hide it
PAD = b"x" * 9000  # past aiohttp's 8190-byte limit for a request line or a header

# ACME_KEY, GLOBEX_KEY and CONNECTOR_KEY are configured as sha256: digests, ACME_KEY_2 in clear.
SECRETS = (ACME_KEY, ACME_KEY_2, GLOBEX_KEY, CONNECTOR_KEY, OPENAI_KEY, AZURE_KEY, AMI_SECRET, TOOL_TOKEN)


@pytest.fixture(autouse=True)
def _restore_root_level() -> Iterator[None]:
    """conftest's `_reset_logging` drops the handlers configure_logging installs; this puts back the level."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def settings_with_secrets(ami_port: int) -> Settings:
    raw = raw_config()
    raw["providers"] = {"openai": {"api_key": OPENAI_KEY}, "azure_openai": {"api_key": AZURE_KEY}}
    raw["asterisk"] = {
        "control": "ami",
        "ami": {"host": "127.0.0.1", "port": ami_port, "username": "bridge", "secret": AMI_SECRET},
    }
    raw["companies"][0]["agent"]["tools"] = [
        {
            "name": "crm",
            "url": "https://crm.example/lookup",
            "headers": {"Authorization": f"Bearer {TOOL_TOKEN}"},
        }
    ]
    return build_settings(raw)


def log_records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes, read until the server closes (a reset after a 400 ends the read too)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionResetError):
            await writer.drain()
            async with asyncio.timeout(5):
                while chunk := await reader.read(65536):
                    received += chunk
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
    return received


def head(request_line: bytes, *headers: bytes, line_end: bytes = b"\r\n") -> bytes:
    return line_end.join([request_line, b"Host: bridge", *headers, b"", b""])


# (what is wrong, the request, the aiohttp exception it logs; None: parsed, answered and logged as a request)
MALFORMED: list[tuple[str, bytes, str | None]] = [
    (
        "over-long request line, hashed key in the query",
        head(b"GET /api/phones?api_key=" + ACME_KEY.encode() + b"&pad=" + PAD + b" HTTP/1.1"),
        "LineTooLong",
    ),
    (
        "over-long request line, plain key in the query",
        head(b"GET /api/phones?api_key=" + ACME_KEY_2.encode() + b"&pad=" + PAD + b" HTTP/1.1"),
        "LineTooLong",
    ),
    (
        "over-long request line, a key nobody configured",
        head(b"GET /api/phones?apikey=" + GUESSED_KEY.encode() + b"&pad=" + PAD + b" HTTP/1.1"),
        "LineTooLong",
    ),
    (
        "over-long Authorization header",
        head(b"GET /api/phones HTTP/1.1", b"Authorization: Bearer " + ACME_KEY.encode() + b" " + PAD),
        "LineTooLong",
    ),
    (
        "over-long X-API-Key header: aiohttp logs its value with no name in front",
        head(b"GET /api/phones HTTP/1.1", b"X-API-Key: " + ACME_KEY.encode() + b" " + PAD),
        "LineTooLong",
    ),
    (
        "bare LF line endings, key in the query",
        head(b"GET /api/phones?api_key=" + ACME_KEY.encode() + b" HTTP/1.1", line_end=b"\n"),
        "BadStatusLine",
    ),
    (
        "bare LF line endings, credentials in an absolute URL",
        head(b"GET http://acme:" + ACME_KEY_2.encode() + b"@bridge/api/phones HTTP/1.1", line_end=b"\n"),
        "BadStatusLine",
    ),
    (
        "connector key, then an invalid chunk size",
        head(
            b"POST /api/calls HTTP/1.1",
            b"x-connector-api-key: " + CONNECTOR_KEY.encode(),
            b"Transfer-Encoding: chunked",
        )
        + b"zz\r\n",
        "BadHttpMessage",
    ),
    (
        "connector key, then a header name with a control byte",
        head(
            b"GET /api/phones HTTP/1.1", b"x-connector-api-key: " + CONNECTOR_KEY.encode(), b"Bad\x01Name: 1"
        ),
        "BadHttpMessage",
    ),
    (
        "connector key followed by a NUL byte",
        head(b"GET /api/phones HTTP/1.1", b"x-connector-api-key: " + CONNECTOR_KEY.encode() + b"\x00"),
        "BadHttpMessage",
    ),
    (
        "X-API-Key followed by a control byte",
        head(b"GET /api/phones HTTP/1.1", b"X-API-Key: " + ACME_KEY.encode() + b"\x01"),
        "BadHttpMessage",
    ),
    (
        "connector key followed by bytes that are not UTF-8",
        head(
            b"GET /api/phones HTTP/1.1",
            b"x-connector-api-key: " + CONNECTOR_KEY.encode() + b"\xff\xfe",
            b"Connection: close",
        ),
        None,
    ),
    (
        "a key that matches no company",
        head(b"GET /api/phones?api_key=" + GUESSED_KEY.encode() + b" HTTP/1.1", b"Connection: close"),
        None,
    ),
    (
        "a valid key on a path that does not exist",
        head(b"GET /no/such/path?api_key=" + ACME_KEY.encode() + b" HTTP/1.1", b"Connection: close"),
        None,
    ),
]


@pytest.fixture
async def fake_ami() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({"bridge": AMI_SECRET}) as server:
        yield server


async def test_no_secret_reaches_the_log_of_the_whole_daemon(
    bridge_factory: Callable[..., Any], fake_ami: FakeAmiServer
) -> None:
    settings = settings_with_secrets(fake_ami.port)
    log = io.StringIO()
    configure_logging(
        "debug",
        "json",
        stream=log,
        secrets=secret_values(settings),
        secret_digests=secret_digests(settings),
    )
    services: Services = await bridge_factory(settings=settings)
    assert isinstance(services.controller, AmiController)
    assert await services.controller.wait_ready(5.0)  # panoramisk logged in (and logged at debug)
    responses = {what: await exchange(services.http_port, request) for what, request, _ in MALFORMED}
    await services.close()  # flush whatever shutdown logs too

    text = log.getvalue()
    for secret in (*SECRETS, GUESSED_KEY):
        assert secret not in text, secret

    # The log did see all of it: one line (no traceback: a client's mistake) per request aiohttp rejected,
    # with what was wrong and the offending bytes, scrubbed.
    records = log_records(text)
    errors = [r for r in records if r["event"] == "bad_http_request"]
    expected = [exception for _, _, exception in MALFORMED if exception is not None]
    assert [r["level"] for r in errors] == ["info"] * len(expected)
    assert [r["error"] for r in errors] == expected
    assert not any("Traceback" in line for line in text.splitlines())
    scrubbed = [r["detail"] for r in errors if REDACTED in r["detail"]]
    assert len(scrubbed) == 10  # every rejected request that carried a key (the other shows another line)
    assert any("?api_key=[redacted]" in exception for exception in scrubbed)
    assert any("Bearer [redacted]" in exception for exception in scrubbed)
    assert any("x-connector-api-key: [redacted]" in exception for exception in scrubbed)
    assert any("http://[redacted]@bridge" in exception for exception in scrubbed)
    requests = [(r["path"], r["status"]) for r in records if r["event"] == "request"]
    assert ("/no/such/path", 404) in requests
    assert any(path == "/api/phones" and status == 401 for path, status in requests)
    assert any(r["event"].startswith("message interpreted") for r in records)  # panoramisk, at debug
    assert fake_ami.logins == [("bridge", True)]

    for what, _, exception in MALFORMED:
        status = b" 400 " if exception is not None else b" 40"
        assert responses[what].startswith(b"HTTP/1."), what
        assert status in responses[what].split(b"\r\n", 1)[0], what


async def test_panoramisk_never_logs_the_ami_secret(fake_ami: FakeAmiServer) -> None:
    log = io.StringIO()
    # Nothing told: the AMI controller's own filter and the `Secret:` pattern must do.
    configure_logging("debug", "json", stream=log)
    ami = AmiSettings(host="127.0.0.1", port=fake_ami.port, username="bridge", secret=SecretStr(AMI_SECRET))
    controller = AmiController(ami, OriginateSettings(), "bridge-transfer")
    try:
        await controller.start()
        assert await controller.wait_ready(5.0)
        # panoramisk logs an action it fails to write, `%r` of it with a traceback: make the next write
        # fail (no writes after EOF) and have it send a Login, as it does on every (re)connect.
        manager: Any = controller._manager  # the panoramisk Manager under it
        manager.protocol.transport.write_eof()
        manager.send_action({"Action": "Login", "Username": "bridge", "Secret": AMI_SECRET})
    finally:
        await controller.close()
    text = log.getvalue()
    assert AMI_SECRET not in text
    records = log_records(text)
    failed = [r for r in records if r["event"].startswith("Fail to send")]
    assert len(failed) == 1
    assert failed[0]["level"] == "error"
    assert "'Action': 'Login'" in failed[0]["event"]
    assert f"'Secret': '{REDACTED}'" in failed[0]["event"]
    assert "RuntimeError" in failed[0]["exception"]
    assert any(r["event"].startswith("message interpreted") for r in records)
    assert fake_ami.logins[0] == ("bridge", True)
