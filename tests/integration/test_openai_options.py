"""OpenAI Realtime options agents ask for, through a whole call against the strict fake (which validates
each session.update with the openai package's models): semantic_vad eagerness, idle_timeout_ms,
truncation with retention_ratio; and the price table's models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from bridge.audio.formats import ULAW
from bridge.providers.brief import AgentBrief, resolve
from bridge.providers.openai.dialect import DIALECTS
from bridge.providers.openai.session_config import session_body
from bridge.settings_agents import DEFAULT_PRICES, OpenAISettings
from bridge.simulate import run_simulated_call
from tests.integration.test_openai_relay import call_options, fake_factory, final_record, relay_settings

__all__ = ["fake_factory"]  # the fixture, shared with the relay tests

StartBridge = Callable[..., Any]


@pytest.mark.parametrize(
    ("agent", "turn", "truncation"),
    [
        (
            {"turn_detection": "semantic_vad", "vad_eagerness": "low"},
            {"type": "semantic_vad", "eagerness": "low"},
            "auto",
        ),
        (
            {"idle_timeout_ms": 8000, "truncation": "retention_ratio", "retention_ratio": 0.6},
            {"type": "server_vad", "idle_timeout_ms": 8000},
            {"type": "retention_ratio", "retention_ratio": 0.6},
        ),
        (
            {"truncation": "retention_ratio", "truncation_token_limit": 12000},
            {"type": "server_vad"},
            {"type": "retention_ratio", "retention_ratio": 0.8, "token_limits": {"post_instructions": 12000}},
        ),
        ({"truncation": "disabled"}, {"type": "server_vad"}, "disabled"),
    ],
)
async def test_the_session_carries_the_agents_options(
    bridge_factory: StartBridge,
    fake_factory: Callable[..., Any],
    agent: dict[str, Any],
    turn: dict[str, Any],
    truncation: Any,
) -> None:
    fake = await fake_factory()
    services = await bridge_factory(settings=relay_settings(fake, **agent))
    summary = await run_simulated_call(call_options(services, seconds=1.5))
    assert summary.ok, summary.errors
    fake.assert_clean()  # the openai package's models accepted every event
    session = fake.last.session
    sent_turn = session["audio"]["input"]["turn_detection"]
    assert {key: sent_turn.get(key) for key in turn} == turn
    if turn["type"] == "server_vad" and "idle_timeout_ms" not in turn:
        assert sent_turn.get("idle_timeout_ms") is None  # 0 means off: no idle timeout
    assert session["truncation"] == truncation
    record = await final_record(services, summary.call_id)
    assert record.status == "ended"


def test_xai_gets_neither_truncation_nor_an_idle_timeout() -> None:
    brief = AgentBrief(idle_timeout_ms=5000, truncation="retention_ratio")
    body = session_body(DIALECTS["xai"], brief, resolve(brief), ULAW, ULAW)
    assert "truncation" not in body
    assert "idle_timeout_ms" not in body["turn_detection"]


def test_the_price_table_knows_the_realtime_models() -> None:
    for model in ("gpt-realtime", "gpt-realtime-2025-08-28", "gpt-realtime-mini", "gpt-4o-realtime-preview"):
        assert model in DEFAULT_PRICES
        assert OpenAISettings(model=model).price() == DEFAULT_PRICES[model]
    assert DEFAULT_PRICES["gpt-realtime-mini"].output_audio < DEFAULT_PRICES["gpt-realtime"].output_audio
