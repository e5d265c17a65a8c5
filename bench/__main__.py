"""Load and latency benchmark: `python -m bench --calls 10,50,100 --seconds 20`.

For each step of the ramp: start a fresh `bridge serve` pinned to core 0 (and the fake OpenAI server for
`--provider openai-fake`), place one warm-up call, read the idle baseline, then run the load generator
(`bench.loadgen`, pinned to core 1) with N concurrent simulated Asterisk calls, sampling the bridge's
/proc meanwhile. Prints a table, then one JSON line with everything. See bench/RESULTS.md for the method.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.daemon import BENCH_PHONE, Bridge, Sampler, pinned, read_proc, start_bridge
from bench.loadgen import SETUP_ALLOWANCE_S, LoadSpec
from bench.report import (
    StepResult,
    build_step,
    hot_functions,
    parse_collapsed,
    render_hot,
    render_markdown_table,
    render_table,
    summary_json,
    verdicts,
)
from bench.stats import ProcSample

BRIDGE_CORE = 0
LOAD_CORE = 1
GENERATOR_START_S = 2.0  # time for the generator processes to import before the common start
WARMUP_SECONDS = 0.6


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
    p.add_argument("--provider", choices=["echo", "openai-fake"], default="echo")
    p.add_argument("--generators", type=int, default=1, help="load generator processes (all on core 1)")
    p.add_argument(
        "--launch-rate", type=float, default=0.0, help="calls/s when placing calls; 0: all at once"
    )
    p.add_argument(
        "--connect-timeout", type=float, default=0.5, help="media socket open timeout (Asterisk: 0.5)"
    )
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
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs, outputs)")
    return p


def _cores(no_pin: bool) -> tuple[int | None, int | None]:
    if no_pin or (os.cpu_count() or 1) < 2:
        return None, None
    return BRIDGE_CORE, LOAD_CORE


def run_generators(
    args: argparse.Namespace,
    bridge: Bridge,
    calls: int,
    workdir: Path,
    seconds: float,
    tag: str,
    allowance_s: float = SETUP_ALLOWANCE_S,
) -> list[dict[str, Any]]:
    """Start `--generators` processes sharing `calls`, all starting at one instant; wait; read outputs."""
    _, load_core = _cores(args.no_pin)
    count = max(1, min(args.generators, calls))
    start_at = time.monotonic() + GENERATOR_START_S
    procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
    for g in range(count):
        share = calls // count + (1 if g < calls % count else 0)
        spec = LoadSpec(
            url=bridge.url,
            connector_key=bridge.connector_key,
            called=BENCH_PHONE,
            calls=share,
            seconds=seconds,
            transport=args.transport,
            format=args.format,
            audiosocket_port=bridge.audiosocket_port or 0,
            start_at=start_at,
            launch_rate=args.launch_rate / count,
            connect_timeout=args.connect_timeout,
            match_frames=args.provider == "echo",
            index_base=g * 100000,
            seed=g + 1,
            allowance_s=allowance_s,
        )
        spec_path = workdir / f"{tag}-gen{g}.spec.json"
        out_path = workdir / f"{tag}-gen{g}.out.json"
        spec_path.write_text(spec.to_json())
        err = (workdir / f"{tag}-gen{g}.stderr").open("wb")
        command = pinned([sys.executable, "-m", "bench.loadgen", str(spec_path), str(out_path)], load_core)
        procs.append(
            (
                subprocess.Popen(command, stderr=err, cwd=Path(__file__).resolve().parent.parent),
                out_path,
                spec_path,
            )
        )
    outputs: list[dict[str, Any]] = []
    for proc, out_path, _ in procs:
        code = proc.wait()
        if code != 0 or not out_path.exists():
            stderr = out_path.with_name(out_path.name.replace(".out.json", ".stderr"))
            raise RuntimeError(f"load generator exited {code}; see {stderr}:\n{stderr.read_text()[-2000:]}")
        outputs.append(json.loads(out_path.read_text()))
    return outputs


def start_py_spy(pid: int, seconds: float, out: Path, core: int | None) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        print("py-spy is not installed in this venv: no profile", file=sys.stderr)
        return None
    command = [str(exe), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    command += ["--rate", "100", "--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(pinned(command, core), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def run_step(
    args: argparse.Namespace, calls: int, root: Path, profile_this: bool
) -> tuple[StepResult, str | None]:
    workdir = root / f"step-{calls}"
    workdir.mkdir()
    bridge_core, load_core = _cores(args.no_pin)
    bridge = start_bridge(
        workdir,
        max_calls=calls * 2 + 10,
        provider=args.provider,
        core=bridge_core,
        fake_core=load_core,
        fake_args=args.fake_arg,
        profile="cprofile" if profile_this and args.profile == "cprofile" else "none",
        log_level=args.log_level,
    )
    profile_text: str | None = None
    try:
        run_generators(args, bridge, 1, workdir, WARMUP_SECONDS, "warmup", allowance_s=0.5)
        time.sleep(0.5)
        baseline: ProcSample | None = read_proc(bridge.pid)
        spy = None
        spy_out = workdir / "py-spy.txt"
        with Sampler(bridge.pid) as sampler:
            if profile_this and args.profile == "py-spy":
                # Sample the steady part only: after the calls are up, before they end.
                def later() -> subprocess.Popen[bytes] | None:
                    time.sleep(GENERATOR_START_S + 3.0)
                    return start_py_spy(bridge.pid, args.seconds - 1.0, spy_out, load_core)

                import threading  # noqa: PLC0415

                holder: list[subprocess.Popen[bytes] | None] = []
                thread = threading.Thread(target=lambda: holder.append(later()), daemon=True)
                thread.start()
            outputs = run_generators(args, bridge, calls, workdir, args.seconds, "load")
            if profile_this and args.profile == "py-spy":
                thread.join()
                spy = holder[0] if holder else None
        if spy is not None:
            _, err = spy.communicate(timeout=60)
            if spy_out.exists():
                profile_text = spy_out.read_text()
            else:
                print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        step = build_step(calls, outputs, sampler.samples, baseline, sampler.machine, os.cpu_count() or 1)
    finally:
        code = bridge.stop()
    if code not in (0, None):
        step.notes.append(f"bridge exited with {code}")
    if profile_this and args.profile == "cprofile":
        profile_text = _cprofile_text(workdir / "bridge.prof")
    if profile_text is not None and args.profile_out is not None:
        args.profile_out.write_text(profile_text)
    return step, profile_text


def _cprofile_text(path: Path) -> str | None:
    if not path.exists():
        return None
    import io  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(25)
    return buf.getvalue()


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_meta(argv: Sequence[str]) -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "?"
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "packages": {
            n: _version(n) for n in ("aiohttp", "websockets", "numpy", "uvloop", "webrtcvad-wheels")
        },
        "commit": commit,
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    profile_calls = args.profile_calls if args.profile_calls is not None else max(args.calls)
    meta = machine_meta(argv)
    meta.update(transport=args.transport, format=args.format, provider=args.provider, seconds=args.seconds)
    steps: list[StepResult] = []
    profile: str | None = None
    root = Path(tempfile.mkdtemp(prefix="bridge-bench-"))
    try:
        for calls in args.calls:
            profile_this = args.profile != "none" and calls == profile_calls
            step, text = run_step(args, calls, root, profile_this)
            steps.append(step)
            if text is not None:
                profile = text
            print(render_table([step]).splitlines()[-1], file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {root}", file=sys.stderr)
        else:
            import shutil  # noqa: PLC0415

            shutil.rmtree(root, ignore_errors=True)
    print(render_table(steps))
    for s in steps:
        print(f"  {s.calls:>4} calls: " + "; ".join(verdicts(s)))
    if profile is not None and args.profile == "py-spy":
        for f in hot_functions(parse_collapsed(profile.splitlines()), top=12):
            print(f"  {f.self_share * 100:5.1f}% self {f.total_share * 100:5.1f}% total  {f.name}")
    print(summary_json(meta, steps))
    if args.markdown is not None:
        args.markdown.write_text(markdown(meta, args, steps, profile))
    return 1 if any(s.failed for s in steps) else 0


if __name__ == "__main__":
    sys.exit(main())
