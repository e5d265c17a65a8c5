"""Run the fake Gemini Live as its own process (for the benchmark).

    python -m tests.fakes.gemini_live --port 0 [--api-key KEY] [--speed 4] [--reply-ms 1200]
        [--greeting-ms 1500] [--seed 1234]

Prints one JSON line {"url": ..., "pid": ...} once listening, runs until SIGTERM/SIGINT, then prints
one JSON line of stats.
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
from .server import FakeGeminiLive


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.gemini_live", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default="gemini-test-key")
    p.add_argument("--speed", type=float, default=4.0, help="times faster than real time; 0 = no pauses")
    p.add_argument("--reply-ms", type=int, default=1200)
    p.add_argument("--greeting-ms", type=int, default=1500)
    p.add_argument(
        "--seed", type=int, default=1234, help="accepted for CLI parity; the fake is deterministic"
    )
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> dict[str, object]:
    script = Script(turns=(Turn(reply_ms=args.reply_ms),), greeting_ms=args.greeting_ms, speed=args.speed)
    server = FakeGeminiLive(api_key=args.api_key, script=script, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        print(json.dumps({"url": server.url, "pid": os.getpid()}), flush=True)
        await stop.wait()
    return server.stats()


def main(argv: list[str] | None = None) -> int:
    stats = run_fake(serve(parse_args(argv)))
    print(json.dumps({"stats": stats}), flush=True)
    return 1 if stats.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
