"""The processes under test: the bridge (`bridge serve` on a generated config) and, optionally, the fake
OpenAI Realtime server; plus /proc sampling and /metrics scraping of the bridge.

The bridge may run from another source tree and interpreter than the benchmark (`--compare`): `BridgeCode`
says which; the load generator and the fake model always come from this tree, so both sides of a
comparison are measured by the same harness."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from bench.promtext import Scrape
from bench.stats import (
    MachineSample,
    ProcSample,
    cpu_ticks_from_stat,
    machine_ticks_from_proc_stat,
    rss_kb_from_status,
)
from bridge.keys import hash_key

Provider = Literal["echo", "openai-fake", "gemini-fake", "elevenlabs-fake", "deepgram-fake", "ultravox-fake"]
FAKE_OPENAI_KEY = "bench-not-a-secret"  # the bridge and the fake share it; nothing real is reached


@dataclass(frozen=True, slots=True)
class FakeModel:
    """A model provider's strict fake from tests/fakes, run as its own process."""

    provider: str  # the bridge's provider name
    module: str  # python -m <module> --port 0 --api-key K prints {"url": ...}
    model: str  # [providers.<provider>] model


FAKE_MODELS: dict[str, FakeModel] = {
    "openai-fake": FakeModel("openai", "tests.fakes.openai_realtime", "gpt-realtime"),
    "gemini-fake": FakeModel(
        "gemini", "tests.fakes.gemini_live", "gemini-2.5-flash-native-audio-preview-09-2025"
    ),
    "elevenlabs-fake": FakeModel("elevenlabs", "tests.fakes.elevenlabs_agents", "agent_test"),
    "deepgram-fake": FakeModel("deepgram", "tests.fakes.deepgram_agent", "gpt-4o-mini"),
    "ultravox-fake": FakeModel("ultravox", "tests.fakes.ultravox", "fixie-ai/ultravox"),
}
BENCH_PHONE = "+15550100000"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 40.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def pinned(command: list[str], core: int | None) -> list[str]:
    """Prefix `taskset -c CORE` when taskset exists and the core does (one process per core)."""
    if core is None or shutil.which("taskset") is None or core >= (os.cpu_count() or 1):
        return command
    return ["taskset", "-c", str(core), *command]


def toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


def bridge_config(
    *,
    connector_hash: str,
    company_hash: str,
    max_calls: int,
    db_path: Path,
    provider: Provider,
    model_url: str | None = None,
    log_level: str = "info",
    store_url: str | None = None,
    extra: str = "",
    provider_settings: Sequence[str] = (),
) -> str:
    """A complete config: HTTP and AudioSocket on free ports (port 0), one company on `provider`;
    `store_url` replaces the SQLite file, `extra` adds sections (a fleet node's `[cluster]`), and
    `provider_settings` (`key = TOML value` lines) go in the fake model's `[providers.*]` section."""
    fake = FAKE_MODELS.get(provider)
    agent = "echo" if fake is None else fake.provider
    lines = [
        "[server]",
        'host = "127.0.0.1"',
        "port = 0",
        f"max_calls = {max_calls}",
        "drain_seconds = 5",
        "",
        "[connector]",
        f"api_keys = [{toml_str(connector_hash)}]",
        "",
        "[audiosocket]",
        "enabled = true",
        'host = "127.0.0.1"',
        "port = 0",
        "",
        "[storage]",
        f"url = {toml_str(store_url or 'sqlite:///' + str(db_path))}",
        "",
        "[logging]",
        f"level = {toml_str(log_level)}",
        'format = "json"',
        "",
    ]
    if fake is not None and model_url is not None:
        lines += [
            f"[providers.{fake.provider}]",
            f"url = {toml_str(model_url)}",
            f"model = {toml_str(fake.model)}",
            f"api_key = {toml_str(FAKE_OPENAI_KEY)}",
            *provider_settings,
            "",
        ]
    lines += [
        "[[companies]]",
        'id = "bench"',
        'name = "Benchmark"',
        f"api_keys = [{toml_str(company_hash)}]",
        f"phones = [{toml_str(BENCH_PHONE)}]",
        "",
        "[companies.agent]",
        f"provider = {toml_str(agent)}",
        'greeting = ""',
        "",
        extra,
    ]
    return "\n".join(lines)


