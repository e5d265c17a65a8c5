"""The worker supervisor's decisions (bridge/workers/policy.py) and the `--workers` checks."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest

from bridge.settings import build_settings
from bridge.workers.entry import worker_settings, workers_problem
from bridge.workers.policy import (
    GiveUp,
    Restart,
    RestartPolicy,
    after_exit,
    describe_exit,
    parse_notification,
    stop_status,
)

POLICY = RestartPolicy(first_delay=0.5, max_delay=4.0, stable_seconds=30.0, max_failures=5)


def exits(runs: list[float], returncode: int = 1) -> list[Restart | GiveUp]:
    """The decisions for a worker that ran `runs` seconds each time, in a row."""
    decisions: list[Restart | GiveUp] = []
    failures = 0
    for ran in runs:
        decision = after_exit(
            POLICY, failures=failures, ran_seconds=ran, was_ready=True, returncode=returncode
        )
        decisions.append(decision)
        if isinstance(decision, Restart):
            failures = decision.failures
    return decisions


def test_quick_exits_back_off_then_give_up() -> None:
    decisions = exits([1, 1, 1, 1, 1])
    assert decisions[:4] == [Restart(0.5, 1), Restart(1.0, 2), Restart(2.0, 3), Restart(4.0, 4)]
    assert isinstance(decisions[4], GiveUp)
    assert decisions[4].exit_code == 1
    assert "5 times in a row" in decisions[4].reason


def test_the_delay_is_capped() -> None:
    assert [POLICY.delay(n) for n in (1, 2, 3, 4, 5, 10)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_worker_that_ran_long_enough_starts_its_count_again() -> None:
    assert exits([1, 1, 1, 60, 1, 1]) == [
        Restart(0.5, 1),
        Restart(1.0, 2),
        Restart(2.0, 3),
        Restart(0.5, 1),  # it had recovered: this is a new, first failure
        Restart(1.0, 2),
        Restart(2.0, 3),
    ]


def test_a_killed_worker_is_restarted_at_once_even_when_it_exited_cleanly() -> None:
    assert exits([120], returncode=-signal.SIGKILL) == [Restart(0.5, 1)]
    assert exits([120], returncode=0) == [Restart(0.5, 1)]


def test_a_refused_configuration_gives_up_at_once_with_status_2() -> None:
    decision = after_exit(POLICY, failures=0, ran_seconds=0.5, was_ready=False, returncode=2)
    assert decision == GiveUp("a worker refused its configuration (exit status 2)", 2)
    # After serving, an exit status 2 is just a crash.
    after_ready = after_exit(POLICY, failures=0, ran_seconds=0.5, was_ready=True, returncode=2)
    assert after_ready == Restart(0.5, 1)


def test_stop_status() -> None:
    assert stop_status([0, 0]) == 0
    assert stop_status([0, -signal.SIGTERM, -signal.SIGINT]) == 0  # stopped before its handler was set
    assert stop_status([0, 1]) == 1
    assert stop_status([0, -signal.SIGKILL]) == 1
    assert stop_status([]) == 0


def test_describe_exit() -> None:
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(-9) == "signal SIGKILL"
    assert describe_exit(-200) == "signal 200"


def test_parse_notification() -> None:
    assert parse_notification(b"READY=1\nSTATUS=serving on x=y\n") == {
        "READY": "1",
        "STATUS": "serving on x=y",
    }
    assert parse_notification(b"garbage\n\xff=1") == {"\ufffd": "1"}


def settings(**sections: Any) -> Any:
    return build_settings(sections)


CLUSTER = {"redis_url": "redis://127.0.0.1:6379/0", "node_id": "node-a"}


@pytest.mark.parametrize(
    ("workers", "sections", "has_path", "fragment"),
    [
        (1, {}, False, None),
        (2, {"cluster": CLUSTER}, True, None),
        (2, {}, True, "--workers 2 needs a [cluster] section"),
        (3, {"cluster": CLUSTER}, False, "needs a config file"),
        (2, {"cluster": CLUSTER, "server": {"port": 0}}, True, "needs fixed ports"),
        (2, {"cluster": CLUSTER, "audiosocket": {"port": 0}}, True, "needs fixed ports"),
        (2, {"cluster": CLUSTER, "audiosocket": {"port": 0, "enabled": False}}, True, None),
        (10, {"cluster": {**CLUSTER, "node_id": "n" * 63}}, True, "node_id is too long"),
    ],
)
def test_workers_problem(
    workers: int, sections: dict[str, Any], has_path: bool, fragment: str | None
) -> None:
    problem = workers_problem(workers, settings(**sections), Path("bridge.toml") if has_path else None)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None
        assert fragment in problem
        assert "\n" not in problem


def test_each_worker_is_its_own_node() -> None:
    base = settings(cluster=CLUSTER, server={"port": 8080})
    second = worker_settings(base, 2)
    assert second.cluster is not None
    assert second.cluster.node_id == "node-a-2"
    assert second.cluster.redis_url == CLUSTER["redis_url"]
    assert second.server == base.server
    assert base.cluster is not None
    assert base.cluster.node_id == "node-a"  # the parent's copy is untouched
