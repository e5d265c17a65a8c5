"""`--compare`: ratios between two revisions' results (bench/compare.py) and how a revision's bridge is
found (bench/revisions.py: the repository is only read)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare import CompareRow, compare_rows, compare_table, median, ratio
from bench.daemon import BridgeCode
from bench.report import StepResult
from bench.revisions import (
    REPO,
    bridge_code,
    export_tree,
    parse_compare,
    requirements_key,
    resolve,
    runtime_requirements,
    satisfied_here,
)
from bench.stats import Dist


def _step(calls: int, cpu: float | None, underruns: int | None = 0, p99: float | None = 4.0) -> StepResult:
    return StepResult(
        calls=calls,
        failed=0,
        failure_kinds={},
        window_s=10.0,
        bridge_cpu_percent=None if cpu is None else cpu * calls,
        cpu_per_call=cpu,
        baseline_rss_mb=70.0,
        peak_rss_mb=75.0,
        mb_per_call=0.05,
        latency=Dist(100, 1.0, p99, 9.0),
        matched=100,
        lost=0,
        playout_gaps=0,
        playout_missing=0,
        arrival_gaps=0,
        arrival_bursts=0,
        max_lead_ms=None,
        drops=0,
        xoff=0,
        barge_ins=0,
        setup_ms=Dist.of([10.0, 20.0]),
        first_audio_ms=Dist.of([200.0]),
        setup_rate=None,
        generator_cpu_percent=None,
        generator_lag_ms=Dist.of([]),
        underruns=underruns,
        silence=5,
    )


def _row(rows: list[CompareRow], calls: int, metric: str) -> CompareRow:
    return next(r for r in rows if r.calls == calls and r.metric == metric)


def test_ratio_and_median() -> None:
    assert ratio(0.5, 0.25) == 0.5
    assert ratio(0.0, 0.0) == 1.0  # both zero: no change
    assert ratio(0.0, 3.0) is None  # from nothing to something has no ratio
    assert ratio(None, 1.0) is None
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None


def test_compare_rows_use_medians_of_alternating_runs() -> None:
    runs_a = [[_step(50, 0.60), _step(200, 0.40)], [_step(50, 0.50), _step(200, 0.44)], [_step(50, 0.70)]]
    runs_b = [
        [_step(50, 0.30), _step(200, 0.20, underruns=3)],
        [_step(50, 0.35), _step(200, 0.22, underruns=1)],
    ]
    rows = compare_rows(runs_a, runs_b)
    cpu50 = _row(rows, 50, "cpu%/call")
    assert cpu50.a == pytest.approx(0.60)  # median of 0.60, 0.50, 0.70
    assert cpu50.b == pytest.approx(0.325)
    assert cpu50.ratio == pytest.approx(0.325 / 0.60)
    under200 = _row(rows, 200, "underruns")
    assert (under200.a, under200.b, under200.ratio) == (0.0, 2.0, None)
    assert _row(rows, 200, "silence").ratio == 1.0
    assert _row(rows, 50, "up p99 ms").ratio is None  # no histogram on either side


def test_compare_rows_only_for_steps_both_sides_ran() -> None:
    rows = compare_rows([[_step(10, 1.0), _step(50, 0.5)]], [[_step(50, 0.4), _step(100, 0.3)]])
    assert {r.calls for r in rows} == {50}


def test_compare_table_renders_missing_values() -> None:
    rows = compare_rows([[_step(50, None)]], [[_step(50, 0.4)]])
    table = compare_table(rows, "A", "B")
    assert table[0] == ["calls", "metric", "A", "B", "B/A"]
    cpu = next(r for r in table if r[1] == "cpu%/call")
    assert cpu == ["50", "cpu%/call", "-", "0.4", "-"]
    assert next(r for r in table if r[1] == "lat p99 ms") == ["50", "lat p99 ms", "4", "4", "1.00"]


def test_parse_compare_forms() -> None:
    assert parse_compare("HEAD~1,HEAD") == ("HEAD~1", "HEAD")
    assert parse_compare("abc", "def") == ("abc", "def")
    for bad in ("HEAD", "a,b,c", ",HEAD"):
        with pytest.raises(ValueError, match="two revisions"):
            parse_compare(bad)


def test_runtime_requirements_and_key() -> None:
    text = """
[project]
dependencies = ["numpy>=1.26", "aiohttp>=3.14"]
[project.optional-dependencies]
fast = ["uvloop>=0.19"]
test = ["pytest>=8"]
"""
    reqs = runtime_requirements(text)
    assert reqs == ["aiohttp>=3.14", "numpy>=1.26", "uvloop>=0.19"]  # no test tools
    assert requirements_key(reqs) == requirements_key(list(reqs))
    assert requirements_key(reqs) != requirements_key([*reqs, "prometheus-client>=0.20"])


def test_requirements_satisfied_by_this_interpreter() -> None:
    assert satisfied_here(["numpy>=1", "aiohttp"])
    assert satisfied_here(["no-such-package-here; python_version < '3'"])  # the marker rules it out
    assert not satisfied_here(["numpy<1"])
    assert not satisfied_here(["no-such-package-here-either>=1"])
    assert not satisfied_here(["not a requirement !!"])


def test_resolve_revisions() -> None:
    assert resolve(".") is None
    assert resolve("WORKTREE") is None
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=REPO)
    assert resolve("HEAD") == head.stdout.strip()
    with pytest.raises(ValueError, match="not a commit"):
        resolve("no-such-revision-anywhere")


def test_export_tree_and_bridge_code_for_head(tmp_path: Path) -> None:
    tree = export_tree(resolve("HEAD") or "", tmp_path / "tree")
    assert (tree / "pyproject.toml").is_file()
    assert (tree / "bridge" / "__init__.py").is_file()
    assert not (tree / ".git").exists()
    if not satisfied_here(runtime_requirements((tree / "pyproject.toml").read_text())):
        pytest.skip("this venv lacks HEAD's runtime dependencies (a test must not install a venv)")
    code = bridge_code("HEAD", tmp_path / "codes", cache=tmp_path / "cache")
    assert code.source is not None
    assert (code.source / "bridge" / "__main__.py").is_file()
    # this venv (installed from this checkout) has HEAD's runtime dependencies: no venv is made
    assert code.python == sys.executable
    assert not (tmp_path / "cache").exists()
    env = code.env()
    assert env["PYTHONPATH"].split(":")[0] == str(code.source)
    # ... and that interpreter imports the exported tree, not this checkout
    done = subprocess.run(
        [code.python, "-c", "import bridge; print(bridge.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tmp_path,
    )
    assert done.stdout.strip() == str(code.source / "bridge" / "__init__.py")


def test_working_tree_code_is_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    code = BridgeCode()
    assert code.python == sys.executable
    assert code.env()["PYTHONPATH"] == "/somewhere"  # untouched: the installed (editable) bridge runs
    exported = BridgeCode(source=Path("/tmp/tree"))
    assert exported.env()["PYTHONPATH"] == "/tmp/tree:/somewhere"