def parse_listening(line: str) -> tuple[int, int | None] | None:
    """(http port, audiosocket port) from the bridge's JSON `listening` log line; None for other lines."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get("event") != "listening":
        return None
    http = int(str(event["http"]).rsplit(":", 1)[1])
    audio = event.get("audiosocket")
    return http, (int(str(audio).rsplit(":", 1)[1]) if audio else None)


def read_proc(pid: int) -> ProcSample:
    t = time.monotonic()
    stat = Path(f"/proc/{pid}/stat").read_text()
    status = Path(f"/proc/{pid}/status").read_text()
    return ProcSample(t, cpu_ticks_from_stat(stat) / CLK_TCK, rss_kb_from_status(status))


@dataclass(frozen=True, slots=True)
class BridgeCode:
    """Where `bridge serve` comes from: an interpreter and, if not its installed package, a source tree
    put first on PYTHONPATH (an exported commit)."""

    python: str = sys.executable
    source: Path | None = None
    label: str = "working tree"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.source is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.source), *filter(None, [env.get("PYTHONPATH", "")])]
            )
        return env


class MetricsScraper:
    """GETs the bridge's /metrics every `interval` seconds in a thread, keeping each body with its times
    (a request a second costs the bridge well under 0.1 % of a core)."""

    def __init__(self, url: str, interval: float = 1.0) -> None:
        self.url = url
        self.interval = interval
        self.scrapes: list[Scrape] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MetricsScraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5.0) as resp:
                    text = resp.read().decode("utf-8", errors="replace")
                self.scrapes.append(Scrape(started, time.monotonic(), text))
            except (OSError, urllib.error.URLError, ValueError):
                self.errors += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


class Sampler:
    """Reads /proc/<pid> every `interval` seconds in a thread (cheap: two small reads)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[ProcSample] = []
        self.machine: list[MachineSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(read_proc(self.pid))
                busy, steal, total = machine_ticks_from_proc_stat(Path("/proc/stat").read_text())
                self.machine.append(MachineSample(time.monotonic(), busy, steal, total))
            except (OSError, ValueError):
                return
            self._stop.wait(self.interval)


@dataclass(slots=True)
class Bridge:
    """A running `bridge serve`, its keys and ports."""

    proc: subprocess.Popen[bytes]
    connector_key: str
    http_port: int
    audiosocket_port: int | None
    log_path: Path
    extra: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM (the bridge drains and exits), then the helpers; returns the bridge's exit code."""
        code = _terminate(self.proc)
        for helper in self.extra:
            _terminate(helper)
        return code


def _terminate(proc: subprocess.Popen[bytes]) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_fake_model(
    fake_model: FakeModel, workdir: Path, core: int | None, extra_args: list[str]
) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m <fake module> --port 0 ...`, which prints a JSON line with its `url`."""
    log = (workdir / "fake_model.log").open("wb")
    fake = [sys.executable, "-m", fake_model.module, "--port", "0", "--api-key", FAKE_OPENAI_KEY]
    command = pinned([*fake, *extra_args], core)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=_repo_root())
    assert proc.stdout is not None
    url = _first_json_field(proc.stdout, "url", READY_TIMEOUT_S)
    if url is None:
        _terminate(proc)
        raise RuntimeError(f"the fake model printed no url (see {workdir / 'fake_model.log'})")
    # Keep draining its stdout so a chatty fake cannot block on a full pipe.
    threading.Thread(target=_drain, args=(proc.stdout,), daemon=True).start()
    return proc, url


def _first_json_field(stream: IO[bytes], key: str, timeout: float) -> str | None:
    found: list[str] = []

    def reader() -> None:
        for raw in iter(stream.readline, b""):
            try:
                data = json.loads(raw)
            except ValueError:
                continue
            if isinstance(data, dict) and key in data:
                found.append(str(data[key]))
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return found[0] if found else None


def _drain(stream: IO[bytes]) -> None:
    for _ in iter(stream.readline, b""):
        pass


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


def start_bridge(
    workdir: Path,
    *,
    max_calls: int,
    provider: Provider,
    core: int | None,
    fake_core: int | None = None,
    fake_args: list[str] | None = None,
    profile: Literal["none", "cprofile"] = "none",
    log_level: str = "info",
    code: BridgeCode | None = None,
    connector_key: str | None = None,
    store_url: str | None = None,
    extra_config: str = "",
    provider_settings: Sequence[str] = (),
) -> Bridge:
    """Write the config and start `bridge serve` (under cProfile if asked); wait for `listening`.
    The nodes of a fleet share `connector_key` and `store_url`; `extra_config` is their `[cluster]`."""
    code = code or BridgeCode()
    connector_key = connector_key or secrets.token_urlsafe(24)
    extra: list[subprocess.Popen[bytes]] = []
    model_url = None
    fake_model = FAKE_MODELS.get(provider)
    if fake_model is not None:
        fake, model_url = start_fake_model(fake_model, workdir, fake_core, fake_args or [])
        extra.append(fake)
    config = workdir / "bridge.toml"
    config.write_text(
        bridge_config(
            connector_hash=hash_key(connector_key),
            company_hash=hash_key(secrets.token_urlsafe(24)),
            max_calls=max_calls,
            db_path=workdir / "bridge.db",
            provider=provider,
            model_url=model_url,
            log_level=log_level,
            store_url=store_url,
            extra=extra_config,
            provider_settings=provider_settings,
        )
    )
    log_path = workdir / "bridge.log"
    runner = ["-m", "cProfile", "-o", str(workdir / "bridge.prof")] if profile == "cprofile" else []
    command = pinned([code.python, *runner, "-m", "bridge", "serve", "--config", str(config)], core)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=code.env())
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        for line in log_path.read_text(errors="replace").splitlines():
            ports = parse_listening(line)
            if ports is not None:
                return Bridge(proc, connector_key, ports[0], ports[1], log_path, extra)
        time.sleep(0.05)
    _terminate(proc)
    for helper in extra:
        _terminate(helper)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"bridge did not start (exit {proc.returncode}); log tail:\n{tail}")
