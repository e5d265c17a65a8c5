"""Run the fake as its own process (for the benchmark).

    python -m tests.fakes.openai_realtime --port 0 [--variant openai|azure|xai] [--api-key KEY]
        [--speed 4] [--reply-ms 1200] [--greeting-ms 1500]

Prints one JSON line {"url": ..., "base_url": ..., "variant": ..., "pid": ...} once listening, runs until
SIGTERM/SIGINT, then prints one JSON line of stats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import cast

from tests.fakes.process import run_fake

from .script import Script, Turn
from .server import FakeRealtimeServer, Variant


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.openai_realtime", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--variant", choices=("openai", "azure", "xai"), default="openai")
    p.add_argument("--api-key", default="sk-test-key")
    p.add_argument("--speed", type=float, default=4.0, help="times faster than real time; 0 = no pauses")
    p.add_argument("--reply-ms", type=int, default=1200)
    p.add_argument("--greeting-ms", type=int, default=1500)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--full-validation", action="store_true", help="validate every append with pydantic too")
    p.add_argument("--validate-outgoing", action="store_true", help="check the fake's own events (slow)")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> dict[str, object]:
    script = Script(
        turns=(Turn(reply_ms=args.reply_ms),),
        greeting_reply_ms=args.greeting_ms,
        speed=args.speed,
        seed=args.seed,
    )
    server = FakeRealtimeServer(
        variant=cast(Variant, args.variant),
        api_key=args.api_key,
        script=script,
        host=args.host,
        port=args.port,
        full_append_validation=args.full_validation,
        validate_outgoing=args.validate_outgoing,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        ready = {"url": server.url, "base_url": server.base_url, "variant": args.variant, "pid": os.getpid()}
        print(json.dumps(ready), flush=True)
        await stop.wait()
    return server.stats()  # after close, so every connection's record is final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stats = run_fake(serve(args))
    print(json.dumps({"stats": stats}), flush=True)
    return 1 if stats.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
