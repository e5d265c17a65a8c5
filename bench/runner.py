"""One step of a run: a fresh bridge, a warm-up call, the idle baseline, then N calls from the load
generator(s) while /proc is sampled and /metrics scraped; and the profilers around it."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from bench.daemon import (
    BENCH_PHONE,
    FAKE_MODELS,
    Bridge,
    BridgeCode,
    MetricsScraper,
    Sampler,
    pinned,
    read_proc,
    start_bridge,
)
from bench.limits import fds_needed
from bench.loadgen import SETUP_ALLOWANCE_S, LoadSpec
from bench.report import StepResult, build_step
from bench.stats import ProcSample

BRIDGE_CORE = 0
LOAD_CORE = 1
GENERATOR_START_S = 2.0  # time for the generator processes to import before the common start
WARMUP_SECONDS = 0.6
SCRAPE_INTERVAL_S = 1.0


def cores(no_pin: bool) -> tuple[int | None, int | None]:
    if no_pin or (os.cpu_count() or 1) < 2:
        return None, None
    return BRIDGE_CORE, LOAD_CORE


def provider_settings(pairs: list[str], provider: str) -> list[str]:
    """`--provider-setting key=value` as TOML lines for the fake model's section, each checked to parse."""
    if pairs and provider not in FAKE_MODELS:
        raise SystemExit(f"--provider-setting needs a fake model (--provider), not {provider!r}")
    lines = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--provider-setting {pair!r}: expected key=value")
        line = f"{key.strip()} = {value.strip()}"
        try:
            tomllib.loads(line)
        except tomllib.TOMLDecodeError as exc:
            raise SystemExit(f"--provider-setting {pair!r}: not key=TOML value ({exc})") from exc
        lines.append(line)
    return lines


def launch_rate(args: argparse.Namespace, calls: int) -> float:
    """Calls per second for this step: a burst places all `calls` within `--burst-window` seconds."""
    if args.burst:
        return calls / args.burst_window if args.burst_window > 0 else 0.0
    return float(args.launch_rate)


def setup_allowance(calls: int, rate: float) -> float:
    """Calls last `seconds` plus this: time for every call to be placed and set up, so the steady window
    (all calls up, none hung up yet) stays about `seconds` long however slowly calls are placed."""
    placing = calls / rate if rate > 0 else 0.0  # the last call is placed within its slot's 1/rate
    return SETUP_ALLOWANCE_S + placing


def run_generators(
    args: argparse.Namespace,
    bridge: Bridge,
    calls: int,
    workdir: Path,
    seconds: float,
    tag: str,
    allowance_s: float | None = None,
    routes: tuple[tuple[str, str], ...] = (),
) -> list[dict[str, Any]]:
    """Start `--generators` processes sharing `calls`, all starting at one instant; wait; read outputs.
    `routes`: (webhook URL, media URL) pairs the calls take in turn (the fleet path)."""
    _, load_core = cores(args.no_pin)
    count = max(1, min(args.generators, calls))
    rate = launch_rate(args, calls) if tag == "load" else 0.0
    allowance = setup_allowance(calls, rate) if allowance_s is None else allowance_s
    start_at = time.monotonic() + GENERATOR_START_S
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
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
            launch_rate=rate / count,
            connect_timeout=args.connect_timeout,
            match_frames=args.provider == "echo",
            index_base=g * 100000,
            seed=g + 1,
            allowance_s=allowance,
            routes=routes,
        )
        spec_path = workdir / f"{tag}-gen{g}.spec.json"
        out_path = workdir / f"{tag}-gen{g}.out.json"
        spec_path.write_text(spec.to_json())
        err = (workdir / f"{tag}-gen{g}.stderr").open("wb")
        command = pinned([sys.executable, "-m", "bench.loadgen", str(spec_path), str(out_path)], load_core)
        repo = Path(__file__).resolve().parent.parent
        procs.append((subprocess.Popen(command, stderr=err, cwd=repo), out_path))
    outputs: list[dict[str, Any]] = []
    for proc, out_path in procs:
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
    args: argparse.Namespace,
    calls: int,
    root: Path,
    profile_this: bool,
    code: BridgeCode | None = None,
) -> tuple[StepResult, str | None]:
    workdir = root / f"step-{calls}"
    workdir.mkdir(parents=True)
    bridge_core, load_core = cores(args.no_pin)
    bridge = start_bridge(
        workdir,
        max_calls=calls * 2 + 10,
        provider=args.provider,
        core=bridge_core,
        fake_core=load_core,
        fake_args=args.fake_arg,
        provider_settings=provider_settings(args.provider_setting, args.provider),
        profile="cprofile" if profile_this and args.profile == "cprofile" else "none",
        log_level=args.log_level,
        code=code,
    )
    profile_text: str | None = None
    try:
        run_generators(args, bridge, 1, workdir, WARMUP_SECONDS, "warmup", allowance_s=0.5)
        time.sleep(0.5)
        baseline: ProcSample | None = read_proc(bridge.pid)
        spy = None
        spy_out = workdir / "py-spy.txt"
        holder: list[subprocess.Popen[bytes] | None] = []
        thread: threading.Thread | None = None
        with (
            Sampler(bridge.pid) as sampler,
            MetricsScraper(bridge.url + "/metrics", SCRAPE_INTERVAL_S) as scraper,
        ):
            if profile_this and args.profile == "py-spy":
                # Sample the steady part only: after the calls are up, before they end.
                def later() -> subprocess.Popen[bytes] | None:
                    time.sleep(GENERATOR_START_S + setup_allowance(calls, launch_rate(args, calls)) - 1.0)
                    return start_py_spy(bridge.pid, args.seconds - 1.0, spy_out, load_core)

                thread = threading.Thread(target=lambda: holder.append(later()), daemon=True)
                thread.start()
            outputs = run_generators(args, bridge, calls, workdir, args.seconds, "load")
            if thread is not None:
                thread.join()
                spy = holder[0] if holder else None
        if spy is not None:
            _, err = spy.communicate(timeout=60)
            if spy_out.exists():
                profile_text = spy_out.read_text()
            else:
                print(f"py-spy failed: {err.decode(errors='replace')[-500:]}", file=sys.stderr)
        step = build_step(
            calls,
            outputs,
            sampler.samples,
            baseline,
            sampler.machine,
            os.cpu_count() or 1,
            scrapes=scraper.scrapes,
            line_ms=args.connect_timeout * 1000,
        )
    finally:
        exit_code = bridge.stop()
    if exit_code not in (0, None):
        step.notes.append(f"bridge exited with {exit_code}")
    if profile_this and args.profile == "cprofile":
        profile_text = cprofile_text(workdir / "bridge.prof")
    if profile_text is not None and args.profile_out is not None:
        args.profile_out.write_text(profile_text)
    return step, profile_text


def fd_warning(calls: int, soft_limit: int) -> str | None:
    """A note when this step needs more descriptors than the (raised) soft limit allows."""
    need = fds_needed(calls)
    if need <= soft_limit:
        return None
    return f"{calls} calls need about {need} file descriptors per process; the limit is {soft_limit}"


def cprofile_text(path: Path) -> str | None:
    if not path.exists():
        return None
    import io  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    buf = io.StringIO()
    pstats.Stats(str(path), stream=buf).sort_stats("tottime").print_stats(25)
    return buf.getvalue()
