"""`bridge serve --workers N` as the CLI sees it: the checks, the parent's command, each worker's settings."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from bridge.settings import Settings
from bridge.workers.policy import node_id_for
from bridge.workers.supervisor import Supervisor

NODE_ID_MAX = 64  # [cluster] node_id's own limit, which each worker's suffixed id must keep
PARENT_CHECK_SECONDS = 1.0


def workers_problem(workers: int, settings: Settings, path: Path | None) -> str | None:
    """Why `--workers N` (N > 1) cannot run with these settings, in one line; None when it can."""
    if workers <= 1:
        return None
    if settings.cluster is None:
        return (
            f"--workers {workers} needs a [cluster] section (redis_url, node_id): "
            "workers without a shared registry would each be an island"
        )
    if path is None:
        return f"--workers {workers} needs a config file (--config or $BRIDGE_CONFIG)"
    if settings.server.port == 0 or (settings.audiosocket.enabled and settings.audiosocket.port == 0):
        return f"--workers {workers} needs fixed ports: with port 0 each worker would listen on its own"
    if len(node_id_for(settings.cluster.node_id, workers)) > NODE_ID_MAX:
        return f"cluster.node_id is too long for --workers {workers} (each worker appends -<n>)"
    return None


def run_supervisor(workers: int, path: Path) -> int:
    """The parent: the same `bridge serve` once per worker, each told its index."""

    def command(index: int) -> list[str]:
        return [sys.executable, "-m", "bridge", "serve", "--config", str(path), "--worker-index", str(index)]

    return asyncio.run(Supervisor(workers, command).run())


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker `index`'s settings: the file's, as its own node of the fleet (named so in its logs)."""
    cluster = settings.cluster
    if cluster is None:
        return settings
    node = cluster.model_copy(update={"node_id": node_id_for(cluster.node_id, index)})
    # Every log line says which worker wrote it (they share one journal or terminal).
    structlog.contextvars.bind_contextvars(node=node.node_id)
    return settings.model_copy(update={"cluster": node})


async def as_worker(serve: Coroutine[Any, Any, int]) -> int:
    """Run `serve` as a worker: it drains and exits if the parent dies (no orphan keeps the port)."""
    parent = os.getppid()
    watch = asyncio.create_task(_watch_parent(parent))
    try:
        return await serve
    finally:
        watch.cancel()


async def _watch_parent(parent: int) -> None:
    # Polled: a dead parent sends nothing, and prctl(PR_SET_PDEATHSIG) would need the parent's help.
    while True:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)  # the drain a stop by the parent would have started
            return
