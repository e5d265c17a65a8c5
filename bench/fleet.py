"""`python -m bench --fleet`: the fleet path against the single-process path, in one run.

For each N of `--calls`, three paths, each on fresh processes (same generator, same audio, same pinning):
- `sqlite`: one plain `bridge serve` (no `[cluster]`, SQLite): today's baseline;
- `single`: one node with `[cluster]` on the run's Redis and a fresh PostgreSQL database, webhook and
  media socket on that node (only the path differs from `fleet`);
- `fleet`: `--nodes` nodes on the same Redis and a fresh database; call i posts its webhook to node
  i mod K and opens its media socket on node i+1 mod K, so every call crosses nodes (the media node takes
  the pending call over through Redis) and the calls spread evenly.
The bridges share core 0 (as the single bridge has it alone), the generator, Redis and PostgreSQL core 1.
Per node: the calls it ended (`call_ended` in its log), CPU % of one core and RSS above its idle baseline,
per call it ran. Setup is today's `webhook + socket` (POST connect until the first caller frame).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.daemon import Bridge, Sampler, read_proc, start_bridge
from bench.report import StepResult, build_step
from bench.runner import WARMUP_SECONDS, cores, provider_settings, run_generators
from bench.services import PostgresProcess, RedisProcess, ServiceMissing
from bench.stats import cpu_percent, max_rss_kb, percentile

PATHS = ("sqlite", "single", "fleet")
HEARTBEAT_S = 2.0  # the contract's defaults: the registry traffic an operator would run with
NODE_TTL_S = 10.0
LOG_SETTLE_S = 0.5  # the nodes log `call_ended` as the generator hangs up; let the last lines land


def fleet_routes(urls: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """(webhook URL, media URL) per call in turn: node j's webhook with node j+1's media, so with two or
    more nodes every call crosses nodes and each node takes the same share of webhooks and media."""
    n = len(urls)
    if n == 0:
        raise ValueError("no nodes")
    return tuple((urls[j], urls[(j + 1) % n]) for j in range(n))


def cluster_section(redis_url: str, node_id: str) -> str:
    return (
        f'[cluster]\nredis_url = "{redis_url}"\nnode_id = "{node_id}"\n'
        f"heartbeat_seconds = {HEARTBEAT_S}\nnode_ttl_seconds = {NODE_TTL_S}\n"
    )


def count_events(log: Path, offset: int, name: str) -> int:
    """JSON log lines named `name` after byte `offset` (this step's calls, not the warm-up's)."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", errors="replace")
    count = 0
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            count += 1
    return count


@dataclass(frozen=True, slots=True)
class NodeResult:
    calls: int  # calls this node ran (and ended)
    taken_over: int  # of them, announced by another node's webhook
    cpu_percent: float | None
    cpu_per_call: float | None
    mb_per_call: float | None


@dataclass(slots=True)
class PathResult:
    path: str
    calls: int
    failed: int
    failure_kinds: dict[str, int]
    setup_ms: dict[str, float | None]  # p50/p95/p99/max of webhook + socket
    webhook_ms: dict[str, float | None]
    socket_ms: dict[str, float | None]
    nodes: list[NodeResult]
    generator_cpu_percent: float | None
    generator_lag_p99_ms: float | None
    other_cpu_percent: float | None  # machine busy minus bridges and generator (Redis, PostgreSQL in it)
    steal_percent: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "p50": round(percentile(ordered, 50), 1),
        "p95": round(percentile(ordered, 95), 1),
        "p99": round(percentile(ordered, 99), 1),
        "max": round(ordered[-1], 1),
    }


def _node_result(
    bridge: Bridge, sampler: Sampler, baseline_kb: int, offset: int, w0: float, w1: float
) -> NodeResult:
    ran = count_events(bridge.log_path, offset, "call_ended")
    cpu = cpu_percent(sampler.samples, w0, w1) if w1 > w0 else None
    peak = max_rss_kb(sampler.samples, w0, w1) if w1 > w0 else None
    mb = (peak - baseline_kb) / 1024 if peak is not None else None
    return NodeResult(
        calls=ran,
        taken_over=count_events(bridge.log_path, offset, "call_taken_over"),
        cpu_percent=None if cpu is None else round(cpu, 1),
        cpu_per_call=None if cpu is None or ran == 0 else round(cpu / ran, 3),
        mb_per_call=None if mb is None or ran == 0 else round(mb / ran, 3),
    )


def _path_result(
    path: str, step: StepResult, outputs: Sequence[dict[str, Any]], nodes: list[NodeResult]
) -> PathResult:
    records = [c for out in outputs for c in out["calls"]]
    ok = [c for c in records if "webhook_ms" in c and "socket_ms" in c]
    bridges = sum(n.cpu_percent or 0.0 for n in nodes)
    other = None
    if step.machine_busy_percent is not None:
        other = round(max(0.0, step.machine_busy_percent - bridges - (step.generator_cpu_percent or 0.0)), 1)
    return PathResult(
        path=path,
        calls=step.calls,
        failed=step.failed,
        failure_kinds=step.failure_kinds,
        setup_ms=quantiles([c["webhook_ms"] + c["socket_ms"] for c in ok]),
        webhook_ms=quantiles([c["webhook_ms"] for c in ok]),
        socket_ms=quantiles([c["socket_ms"] for c in ok]),
        nodes=nodes,
        generator_cpu_percent=step.generator_cpu_percent,
        generator_lag_p99_ms=step.generator_lag_ms.p99,
        other_cpu_percent=other,
        steal_percent=step.steal_percent,
        notes=step.notes,
    )


