"""Command line: serve, check-config, hash-key, simulate-call."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

from bridge.keys import hash_key, new_api_key
from bridge.logging import configure_logging
from bridge.settings import ConfigError, Settings, build_settings, load_settings, warnings_for
from bridge.simulate.cli_entry import add_arguments as add_simulate_arguments
from bridge.simulate.cli_entry import run_from_args as run_simulate_call

DEMO_PHONE = "+15550100000"


def _config_path(arg: str | None) -> Path | None:
    value = arg or os.environ.get("BRIDGE_CONFIG")
    return Path(value) if value else None


def demo_settings() -> tuple[Settings, str, str]:
    """Zero-config start: one demo company on the echo provider, with fresh keys."""
    company_key = new_api_key("bck")
    connector_key = new_api_key("bcn")
    raw = {
        "connector": {"api_keys": [hash_key(connector_key)]},
        "companies": [
            {
                "id": "demo",
                "name": "Demo company",
                "api_keys": [hash_key(company_key)],
                "phones": [DEMO_PHONE],
                "agent": {"provider": "echo"},
            }
        ],
    }
    return build_settings(raw), company_key, connector_key


def run_loop(coro: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed (about twice the WebSocket throughput), else asyncio."""
    try:
        import uvloop  # noqa: PLC0415  (optional dependency)
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _print_problems(header: str, problems: Sequence[str]) -> None:
    print(header, file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import serve, settings_reloader  # noqa: PLC0415  (keeps `hash-key` light)
    from bridge.workers.entry import as_worker, run_supervisor, worker_settings, workers_problem  # noqa: PLC0415

    path = _config_path(args.config)
    try:
        if path is None:
            settings, company_key, connector_key = demo_settings()
            print(
                "No config file given: starting with a demo company (echo provider).\n"
                f"  company API key:  {company_key}\n"
                f"  connector key:    {connector_key}\n"
                f"  demo number:      {DEMO_PHONE}\n"
                "These keys are generated at each start and shown only now.",
                flush=True,
            )
        else:
            settings = load_settings(path)
    except ConfigError as exc:
        _print_problems("configuration is invalid:", exc.problems)
        return 2
    problem = workers_problem(args.workers, settings, path)
    if problem is not None:
        print(f"serve: {problem}", file=sys.stderr)
        return 2
    from bridge.settings_secrets import secret_digests, secret_values  # noqa: PLC0415

    configure_logging(
        settings.logging.level,
        settings.logging.format,
        secrets=secret_values(settings),
        secret_digests=secret_digests(settings),
    )
    reloader = settings_reloader(path)
    if args.workers > 1 and path is not None:
        return run_supervisor(args.workers, path)
    if args.worker_index is None:
        return run_loop(serve(settings, reload_settings=reloader, reuse_port=args.reuse_port))
    # A worker of `--workers N`: its own node of the fleet, sharing the ports with its siblings.
    settings = worker_settings(settings, args.worker_index)
    return run_loop(as_worker(serve(settings, reload_settings=reloader, reuse_port=True)))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate as `serve` would (file plus environment); every problem at once, then warnings."""
    path = _config_path(args.config)
    source = str(path) if path is not None else "built-in demo configuration"
    try:
        settings = load_settings(path) if path is not None else demo_settings()[0]
    except ConfigError as exc:
        _print_problems(f"{source}: {len(exc.problems)} problem(s):", exc.problems)
        return 2
    for note in warnings_for(settings):
        print(f"warning: {note}", file=sys.stderr)
    print(f"{source}: OK ({len(settings.companies)} companies, max_calls={settings.server.max_calls})")
    return 0


def cmd_hash_key(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().rstrip("\n") if args.key == "-" else args.key
    if not key:
        print("hash-key: the key must not be empty", file=sys.stderr)
        return 2
    print(hash_key(key))
    return 0


def cmd_simulate_call(args: argparse.Namespace) -> int:
    return run_loop(run_simulate_call(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG, else a demo setup)")
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        metavar="N",
        help="N processes sharing the HTTP and AudioSocket ports, each a node of the fleet (needs [cluster])",
    )
    serve.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT, so several `bridge serve` (e.g. bridge@.service) share the ports",
    )
    serve.add_argument("--worker-index", type=_positive_int, help=argparse.SUPPRESS)  # set by --workers
    serve.set_defaults(handler=cmd_serve)

    check = commands.add_parser("check-config", help="validate a config file; exit 2 when invalid")
    check.add_argument("--config", help="TOML config file (default: $BRIDGE_CONFIG)")
    check.set_defaults(handler=cmd_check_config)

    hash_cmd = commands.add_parser("hash-key", help="print the sha256: form of a key for the config")
    hash_cmd.add_argument("key", help="the key, or - to read it from standard input")
    hash_cmd.set_defaults(handler=cmd_hash_key)

    simulate = commands.add_parser("simulate-call", help="play a PBX plus Asterisk against a running bridge")
    add_simulate_arguments(simulate)
    simulate.set_defaults(handler=cmd_simulate_call)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = args.handler
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
