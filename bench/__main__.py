"""Load and latency benchmark: `python -m bench --calls 10,50,100,200,500 --seconds 20`.

For each step of the ramp: start a fresh `bridge serve` pinned to core 0 (and the fake OpenAI server for
`--provider openai-fake`), place one warm-up call, read the idle baseline, then run the load generator
(`bench.loadgen`, pinned to core 1) with N concurrent simulated Asterisk calls, sampling the bridge's
/proc and scraping its /metrics meanwhile. Prints a table, then one JSON line with everything.
`--burst` places each step's calls within `--burst-window` seconds and reports setup against Asterisk's
500 ms line; `--compare A,B` runs the same steps against two revisions and prints the ratio B / A.
`--fleet` runs each step three ways on a private Redis and PostgreSQL (one plain SQLite bridge; one
`[cluster]` node; `--nodes` nodes with every call's webhook on one node and its media on another) and
prints setup latency and calls, CPU and RSS per node for each (bench/fleet.py).
See bench/RESULTS.md for the method.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.compare import compare_rows, compare_table
from bench.daemon import FAKE_MODELS, BridgeCode
from bench.limits import raise_nofile_limit
from bench.report import (
    StepResult,
    burst_rows,
    hot_functions,
    parse_collapsed,
    render_hot,
    render_markdown_rows,
    render_markdown_table,
    render_rows,
    render_table,
    summary_json,
    verdicts,
)
from bench.revisions import bridge_code, cache_dir, parse_compare
from bench.runner import fd_warning, run_step


def parse_calls(text: str) -> list[int]:
    """`100` or a ramp `10,50,100,200`."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--calls takes N or N1,N2,...: {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("--calls needs positive numbers")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--calls", type=parse_calls, default=[10], help="concurrent calls, or a ramp: 10,50,100")
    p.add_argument("--seconds", type=float, default=20.0, help="steady-state seconds per step (default 20)")
    p.add_argument("--transport", choices=["chan_websocket", "audiosocket"], default="chan_websocket")
    p.add_argument("--format", choices=["ulaw", "slin16", "slin24"], default="slin16")
    p.add_argument("--provider", choices=["echo", *FAKE_MODELS], default="echo")
    p.add_argument("--generators", type=int, default=1, help="load generator processes (all on core 1)")
    p.add_argument(
        "--launch-rate", type=float, default=0.0, help="calls/s when placing calls; 0: all at once"
    )
    p.add_argument(
        "--burst",
        action="store_true",
        help="place each step's calls within --burst-window seconds and report setup (webhook, upgrade)",
    )
    p.add_argument(
        "--burst-window", type=float, default=1.0, help="seconds to place a burst in (0: all at once)"
    )
    p.add_argument(
        "--connect-timeout", type=float, default=0.5, help="media socket open timeout (Asterisk: 0.5)"
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="REV",
        default=None,
        help="run the steps against two revisions (A,B or A B; '.' = this working tree) and print B/A",
    )
    p.add_argument("--repeat", type=int, default=1, help="with --compare: runs per side, alternating A,B")
    p.add_argument(
        "--fleet",
        action="store_true",
        help="single process vs fleet path (webhook on one node, media on another) on private Redis, "
        "PostgreSQL",
    )
    p.add_argument("--nodes", type=int, default=2, help="with --fleet: bridge nodes in the fleet path")
    p.add_argument("--venv-cache", type=Path, default=None, help="where --compare keeps venvs it makes")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes with taskset")
    p.add_argument(
        "--profile",
        choices=["none", "py-spy", "cprofile"],
        default="none",
        help="profile the bridge at one step (py-spy: sampling, needs ptrace; cprofile: slows the bridge)",
    )
    p.add_argument(
        "--profile-calls", type=int, default=None, help="the step to profile (default: the largest)"
    )
    p.add_argument("--profile-out", type=Path, default=None, help="where to keep the raw profile")
    p.add_argument("--markdown", type=Path, default=None, help="write the run as a Markdown section here")
    p.add_argument(
        "--fake-arg", action="append", default=[], help="extra argument for the fake OpenAI server"
    )
    p.add_argument(
        "--provider-setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a line for the fake model's [providers.*] section, VALUE in TOML (uplink_batch_ms=40)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, outputs)")
    return p


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine_meta(argv: Sequence[str]) -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "packages": {
            n: _version(n) for n in ("aiohttp", "websockets", "numpy", "uvloop", "webrtcvad-wheels")
        },
        "commit": _head(),
        "command": "python -m bench " + shlex.join(argv),
        "taskset": not argv or "--no-pin" not in argv,
    }


