"""The `--workers N` parent: starts N `bridge serve` workers, relays signals, restarts the ones that die.

Each worker binds the HTTP and AudioSocket ports itself with SO_REUSEPORT, and the kernel spreads new
connections across them; the parent holds no socket and touches no call, so a worker that dies costs
only its own calls. Each worker is a node of the fleet (`<node_id>-<index>`), sharing calls through
`[cluster]`'s Redis like processes on different machines.

systemd sees only the parent (Type=notify, NotifyAccess=main): each worker's NOTIFY_SOCKET is a socket
of the parent's, which says READY=1 once every worker has said it, and with WatchdogSec= kills (and so
restarts) a worker that stops pinging, while it pings systemd itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bridge.logging import get_logger
from bridge.sdnotify import Notifier
from bridge.workers.policy import (
    GiveUp,
    RestartPolicy,
    after_exit,
    describe_exit,
    parse_notification,
    stop_status,
)

_log = get_logger("workers")

Command = Callable[[int], Sequence[str]]


@dataclass
class _Slot:
    """Worker `index` across its restarts: its notify socket stays, its process changes."""

    index: int
    sock: socket.socket
    address: str
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    last_ping: float = 0.0
    failures: int = 0
    final: list[int] = field(default_factory=list)  # its exit status after a requested stop


class Supervisor:
    def __init__(
        self,
        count: int,
        command: Command,
        *,
        policy: RestartPolicy | None = None,
        notifier: Notifier | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._count = count
        self._command = command
        self._policy = policy or RestartPolicy()
        self._notifier = notifier or Notifier()
        self._environ = dict(os.environ if environ is None else environ)
        self._slots: list[_Slot] = []
        self._stopping = asyncio.Event()
        self._gave_up: GiveUp | None = None
        self._announced = False

    async def run(self) -> int:
        """Until a stop (SIGTERM/SIGINT) or a worker that cannot start; the exit status for `serve`."""
        loop = asyncio.get_running_loop()
        # A private directory: only this user can send the parent READY=1 or WATCHDOG=1.
        directory = Path(tempfile.mkdtemp(prefix="bridge-workers-"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        watchdog: asyncio.Task[None] | None = None
        try:
            for index in range(1, self._count + 1):
                slot = self._open_slot(directory, index)
                loop.add_reader(slot.sock.fileno(), self._on_notification, slot)
            if self._notifier.watchdog_interval:
                watchdog = asyncio.create_task(self._watchdog(self._notifier.watchdog_interval))
            _log.info("workers_starting", workers=self._count)
            await asyncio.gather(*(self._keep(slot) for slot in self._slots))
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            for slot in self._slots:
                loop.remove_reader(slot.sock.fileno())
                slot.sock.close()
            shutil.rmtree(directory, ignore_errors=True)
        if self._gave_up is not None:
            _log.error("workers_gave_up", reason=self._gave_up.reason)
            return self._gave_up.exit_code
        status = stop_status([code for slot in self._slots for code in slot.final])
        _log.info("workers_stopped", status=status)
        return status

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Every worker drains as a single process does; the parent exits once all have exited."""
        if not self._stopping.is_set():
            _log.info("workers_stopping", signal=sig.name)
            self._notifier.stopping()
            self._stopping.set()
        self._forward(sig)  # a second signal is relayed too (systemd may also send it to each worker)

    def _forward(self, sig: signal.Signals) -> None:
        for slot in self._slots:
            if slot.process is not None and slot.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.send_signal(sig)

    def _open_slot(self, directory: Path, index: int) -> _Slot:
        path = str(directory / f"notify-{index}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.setblocking(False)
        slot = _Slot(index, sock, path)
        self._slots.append(slot)
        return slot

    def _environment(self, slot: _Slot) -> dict[str, str]:
        env = dict(self._environ)
        env["NOTIFY_SOCKET"] = slot.address
        env.pop("WATCHDOG_PID", None)  # the worker's Notifier pings when no pid says it is someone else
        interval = self._notifier.watchdog_interval
        if interval:  # the worker pings the parent as often as the parent pings systemd
            env["WATCHDOG_USEC"] = str(round(interval * 2 * 1_000_000))
        else:
            env.pop("WATCHDOG_USEC", None)
        return env

    async def _keep(self, slot: _Slot) -> None:
        """Run worker `slot.index` until a stop, restarting it by the policy."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            self._discard_stale(slot)
            started = loop.time()
            slot.ready, slot.last_ping = False, started
            try:
                process = await asyncio.create_subprocess_exec(
                    *self._command(slot.index), env=self._environment(slot)
                )
            except OSError as exc:  # out of processes or descriptors: nothing a retry loop would fix
                self._give_up(GiveUp(f"cannot start a worker: {exc.strerror}", 1))
                return
            slot.process = process
            _log.info("worker_started", worker=slot.index, pid=process.pid)
            if self._stopping.is_set():  # the stop came while it was being spawned
                self._forward(signal.SIGTERM)
            returncode = await process.wait()
            slot.process = None
            if self._stopping.is_set():
                slot.final.append(returncode)
                _log.info("worker_exited", worker=slot.index, pid=process.pid, exit=describe_exit(returncode))
                return
            decision = after_exit(
                self._policy,
                failures=slot.failures,
                ran_seconds=loop.time() - started,
                was_ready=slot.ready,
                returncode=returncode,
            )
            _log.warning("worker_died", worker=slot.index, pid=process.pid, exit=describe_exit(returncode))
            if isinstance(decision, GiveUp):
                self._give_up(decision)
                return
            slot.failures = decision.failures
            _log.info("worker_restarting", worker=slot.index, delay_seconds=decision.delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), decision.delay)

    def _give_up(self, decision: GiveUp) -> None:
        if self._gave_up is None:
            self._gave_up = decision
        self.stop(signal.SIGTERM)

    def _discard_stale(self, slot: _Slot) -> None:
        """A dead worker's last datagrams must not count for its successor."""
        while True:
            try:
                slot.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return

    def _on_notification(self, slot: _Slot) -> None:
        while True:
            try:
                datagram = slot.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            fields = parse_notification(datagram)
            if slot.process is None:
                continue  # between a worker's exit and its successor's start
            slot.last_ping = asyncio.get_running_loop().time()
            if fields.get("READY") == "1" and not slot.ready:
                slot.ready = True
                _log.info("worker_ready", worker=slot.index, pid=slot.process.pid)
                self._announce_if_all_ready()

    def _announce_if_all_ready(self) -> None:
        if self._announced or not all(slot.ready for slot in self._slots):
            return
        self._announced = True  # later restarts are the parent's business, not systemd's
        _log.info("workers_ready", workers=self._count)
        self._notifier.ready(f"{self._count} workers serving")

    async def _watchdog(self, interval: float) -> None:
        """Ping systemd, and kill a ready worker silent for a whole WatchdogSec (it is then restarted)."""
        loop = asyncio.get_running_loop()
        while True:
            self._notifier.watchdog()
            now = loop.time()
            for slot in self._slots:
                process = slot.process
                hung = slot.ready and now - slot.last_ping > 2 * interval
                if process is not None and hung and not self._stopping.is_set():
                    _log.error("worker_hung", worker=slot.index, pid=process.pid)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.sleep(interval)
