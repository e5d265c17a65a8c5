from __future__ import annotations

import io
import json
import logging

import structlog

from bridge.logging import configure_logging, get_logger


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_when_not_a_terminal_with_call_context_and_redaction() -> None:
    stream = io.StringIO()
    configure_logging("info", "auto", stream=stream)
    with structlog.contextvars.bound_contextvars(call_id="c-42"):
        get_logger("test").info("call_started", api_key="k-123", password="p", authorization="Bearer x")
    get_logger("test").debug("hidden_at_info")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "call_started"
    assert record["call_id"] == "c-42"
    assert record["component"] == "test"
    assert record["api_key"] == record["password"] == record["authorization"] == "[redacted]"
    assert "k-123" not in lines[0]


def test_key_value_on_a_terminal() -> None:
    stream = FakeTty()
    configure_logging("debug", "auto", stream=stream)
    get_logger("test").debug("frame_stats", frames=3)
    line = stream.getvalue().strip()
    assert "frame_stats" in line
    assert "frames=3" in line
    assert not line.startswith("{")


def test_stdlib_logging_goes_through_the_same_renderer() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    logging.getLogger("aiohttp.server").warning("something odd")
    record = json.loads(stream.getvalue().splitlines()[-1])
    assert record["event"] == "something odd"
    assert record["level"] == "warning"
