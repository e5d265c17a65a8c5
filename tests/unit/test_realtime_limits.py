"""Realtime provider settings for the uplink, and the descriptor budget arithmetic."""

from __future__ import annotations

import pytest

from bridge.fdlimit import (
    BASE_DESCRIPTORS,
    DESCRIPTORS_PER_CALL,
    calls_within,
    descriptor_problem,
    descriptors_needed,
)
from bridge.settings import ConfigError, build_settings
from tests.helpers import raw_config


@pytest.mark.parametrize("provider", ["openai", "azure_openai", "xai"])
def test_uplink_batch_is_whole_frames(provider: str) -> None:
    raw = raw_config()
    raw["providers"] = {provider: {"uplink_batch_ms": 60}}
    assert build_settings(raw).providers.realtime(provider).uplink_batch_ms == 60
    for bad, why in ((30, "not a multiple of 20"), (0, "greater than or equal to 20"), (220, "less than")):
        raw["providers"] = {provider: {"uplink_batch_ms": bad}}
        with pytest.raises(ConfigError) as caught:
            build_settings(raw)
        assert any(f"providers.{provider}.uplink_batch_ms" in p and why in p for p in caught.value.problems)


def test_the_descriptor_budget() -> None:
    assert descriptors_needed(200) == BASE_DESCRIPTORS + 200 * DESCRIPTORS_PER_CALL
    assert descriptor_problem(200, 65536) is None
    assert descriptor_problem(200, descriptors_needed(200)) is None
    problem = descriptor_problem(200, 512)
    assert problem is not None
    assert "max_calls = 200" in problem
    assert f"needs about {descriptors_needed(200)}" in problem
    assert "may open only 512" in problem
    assert f"to {calls_within(512)} or less" in problem
    assert descriptor_problem(calls_within(512), 512) is None
    assert descriptor_problem(calls_within(512) + 1, 512) is not None
    assert calls_within(10) == 0
