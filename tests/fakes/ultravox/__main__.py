"""Run the fake Ultravox as its own process (for the benchmark).

    python -m tests.fakes.ultravox --port 0 [--api-key KEY] [--speed 4] [--reply-ms 1200] [--greeting-ms 1500]

Prints one JSON line {"url": ..., "pid": ...} once listening (`url` is the create-call endpoint), runs
until SIGTERM/SIGINT, then prints one JSON line of stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys

from tests.fakes.process import run_fake

from .script import Script, Turn
from .server import FakeUltravoxServer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.ultravox", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default="uv-test-key")
    p.add_argument("--speed", type=float, default=4.0, help="times faster than real time; 0 = no pauses")
    p.add_argument("--reply-ms", type=int, default=1200)
    p.add_argument("--greeting-ms", type=int, default=1500)
    p.add_argument("--seed", type=int, default=1234)
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> dict[str, object]:
    script = Script(
        greeting_ms=args.greeting_ms, turns=(Turn(reply_ms=args.reply_ms),), speed=args.speed, seed=args.seed
    )
    server = FakeUltravoxServer(api_key=args.api_key, script=script, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
        await stop.wait()
    return server.stats()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stats = run_fake(serve(args))
    print(json.dumps({"stats": stats}), flush=True)
    return 1 if stats.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