def run_path(
    args: argparse.Namespace, path: str, calls: int, root: Path, redis: RedisProcess, pg: PostgresProcess
) -> PathResult:
    workdir = root / f"{path}-{calls}"
    bridge_core, load_core = cores(args.no_pin)
    count = args.nodes if path == "fleet" else 1
    connector_key = secrets.token_urlsafe(24)
    store_url = None if path == "sqlite" else pg.database()
    if path != "sqlite":
        redis.flush()
    bridges: list[Bridge] = []
    try:
        for j in range(count):
            nodedir = workdir / f"node{j}"
            nodedir.mkdir(parents=True)
            extra = "" if path == "sqlite" else cluster_section(redis.url(), f"bench-{j}")
            bridges.append(
                start_bridge(
                    nodedir,
                    max_calls=calls * 2 + 10,
                    provider=args.provider,
                    core=bridge_core,
                    fake_core=load_core,
                    log_level=args.log_level,
                    connector_key=connector_key,
                    store_url=store_url,
                    extra_config=extra,
                    provider_settings=provider_settings(args.provider_setting, args.provider),
                )
            )
        routes = fleet_routes([b.url for b in bridges])
        # One warm-up call per route: every node has served both halves of the path once.
        run_generators(args, bridges[0], len(routes), workdir, WARMUP_SECONDS, "warmup", 0.5, routes)
        time.sleep(0.5)
        baselines = [read_proc(b.pid).rss_kb for b in bridges]
        offsets = [b.log_path.stat().st_size for b in bridges]
        with ExitStack() as stack:
            samplers = [stack.enter_context(Sampler(b.pid)) for b in bridges]
            outputs = run_generators(args, bridges[0], calls, workdir, args.seconds, "load", routes=routes)
        time.sleep(LOG_SETTLE_S)
        step = build_step(
            calls,
            outputs,
            [],
            None,
            samplers[0].machine,
            os.cpu_count() or 1,
            line_ms=args.connect_timeout * 1000,
        )
        w0 = max(out["window"][0] for out in outputs)
        w1 = min(out["window"][1] for out in outputs)
        nodes = [
            _node_result(b, s, base, off, w0, w1)
            for b, s, base, off in zip(bridges, samplers, baselines, offsets, strict=True)
        ]
    finally:
        for b in bridges:
            code = b.stop()
            if code not in (0, None):
                print(f"{path}: a bridge exited with {code} (log {b.log_path})", file=sys.stderr)
    return _path_result(path, step, outputs, nodes)


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _per_node(nodes: Sequence[NodeResult], attr: str, spec: str) -> str:
    return " / ".join(_fmt(getattr(n, attr), spec) for n in nodes)


HEADER = (
    "| path | calls | fail | setup p50/p95/p99 ms | webhook p50/p99 | socket p50/p99 | calls per node "
    "| taken over | cpu% per node | cpu%/call per node | MB/call per node | gen cpu% | gen lag p99 "
    "| other cpu% | steal% |"
)


def markdown_table(results: Sequence[PathResult]) -> str:
    lines = [HEADER, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        s, w, k = r.setup_ms, r.webhook_ms, r.socket_ms
        lines.append(
            f"| {r.path} | {r.calls} | {r.failed} | {_fmt(s['p50'])}/{_fmt(s['p95'])}/{_fmt(s['p99'])} "
            f"| {_fmt(w['p50'])}/{_fmt(w['p99'])} | {_fmt(k['p50'])}/{_fmt(k['p99'])} "
            f"| {_per_node(r.nodes, 'calls', 'd')} | {_per_node(r.nodes, 'taken_over', 'd')} "
            f"| {_per_node(r.nodes, 'cpu_percent', '.1f')} | {_per_node(r.nodes, 'cpu_per_call', '.3f')} "
            f"| {_per_node(r.nodes, 'mb_per_call', '.3f')} | {_fmt(r.generator_cpu_percent, '.0f')} "
            f"| {_fmt(r.generator_lag_p99_ms)} | {_fmt(r.other_cpu_percent, '.0f')} "
            f"| {_fmt(r.steal_percent, '.0f')} |"
        )
    return "\n".join(lines)


def main_fleet(args: argparse.Namespace, meta: dict[str, Any], root: Path) -> int:
    if args.transport != "chan_websocket":
        print("python -m bench --fleet: chan_websocket only (the media URL names the node)", file=sys.stderr)
        return 2
    if args.nodes < 2:
        print("python -m bench --fleet: --nodes must be 2 or more", file=sys.stderr)
        return 2
    _, load_core = cores(args.no_pin)
    results: list[PathResult] = []
    with ExitStack() as stack:
        try:
            redis = RedisProcess(root / "redis", load_core)
            stack.callback(redis.stop)
            pg = PostgresProcess(load_core)
            stack.callback(pg.stop)
        except ServiceMissing as exc:
            print(f"python -m bench --fleet: {exc}", file=sys.stderr)
            return 2
        for calls in args.calls:
            for path in PATHS:
                result = run_path(args, path, calls, root, redis, pg)
                results.append(result)
                print(markdown_table([result]).splitlines()[-1], file=sys.stderr, flush=True)
    table = markdown_table(results)
    print(table)
    print(json.dumps({**meta, "nodes": args.nodes, "paths": [r.to_dict() for r in results]}))
    if args.markdown is not None:
        pk = ", ".join(f"{k} {v}" for k, v in meta["packages"].items())
        args.markdown.write_text(
            f"- Command: `{meta['command']}`\n"
            f"- Machine: {meta['cores']} cores, {meta['cpu']}; Python {meta['python']}; {pk}\n"
            f"- Commit: `{meta['commit']}`\n\n{table}\n"
        )
    return 1 if any(r.failed for r in results) else 0
