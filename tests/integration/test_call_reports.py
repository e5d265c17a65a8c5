"""Post-call reports: the agent's analysis prompt run once on the (fake) text model after each call,
stored, retried on failure and after a restart, and served per company at GET /api/calls/{id}/report."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from bridge.app import Services, start_services
from bridge.session.state import CallState, EndedBy
from bridge.settings import ConfigError, Settings, build_settings
from bridge.settings_checks import missing_secrets
from bridge.simulate import AudioSource, SimulatedCallOptions, run_simulated_call
from tests.fakes.chat_completions import FakeChatCompletions
from tests.helpers import ACME_KEY, ACME_PHONE, CONNECTOR_KEY, GLOBEX_KEY, GLOBEX_PHONE, raw_config

StartBridge = Callable[..., Any]
DEADLINE = 30.0
PROMPT = "Summarise the call and say whether the caller's question was resolved."
FIELDS = {"resolved": "boolean", "topic": "string", "score": "integer", "sentiment": "number"}
VALUES = {"resolved": True, "topic": "opening hours", "score": 4, "sentiment": 0.75}


def report_settings(
    fake: FakeChatCompletions, *, storage: str = "sqlite://:memory:", key: str | None = None
) -> Settings:
    raw = raw_config()
    raw["storage"] = {"url": storage}
    raw["companies"][0]["agent"] = {"provider": "echo", "analysis_prompt": PROMPT, "analysis_fields": FIELDS}
    raw["analysis"] = {
        "url": fake.url,
        "api_key": key or fake.api_key,
        "model": "gpt-4o-mini",
        "timeout_seconds": 10,
    }
    return build_settings(raw)


@pytest.fixture
async def fake() -> AsyncIterator[FakeChatCompletions]:
    server = FakeChatCompletions(values=dict(VALUES))
    await server.start()
    yield server
    await server.close()


async def a_call(services: Services, call_id: str, *, company: str = "acme") -> None:
    """A short echo call over chan_websocket with two transcript lines, ended through the API."""
    options = SimulatedCallOptions(
        url=f"http://127.0.0.1:{services.http_port}",
        connector_key=CONNECTOR_KEY,
        call_id=call_id,
        caller="+34600111222" if company == "acme" else "+15551234567",
        called=ACME_PHONE if company == "acme" else GLOBEX_PHONE,
        send_webhook=False,
        format="ulaw",
        audio=AudioSource(pcm=b"\x00\x00" * 8000, sample_rate=8000),
        seconds=30,
        wait_for_bridge_hangup=True,
    )
    call = asyncio.ensure_future(run_simulated_call(options))
    deadline = time.monotonic() + DEADLINE
    while (session := services.manager.get(call_id)) is None or session.state is not CallState.ACTIVE:
        assert time.monotonic() < deadline, "the call never became active"
        await asyncio.sleep(0.02)
    session.add_line("bot", "Hello, Acme here.")
    session.add_line("caller", "When do you open tomorrow?")
    services.manager.end(call_id, EndedBy.API)
    await asyncio.wait_for(call, DEADLINE)


async def get_report(services: Services, call_id: str, key: str = ACME_KEY) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"http://127.0.0.1:{services.http_port}/api/calls/{call_id}/report", headers={"X-API-Key": key}
        ) as reply,
    ):
        return reply.status, await reply.json()


async def settled(services: Services, call_id: str, key: str = ACME_KEY) -> dict[str, Any]:
    """The report once it is no longer pending."""
    deadline = time.monotonic() + DEADLINE
    while True:
        status, body = await get_report(services, call_id, key)
        assert status == 200, body
        if body["data"]["report_status"] not in ("pending", "call_in_progress"):
            return dict(body["data"])
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.05)


async def test_a_report_holds_the_fake_models_summary_and_the_declared_fields(
    bridge_factory: StartBridge, fake: FakeChatCompletions, store_url: str
) -> None:
    services = await bridge_factory(settings=report_settings(fake, storage=store_url))
    await a_call(services, "rep-1")
    report = await settled(services, "rep-1")
    fake.assert_clean()
    assert report["report_status"] == "done"
    assert report["summary"] == fake.summary
    assert report["post_call_analysis"] == VALUES
    assert report["error"] is None
    assert report["attempts"] == 1
    assert [(line["role"], line["text"]) for line in report["transcript"]] == [
        ("bot", "Hello, Acme here."),
        ("caller", "When do you open tomorrow?"),
    ]
    outcome = report["outcome"]
    assert outcome["status"] == "ended"
    assert outcome["disconnected_by"] == "api"
    assert outcome["duration_seconds"] > 0
    # Asked once, with the prompt, the transcript and the outcome, for exactly the declared schema.
    assert len(fake.requests) == 1
    body = fake.requests[0]
    assert body["model"] == "gpt-4o-mini"
    assert body["messages"][0] == {"role": "system", "content": PROMPT}
    user = body["messages"][1]["content"]
    assert "Caller: When do you open tomorrow?" in user
    assert "status: ended" in user
    schema = body["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"summary", *FIELDS}
    # Another company sees nothing of it: 404, as for an unknown call.
    status, reply = await get_report(services, "rep-1", GLOBEX_KEY)
    assert (status, reply["code"]) == (404, "unknown_call")
    assert (await get_report(services, "no-such-call"))[1]["code"] == "unknown_call"


async def test_without_an_analysis_prompt_the_report_is_the_transcript_and_outcome(
    bridge_factory: StartBridge, fake: FakeChatCompletions
) -> None:
    services = await bridge_factory(settings=report_settings(fake))
    await a_call(services, "globex-1", company="globex")
    report = await settled(services, "globex-1", GLOBEX_KEY)
    assert report["report_status"] == "not_requested"
    assert report["summary"] is None
    assert report["post_call_analysis"] is None
    assert len(report["transcript"]) == 2
    assert report["outcome"]["status"] == "ended"
    assert fake.requests == []


async def test_a_failing_text_model_is_retried_then_the_report_fails_with_its_error(
    bridge_factory: StartBridge, fake: FakeChatCompletions
) -> None:
    services = await bridge_factory(settings=report_settings(fake))
    assert services.reports is not None
    services.reports.retry_delay_seconds = 0.05
    # One failure, then success: done on the second attempt.
    fake.fail_next(1, status=503)
    await a_call(services, "flaky-1")
    report = await settled(services, "flaky-1")
    assert (report["report_status"], report["attempts"]) == ("done", 2)
    assert report["post_call_analysis"] == VALUES
    # Failing every time: failed after the bounded attempts, with the model's error.
    fake.fail_next(services.reports.attempts, status=500)
    await a_call(services, "down-1")
    report = await settled(services, "down-1")
    assert report["report_status"] == "failed"
    assert report["attempts"] == services.reports.attempts
    assert "500" in report["error"]
    assert report["summary"] is None
    assert len(fake.requests) == 2 + services.reports.attempts
    fake.assert_clean()


async def test_a_bad_key_fails_at_once(bridge_factory: StartBridge, fake: FakeChatCompletions) -> None:
    services = await bridge_factory(settings=report_settings(fake, key="sk-wrong"))
    await a_call(services, "badkey-1")
    report = await settled(services, "badkey-1")
    assert (report["report_status"], report["attempts"]) == ("failed", 1)  # 401 is not retried
    assert "401" in report["error"]
    assert "sk-wrong" not in json.dumps(report)


async def test_a_report_pending_at_a_restart_completes_after_it(
    store_url: str, fake: FakeChatCompletions
) -> None:
    settings = report_settings(fake, storage=store_url)
    fake.hold()  # the model never answers before the "crash"
    first = await start_services(settings)
    try:
        await a_call(first, "restart-1")
        deadline = time.monotonic() + DEADLINE
        while not fake.requests:
            assert time.monotonic() < deadline, "the model was never asked"
            await asyncio.sleep(0.02)
        _, body = await get_report(first, "restart-1")
        assert body["data"]["report_status"] == "pending"
    finally:
        await first.close()
    fake.release()
    second = await start_services(settings)
    try:
        report = await settled(second, "restart-1")
        assert report["report_status"] == "done"
        assert report["summary"] == fake.summary
        assert len(fake.requests) == 2  # asked again after the restart
    finally:
        await second.close()


def analysis_problems(raw: dict[str, Any]) -> list[str]:
    try:
        settings = build_settings(raw)
    except ConfigError as exc:
        return [p for p in exc.problems if p.startswith("analysis.")]
    return [p for p in missing_secrets(settings) if p.startswith("analysis.")]


def test_check_config_requires_the_analysis_key_once_an_agent_has_a_prompt() -> None:
    raw = raw_config()
    assert analysis_problems(raw) == []
    raw["companies"][1]["agent"] = {"provider": "echo", "analysis_prompt": "Summarise."}
    assert analysis_problems(raw) == [
        "analysis.api_key: required by the analysis_prompt of companies[1] globex"
    ]
    raw["analysis"] = {"api_key": "env:BRIDGE_TEST_UNSET_ANALYSIS_KEY"}
    problems = analysis_problems(raw)
    assert len(problems) == 1
    assert "BRIDGE_TEST_UNSET_ANALYSIS_KEY is not set" in problems[0]
    raw["analysis"] = {"api_key": "sk-set"}
    assert analysis_problems(raw) == []