def markdown(
    meta: dict[str, Any], args: argparse.Namespace, steps: Sequence[StepResult], profile: str | None
) -> str:
    pk = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
    lines = [
        f"### {args.transport} / {args.format} / {args.provider}, {args.seconds:g} s per step",
        "",
        f"- Command: `{meta['command']}`",
        f"- Machine: {meta['cores']} cores, {meta['cpu']}; Python {meta['python']}; {pk}",
        f"- Commit: `{meta['commit']}`",
        "",
        render_markdown_table(steps),
        "",
    ]
    if args.burst:
        lines += [render_markdown_rows(burst_rows(steps)), ""]
    for s in steps:
        extra = f"; failures: {s.failure_kinds}" if s.failed else ""
        lines.append(
            f"- {s.calls} calls: "
            + "; ".join(verdicts(s))
            + f"; window {s.window_s:g} s, {s.matched} frames matched, {s.lost} lost, "
            f"barge-ins {s.barge_ins}, "
            f"max lead {s.max_lead_ms} ms, first audio p50 {s.first_audio_ms.p50} ms{extra}"
        )
    if profile is not None and args.profile == "py-spy":
        lines += [
            "",
            "Hottest functions (py-spy, self time):",
            "",
            render_hot(hot_functions(parse_collapsed(profile.splitlines()))),
        ]
    elif profile is not None:
        lines += ["", "```", profile.strip()[:6000], "```"]
    return "\n".join(lines) + "\n"


def run_ramp(
    args: argparse.Namespace, root: Path, code: BridgeCode | None = None
) -> tuple[list[StepResult], str | None]:
    """Every step of `--calls` against one bridge build; one line per step on stderr as it finishes."""
    profile_calls = args.profile_calls if args.profile_calls is not None else max(args.calls)
    steps: list[StepResult] = []
    profile: str | None = None
    for calls in args.calls:
        profile_this = args.profile != "none" and calls == profile_calls
        step, text = run_step(args, calls, root, profile_this, code)
        steps.append(step)
        if text is not None:
            profile = text
        label = f"[{code.label}] " if code is not None else ""
        print(label + render_table([step]).splitlines()[-1], file=sys.stderr, flush=True)
    return steps, profile


def print_steps(args: argparse.Namespace, steps: Sequence[StepResult]) -> None:
    print(render_table(steps))
    if args.burst:
        print()
        print(render_rows(burst_rows(steps)))
    for s in steps:
        print(f"  {s.calls:>4} calls: " + "; ".join(verdicts(s)))


def main_compare(args: argparse.Namespace, meta: dict[str, Any], root: Path) -> int:
    try:
        if len(args.compare) > 2:
            raise ValueError(f"--compare takes two revisions, A,B or A B: {' '.join(args.compare)!r}")
        rev_a, rev_b = parse_compare(*args.compare)
        code_a = bridge_code(rev_a, root, args.venv_cache or cache_dir())
        code_b = bridge_code(rev_b, root, args.venv_cache or cache_dir())
    except ValueError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 2
    runs: dict[str, list[list[StepResult]]] = {"A": [], "B": []}
    for i in range(max(1, args.repeat)):
        for side, code in (("A", code_a), ("B", code_b)):  # alternating: drift hits both sides alike
            steps, _ = run_ramp(args, root / f"run{i + 1}-{side}", code)
            runs[side].append(steps)
            print(f"\n{side} = {code.label}, run {i + 1}")
            print_steps(args, steps)
            print(summary_json({**meta, "side": side, "code": code.label, "run": i + 1}, steps))
    rows = compare_rows(runs["A"], runs["B"])
    table = compare_table(rows, f"A {code_a.label}", f"B {code_b.label}")
    medians = " (medians of " + str(args.repeat) + " runs each)" if args.repeat > 1 else ""
    print(f"\nB / A{medians}")
    print(render_rows(table))
    if args.markdown is not None:
        text = [
            f"### Compare: A = {code_a.label}, B = {code_b.label}",
            "",
            f"- Command: `{meta['command']}`",
            f"- Harness: `{meta['commit']}` (this tree's load generator and fake model for both sides)",
            "",
            render_markdown_rows(table),
            "",
        ]
        args.markdown.write_text("\n".join(text))
    return 1 if any(s.failed for side in runs.values() for run in side for s in run) else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    soft, _ = raise_nofile_limit()  # the bridge, the fake model and the generators inherit it
    for calls in args.calls:
        warning = fd_warning(calls, soft)
        if warning is not None:
            print(f"warning: {warning}", file=sys.stderr)
    meta = machine_meta(argv)
    meta.update(
        transport=args.transport,
        format=args.format,
        provider=args.provider,
        provider_settings=args.provider_setting,
        seconds=args.seconds,
        burst=args.burst,
        nofile=soft,
    )
    root = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    try:
        if args.compare is not None:
            return main_compare(args, meta, root)
        if args.fleet:
            from bench.fleet import main_fleet  # noqa: PLC0415  (needs the fleet extra: redis, psycopg)

            return main_fleet(args, meta, root)
        steps, profile = run_ramp(args, root)
    finally:
        if args.keep:
            print(f"work directory kept: {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print_steps(args, steps)
    if profile is not None and args.profile == "py-spy":
        for f in hot_functions(parse_collapsed(profile.splitlines()), top=12):
            print(f"  {f.self_share * 100:5.1f}% self {f.total_share * 100:5.1f}% total  {f.name}")
    print(summary_json(meta, steps))
    if args.markdown is not None:
        args.markdown.write_text(markdown(meta, args, steps, profile))
    return 1 if any(s.failed for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
