"""Shared helpers of the benchmarks: child processes, broker topology, timing statistics, JSON output.

The benchmarks start every process they measure themselves, and stop them on exit, on an exception and on
Ctrl-C. Each child also stops by itself when its standard input closes, which happens when the benchmark
process dies, so nothing outlives a run:

* the store: the default engine, a SQLite file in a temporary folder deleted at the end (the engine runs
  inside the coordinator process, in threads named ``rc-store-*`` whose CPU time is read apart), or the
  MongoDB named by ``RC_BENCH_MONGODB_URL``;
* the coordinator: ``python -m bench._common coordinator``, which runs the real ``rc-coordinator`` entry point
  (:func:`coordinator.__main__.main`, configured by ``RC_*`` variables) and optionally counts the commands it
  sends to the store (a PyMongo command listener exposed on its ``/metrics`` as
  ``bench_store_commands_total{command}``);
* no-op task services: ``python -m bench._common host``, many services per process on one connection, written
  with bare aio-pika (see :func:`run_host` for why not ``task_sdk``).

Any child can be run under ``py-spy record`` (``profile=`` path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from prometheus_client.parser import text_string_to_metric_families

from coordinator.settings import Settings as CoordinatorSettings
from coordinator.store import HeartbeatRecord, Store, default_store_url, store_for
from rc_cli.client import AdminClient, expect_ok
from schemas.enums import Action, Outcome, ReleaseState, ReplyKind
from schemas.messages import (
    SCHEMA_VERSION,
    Announcement,
    Command,
    CreateRelease,
    PublishRelease,
    ReleaseInfo,
    ReleaseResult,
    TaskReply,
    decode,
    encode,
)
from schemas.topology import SCHEMA_VERSION_HEADER, Topology

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SUCCESS = {
    Action.INITIALIZE: Outcome.ACCEPTED,
    Action.START: Outcome.STAGED,
    Action.PUBLISH: Outcome.PUBLISHED,
    Action.CANCEL: Outcome.CANCELED,
}
STEPS = ("initialize", "process", "publish")
#: Announced states that end a benchmark release early (something went wrong).
BAD_STATES = frozenset({ReleaseState.CANCELING, ReleaseState.CANCELED, ReleaseState.FAILED})

_T0 = time.monotonic()


# ---------------------------------------------------------------------- small things


def amqp_url() -> str:
    return os.environ.get("RC_AMQP_URL") or DEFAULT_AMQP_URL


def new_namespace(tag: str = "") -> str:
    """``bench-<hex>[-tag]``: a namespace (and database) nobody else uses."""
    return f"bench-{secrets.token_hex(4)}" + (f"-{tag}" if tag else "")


def database_of(namespace: str) -> str:
    return CoordinatorSettings(namespace=namespace).database


def service_names(count: int) -> list[str]:
    return [f"svc-{i:03d}" for i in range(count)]


def split(items: Sequence[str], parts: int) -> list[list[str]]:
    """``items`` dealt round-robin into at most ``parts`` non-empty lists."""
    parts = max(1, min(parts, len(items)))
    return [list(items[i::parts]) for i in range(parts)]


def say(message: str) -> None:
    """A progress line (stdout, flushed, with the seconds since the start)."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def now() -> datetime:
    return datetime.now(UTC)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# ---------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(values: Sequence[float]) -> dict[str, float | int]:
    """count, median, p95, mean, min, max of ``values`` (NaN-free: an empty list gives only the count)."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "median": round(statistics.median(values), 3),
        "p95": round(percentile(values, 95), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def ratio(value: float, base: float) -> float:
    return round(value / base, 3) if base else math.inf


def last_line(name: str, value: float, unit: str, ratio_value: float) -> str:
    """``NAME: value unit (ratio X)``: the one line every script ends with."""
    return f"{name}: {value:.4g} {unit} (ratio {ratio_value:.3g})"


# ---------------------------------------------------------------------- output


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Path):
        return relative(value)
    return value


def relative(path: Path) -> str:
    """``path`` relative to the repository when inside it (results never name machine paths)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return path.name


def write_results(name: str, data: Mapping[str, Any], directory: Path | None = None) -> Path:
    """Write ``<directory or bench/results>/<name>.json`` and return its path."""
    target = directory or RESULTS
    target.mkdir(parents=True, exist_ok=True)
    path = target / f"{name}.json"
    path.write_text(json.dumps(_jsonable(data), indent=2) + "\n")
    return path


def machine_info(rabbitmq_version: str | None) -> dict[str, Any]:
    """The machine the figures come from (no paths, no host names)."""
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "rabbitmq": rabbitmq_version,
    }
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["ram_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    return info


async def rabbitmq_version(url: str) -> str | None:
    connection = await aio_pika.connect(url, timeout=30)
    try:
        properties: Any = connection.transport.connection.server_properties  # type: ignore[union-attr]
        version = properties.get("version")
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception:
        return None
    finally:
        await connection.close()


# ---------------------------------------------------------------------- /proc


#: A process, or the threads of a process whose names start with a prefix (the embedded store's).
Measured = int | tuple[int, str]
#: The names the embedded store gives its threads (see ``coordinator/store/sqlite.py``).
STORE_THREADS = "rc-store"


def cpu_seconds(what: Measured) -> float:
    """User + system CPU seconds of a process, or of some of its threads, so far (0 if gone)."""
    if isinstance(what, int):
        return _stat_cpu(Path(f"/proc/{what}/stat"))
    pid, prefix = what
    total = 0.0
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                if (task / "comm").read_text().startswith(prefix):
                    total += _stat_cpu(task / "stat")
    return total


def _stat_cpu(stat: Path) -> float:
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def measured_store(coordinator_pid: int, store: StoreHandle) -> Measured | None:
    """What to meter as the store: the embedded engine's threads inside the coordinator, the store's own
    process, or nothing (a store this run did not start)."""
    return (coordinator_pid, STORE_THREADS) if store.in_process else store.pid


def without_store_threads(cpu: dict[str, float], store: StoreHandle) -> dict[str, float]:
    """The coordinator's CPU without its embedded store's threads (metered as ``store``)."""
    if store.in_process and "coordinator" in cpu and "store" in cpu:
        return cpu | {"coordinator": round(cpu["coordinator"] - cpu["store"], 3)}
    return cpu


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS``, KiB; 0 if it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def file_handles() -> tuple[int, int] | None:
    """``(limit, used)`` of the local RabbitMQ node's file-handle budget; None if ``rabbitmqctl`` cannot tell.

    RabbitMQ reserves about 3 handles per quorum queue; when the budget runs out, the node stops setting
    up new connections without an error (see scripts/ensure-rabbitmq.sh).
    """
    try:
        done = subprocess.run(
            ["rabbitmqctl", "-q", "eval", "file_handle_cache:info([total_limit, total_used])."],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    numbers = [int(n) for n in re.findall(r"\d+", done.stdout)]
    if done.returncode != 0 or len(numbers) != 2:
        return None
    return numbers[0], numbers[1]


def check_file_handles(queues: int) -> None:
    """Refuse to start when the local node's file-handle budget cannot hold ``queues`` more quorum queues."""
    budget = file_handles()
    if budget is None:
        return
    limit, used = budget
    if limit - used < 3 * queues + 100:
        raise SystemExit(
            f"RabbitMQ's file-handle budget ({used} of {limit} used) cannot hold {queues} more quorum "
            "queues: the node would stop accepting connections. Run scripts/ensure-rabbitmq.sh (it raises "
            "the budget of a local node) or give the node a higher ulimit -n."
        )


def rabbitmq_pid(url: str) -> int | None:
    """The process listening on the broker's port of ``url`` on this machine (to account its CPU), if any."""
    import urllib.parse

    port = urllib.parse.urlsplit(url).port or 5672
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(entry.name)
    return None


class CpuMeter:
    """CPU seconds used by named processes between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: Mapping[str, Measured | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid}
        self._before: dict[str, float] = {}
        self._started = 0.0
        self.result: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._started = time.monotonic()
        return self

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._started
        self.result = {
            name: round(cpu_seconds(pid) - self._before[name], 3) for name, pid in self.pids.items()
        }
        self.result["wall"] = round(wall, 3)
        return self.result


# ---------------------------------------------------------------------- child processes


class Child:
    """A process the benchmark started: first stdout lines read for readiness, stderr kept in a temp file.

    With ``profile`` the command runs under ``py-spy record`` (speedscope output at that path); the
    measured process is then py-spy's child (:attr:`pid`).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        profile: Path | None = None,
        profile_rate: int = 200,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        self.profile = profile
        self.profile_rate = profile_rate
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._pid: int | None = None

    def start(self) -> Child:
        argv = self.argv
        if self.profile is not None:
            pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
            if pyspy is None:
                raise RuntimeError("py-spy is not installed: pip install py-spy (into the virtualenv)")
            self.profile.parent.mkdir(parents=True, exist_ok=True)
            argv = [
                pyspy,
                "record",
                "--output",
                str(self.profile),
                "--format",
                "speedscope",
                "--rate",
                str(self.profile_rate),
                "--nonblocking",
                "--idle",
                "--",
                *argv,
            ]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open while the child runs
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=self.env,
            cwd=REPO,
        )
        threading.Thread(target=self._read_stdout, name=f"{self.name}-stdout", daemon=True).start()
        return self

    def _read_stdout(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._lines.put(raw.decode(errors="replace").rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        """The measured process (under py-spy: py-spy's child)."""
        assert self.process is not None
        if self.profile is None:
            return self.process.pid
        if self._pid is None:
            deadline = time.monotonic() + 10
            while self._pid is None and time.monotonic() < deadline:
                self._pid = _first_child(self.process.pid)
                if self._pid is None:
                    time.sleep(0.05)
            if self._pid is None:
                raise RuntimeError(f"{self.name}: py-spy started no child")
        return self._pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def expect(self, prefix: str, within: float) -> str:
        """The next stdout line starting with ``prefix`` (others are echoed); fails if the child exits."""
        deadline = time.monotonic() + within
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {prefix!r} line within {within:g}s{self.tail()}")
            try:
                line = await asyncio.to_thread(self._lines.get, True, min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait(5) if self.process else None
                raise RuntimeError(f"{self.name} exited (status {code}) before {prefix!r}{self.tail()}")
            if line.startswith(prefix):
                return line
            say(f"{self.name}: {line}")

    def send(self, line: str) -> None:
        assert self.process is not None
        assert self.process.stdin is not None
        self.process.stdin.write((line + "\n").encode())
        self.process.stdin.flush()

    def tail(self, chars: int = 3000) -> str:
        if self._stderr is None:
            return ""
        with contextlib.suppress(Exception):
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            if text:
                return f"\n--- {self.name} stderr (end) ---\n{text[-chars:]}"
        return ""

    async def stop(self, within: float = 20) -> int | None:
        """SIGTERM (the measured process), wait, then SIGKILL. Idempotent."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            target = self._pid or (self.pid if self.profile is None else _first_child(process.pid))
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(target or process.pid, signal.SIGTERM)
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                await asyncio.to_thread(process.wait, within)
            except subprocess.TimeoutExpired:
                say(f"{self.name} did not stop within {within:g}s: killing it")
                if self.profile is not None and (child := _first_child(process.pid)):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        return process.returncode

    def close(self) -> None:
        """Kill if still running (synchronous last resort) and release the log file."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(Exception):
                self.process.wait(10)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def _first_child(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            children = (task / "children").read_text().split()
            if children:
                return int(children[0])
    return None


class Children:
    """Every child of one run: stopped in reverse order on exit, whatever happened; then the clean-ups."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.cleanups: list[Callable[[], None]] = []

    def add(self, child: Child) -> Child:
        self.children.append(child.start())
        return child

    async def stop(self, child: Child) -> None:
        try:
            await child.stop()
        finally:
            child.close()
            if child in self.children:
                self.children.remove(child)

    async def __aenter__(self) -> Children:
        return self

    async def __aexit__(self, *_: object) -> None:
        for child in reversed(list(self.children)):
            try:
                await asyncio.shield(self.stop(child))
            except BaseException:
                child.close()
        for cleanup in reversed(self.cleanups):
            cleanup()


# ---------------------------------------------------------------------- the store


@dataclass
class StoreHandle:
    url: str
    child: Child | None = None

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    @property
    def in_process(self) -> bool:
        """The embedded engine: its CPU is the coordinator's ``rc_store_cpu_seconds_total``."""
        return self.url.startswith("sqlite")


def configured_store() -> str | None:
    """``RC_BENCH_MONGODB_URL``: a MongoDB to measure instead of the default (SQLite) engine."""
    return os.environ.get("RC_BENCH_MONGODB_URL", "").strip() or None


async def start_store(children: Children, namespace: str) -> StoreHandle:
    """``RC_BENCH_MONGODB_URL`` if set, else a SQLite file in a temporary folder of this run."""
    configured = configured_store()
    if configured:
        return StoreHandle(configured)
    folder = Path(tempfile.mkdtemp(prefix="rc-bench-"))
    children.cleanups.append(lambda: shutil.rmtree(folder, ignore_errors=True))
    return StoreHandle(default_store_url(namespace, folder))


async def connect_store(url: str, namespace: str) -> Store:
    store = store_for(url, database_of(namespace))
    await store.open()
    return store


async def close_store(store: Store) -> None:
    """Close a store of :func:`connect_store`; on a configured MongoDB, drop the benchmark's database first
    (a SQLite file goes with its temporary folder)."""
    if configured_store():
        await store.drop()
    else:
        await store.close()


async def register_services(store: Store, names: Iterable[str]) -> None:
    """Mark ``names`` required and healthy (a heartbeat just now), as ``rc service require`` + SDK would."""
    at = now()
    for name in names:
        await store.set_required(name, True, at)
        await store.heartbeat(HeartbeatRecord(name, f"bench-{name}", "bench", True, None, at))


# ---------------------------------------------------------------------- the coordinator


@dataclass
class CoordinatorHandle:
    child: Child
    metrics_port: int

    @property
    def pid(self) -> int:
        return self.child.pid

    async def scrape(self) -> Metrics:
        return await scrape(self.metrics_port)


def coordinator_env(
    url: str, store_url: str, namespace: str, metrics_port: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {
        "RC_AMQP_URL": url,
        "RC_STORE_URL": store_url,
        "RC_NAMESPACE": namespace,
        "RC_TRUSTED_USERS": "guest",
        # Services are registered healthy once; no heartbeats are sent during a run (they would be load).
        "RC_HEARTBEAT_TIMEOUT": "86400",
        "RC_METRICS_PORT": str(metrics_port),
        "RC_LOG_LEVEL": "info",
    }
    env.update(extra or {})
    return env


async def start_coordinator(
    children: Children,
    url: str,
    store_url: str,
    namespace: str,
    *,
    extra_env: Mapping[str, str] | None = None,
    count_store_commands: bool = False,
    profile: Path | None = None,
) -> CoordinatorHandle:
    """Start the real coordinator in a child process and wait until it is the active replica."""
    port = free_port()
    argv = [sys.executable, "-m", "bench._common", "coordinator"]
    if count_store_commands:
        argv.append("--count-store-commands")
    child = children.add(
        Child(
            "coordinator",
            argv,
            env=coordinator_env(url, store_url, namespace, port, extra_env),
            profile=profile,
        )
    )
    handle = CoordinatorHandle(child, port)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not child.alive:
            raise RuntimeError(f"the coordinator exited during start-up{child.tail()}")
        with contextlib.suppress(OSError):
            if (await handle.scrape()).value("rc_coordinator_active") == 1:
                return handle
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the coordinator did not become active within 60s{child.tail()}")


@dataclass
class Metrics:
    """One scrape of a Prometheus endpoint: ``(name, labels) -> value``."""

    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(v for (n, ls), v in self.samples.items() if n == name and wanted <= set(ls))

    def by_label(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, ls), v in self.samples.items():
            if n == name:
                key = dict(ls).get(label, "")
                out[key] = out.get(key, 0.0) + v
        return out

    def minus(self, before: Metrics) -> Metrics:
        return Metrics({k: v - before.samples.get(k, 0.0) for k, v in self.samples.items()})


async def scrape(port: int) -> Metrics:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    text = await asyncio.to_thread(fetch)
    metrics = Metrics()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            metrics.samples[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return metrics


STORE_OPERATIONS_METRIC = "rc_store_seconds_count"
STORE_COMMANDS_METRIC = "bench_store_commands_total"
#: Store commands that change something (for "writes per reply").
WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify")
#: Timed store operations that write (on the embedded engine, each one transaction).
WRITE_OPERATIONS = ("insert_release", "compare_and_set", "record_events", "settle", "heartbeat")


def store_figures(delta: Metrics, replies: int) -> dict[str, Any]:
    """Store operations (coordinator's own timing metric) and commands (listener) per reply."""
    operations = {k: v for k, v in delta.by_label(STORE_OPERATIONS_METRIC, "operation").items() if v}
    commands = {k: v for k, v in delta.by_label(STORE_COMMANDS_METRIC, "command").items() if v}
    writes = sum(v for k, v in commands.items() if k in WRITE_COMMANDS)
    figures: dict[str, Any] = {
        "timed_operations": operations,
        "timed_operations_per_reply": {k: round(v / replies, 3) for k, v in operations.items()}
        if replies
        else {},
    }
    if commands:
        figures["commands"] = commands
        figures["commands_per_reply"] = (
            {k: round(v / replies, 3) for k, v in commands.items()} if replies else {}
        )
        figures["writes_per_reply"] = round(writes / replies, 3) if replies else None
        figures["round_trips_per_reply"] = round(sum(commands.values()) / replies, 3) if replies else None
    else:  # the embedded engine: its writes are transactions, each a timed operation
        transactions = sum(v for k, v in operations.items() if k in WRITE_OPERATIONS)
        figures["writes_per_reply"] = round(transactions / replies, 3) if replies else None
    return figures


# ---------------------------------------------------------------------- service hosts


async def start_hosts(
    children: Children,
    url: str,
    namespace: str,
    services: Sequence[str],
    processes: int,
    *,
    mode: str = "answer",
    prefetch: int = 16,
) -> list[Child]:
    """``processes`` host processes serving ``services`` between them; returns once all consume."""
    hosts = []
    for index, names in enumerate(split(services, processes)):
        argv = [
            sys.executable,
            "-m",
            "bench._common",
            "host",
            "--amqp-url",
            url,
            "--namespace",
            namespace,
            "--services",
            ",".join(names),
            "--mode",
            mode,
            "--prefetch",
            str(prefetch),
        ]
        hosts.append(children.add(Child(f"host{index}", argv)))
    for host in hosts:
        await host.expect("READY", 120)
    return hosts


async def host_command(hosts: Sequence[Child], command: str, answer_prefix: str, within: float) -> int:
    """Send ``command`` to every host; sum the integers of their ``<answer_prefix> N`` answers."""
    for host in hosts:
        host.send(command)
    total = 0
    for host in hosts:
        line = await host.expect(answer_prefix, within)
        total += int(line.split()[1])
    return total


# ---------------------------------------------------------------------- topology


async def declare_topology(url: str, namespace: str) -> None:
    """The exchanges and coordinator queues, declared exactly as the coordinator declares them."""
    from coordinator.broker.rabbitmq import RabbitBroker

    session = await RabbitBroker(url, Topology(namespace), publish_timeout=10, prefetch=1).connect(
        "bench-setup"
    )
    try:
        await session.declare_topology()
    finally:
        await session.close()


async def delete_namespace(
    url: str, namespace: str, services: Iterable[str], extra_queues: Iterable[str] = ()
) -> None:
    """Delete the queues and exchanges of ``namespace`` a run created (quorum queues: unconditionally)."""
    topology = Topology(namespace)
    queues = [
        *(topology.task_queue(s) for s in services),
        topology.replies_queue,
        topology.admin_queue,
        topology.dead_letter_queue,
        *extra_queues,
    ]
    connection = await aio_pika.connect(url, timeout=30)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            try:
                await channel.queue_delete(name, if_unused=False, if_empty=False)
            except Exception:
                channel = await connection.channel()
        for name in topology.exchanges():
            try:
                await channel.exchange_delete(name, if_unused=False)
            except Exception:
                channel = await connection.channel()


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Ready messages in queue ``name`` (a passive declare: no load on the consumer)."""
    queue_ = await channel.declare_queue(name, passive=True)
    return int(queue_.declaration_result.message_count or 0)


def amqp_message(
    body: bytes, message_id: str, kind: str, correlation_id: str | None, user: str
) -> aio_pika.Message:
    """A message with the properties every message of the design carries (persistent, JSON, ids, user)."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        type=kind,
        headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
        user_id=user,
    )


def command_body(release_id: str, service: str, action: Action) -> tuple[str, bytes]:
    """A valid command (as the coordinator would send) for the bare-broker floor."""
    command = Command(
        message_id=uuid.uuid4().hex,
        sent_at=now(),
        release_id=release_id,
        service=service,
        action=action,
        release=ReleaseInfo(id=release_id, name="bench", studies=("SD_BENCH01",), tentative_version="0.0.1"),
    )
    return command.message_id, encode(command)


def new_release_id() -> str:
    return "RE_" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(8))


# ---------------------------------------------------------------------- releases through the coordinator


class Announcements:
    """Records ``release.<state>`` announcements (arrival time) and lets callers wait for one."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, ReleaseState], float] = {}
        self._events: dict[tuple[str, ReleaseState | None], asyncio.Event] = {}
        self.bad: dict[str, str] = {}

    def _event(self, key: tuple[str, ReleaseState | None]) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def __call__(self, announcement: Announcement) -> None:
        key = (announcement.release_id, announcement.state)
        self.arrived.setdefault(key, time.monotonic())
        self._event(key).set()
        if announcement.state in BAD_STATES:
            self.bad.setdefault(announcement.release_id, announcement.release.state_reason or "")
            self._event((announcement.release_id, None)).set()

    async def wait(self, release_id: str, state: ReleaseState, within: float) -> None:
        ok = asyncio.ensure_future(self._event((release_id, state)).wait())
        bad = asyncio.ensure_future(self._event((release_id, None)).wait())
        try:
            done, _ = await asyncio.wait({ok, bad}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ok.cancel()
            bad.cancel()
        if ok in done:
            return
        if bad in done:
            raise RuntimeError(f"{release_id} was {self.bad.get(release_id)!r} instead of reaching {state}")
        raise TimeoutError(f"{release_id} did not reach {state} within {within:g}s")

    def forget(self, release_id: str) -> None:
        for key in [k for k in self._events if k[0] == release_id]:
            del self._events[key]
        for seen in [k for k in self.arrived if k[0] == release_id]:
            del self.arrived[seen]
        self.bad.pop(release_id, None)


async def admin_client(
    url: str, namespace: str, within: float, announcements: Announcements | None
) -> AdminClient:
    client = AdminClient(url, namespace, timeout=within, operator="bench")
    await client.connect()
    if announcements is not None:
        await client.subscribe_announcements(announcements)
    return client


async def create_release(client: AdminClient, name: str, within: float) -> str:
    result = expect_ok(await client.request(CreateRelease(name=name, studies=("SD_BENCH01",)), wait=within))
    assert isinstance(result, ReleaseResult)
    return result.release.id


async def drive_release(
    client: AdminClient, announcements: Announcements, store: Store, name: str, within: float
) -> dict[str, float]:
    """One release create -> staged -> publish -> published; ms per step.

    Step boundaries are the arrivals of the coordinator's announcements (published right after the
    transition is stored): initialize = operator create sent -> ``release.running``; process =
    ``release.running`` -> ``release.staged``; publish = operator publish sent -> ``release.published``.
    ``<step>_stored`` are the same from the store's ``entered`` times, which are the moment the deciding
    reply *arrived* (before it waited for the release's lock), so they move time from initialize to process.
    """
    created_at, created_mono = now(), time.monotonic()
    release_id = await create_release(client, name, within)
    await announcements.wait(release_id, ReleaseState.STAGED, within)
    publish_at, publish_mono = now(), time.monotonic()
    expect_ok(await client.request(PublishRelease(release_id=release_id), wait=within))
    await announcements.wait(release_id, ReleaseState.PUBLISHED, within)
    release = await store.get(release_id)
    assert release is not None
    entered = release.entered
    arrived = {
        state: announcements.arrived[(release_id, state)]
        for state in ReleaseState
        if (release_id, state) in announcements.arrived
    }
    announcements.forget(release_id)
    return {
        "initialize": ms(arrived[ReleaseState.RUNNING] - created_mono),
        "process": ms(arrived[ReleaseState.STAGED] - arrived[ReleaseState.RUNNING]),
        "publish": ms(arrived[ReleaseState.PUBLISHED] - publish_mono),
        "initialize_stored": ms((entered[ReleaseState.RUNNING] - created_at).total_seconds()),
        "process_stored": ms((entered[ReleaseState.STAGED] - entered[ReleaseState.RUNNING]).total_seconds()),
        "publish_stored": ms((entered[ReleaseState.PUBLISHED] - publish_at).total_seconds()),
    }


# ---------------------------------------------------------------------- profiles (py-spy speedscope)

#: Where the time of a sample goes, by the file of its innermost Python frame (native code such as
#: pydantic-core or the bson C extension is charged to the Python frame that called it).
_BUCKETS = (
    ("pydantic", "pydantic (validation, dump, copy)"),
    ("bson", "bson (encode/decode)"),
    ("pymongo", "pymongo driver"),
    ("aiormq", "AMQP client (aio-pika/aiormq/pamqp)"),
    ("aio_pika", "AMQP client (aio-pika/aiormq/pamqp)"),
    ("pamqp", "AMQP client (aio-pika/aiormq/pamqp)"),
    ("structlog", "logging (structlog)"),
    ("/logging/", "logging (structlog)"),
    ("prometheus_client", "metrics (prometheus)"),
    ("mongoeco", "mongoeco (the embedded store)"),
    ("/coordinator/", "coordinator code"),
    ("/schemas/", "schemas code"),
    ("semver", "semver"),
    ("asyncio", "asyncio event loop"),
    ("selectors", "asyncio event loop"),
    ("json", "json"),
)


def _short(file: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return file.split("/", 1)[1] if file.startswith("3.") else file


def _bucket(file: str) -> str:
    for marker, name in _BUCKETS:
        if marker in file:
            return name
    return "other (stdlib, threads)"


def profile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """Where the event-loop thread of a py-spy speedscope profile spent its time.

    Samples whose innermost frame is the selector's ``select`` are *idle* (waiting for the broker, the store
    or a timer); the others are *busy*. Returns the idle share, busy time by package bucket, the busy
    functions with the most self time, and the inclusive share of the busiest project functions.
    """
    data = json.loads(path.read_text())
    frames = data["shared"]["frames"]

    def loop_samples(profile: Mapping[str, Any]) -> int:
        names = {i for i, f in enumerate(frames) if f["name"] == "_run_once"}
        return sum(1 for stack in profile["samples"] if names & set(stack))

    profile = max(data["profiles"], key=loop_samples)
    samples: list[list[int]] = profile["samples"]
    weights: list[float] = profile.get("weights") or [1.0] * len(samples)
    total = sum(weights)
    idle = 0.0
    buckets: dict[str, float] = {}
    self_time: dict[str, float] = {}
    inclusive: dict[str, float] = {}
    for stack, weight in zip(samples, weights, strict=True):
        if not stack:
            continue
        leaf = frames[stack[-1]]
        if leaf["name"].rsplit(".", 1)[-1] in ("select", "poll") and "selectors" in (leaf.get("file") or ""):
            idle += weight
            continue
        bucket = _bucket(leaf.get("file") or "")
        buckets[bucket] = buckets.get(bucket, 0.0) + weight
        name = f"{leaf['name']} ({_short(leaf.get('file') or '?')})"
        self_time[name] = self_time.get(name, 0.0) + weight
        seen: set[str] = set()
        for index in stack:
            frame = frames[index]
            file = frame.get("file") or ""
            if "/coordinator/" in file or "/schemas/" in file:
                key = f"{frame['name']} ({_short(file)})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] = inclusive.get(key, 0.0) + weight
    busy = total - idle

    def shares(values: Mapping[str, float], limit: int) -> dict[str, float]:
        ordered = sorted(values.items(), key=lambda item: -item[1])[:limit]
        return {k: round(v / busy, 4) for k, v in ordered} if busy else {}

    return {
        "file": path.name,
        "samples": len(samples),
        "sampled_seconds": round(total, 2),
        "idle_share": round(idle / total, 4) if total else None,
        "busy_share": round(busy / total, 4) if total else None,
        "busy_by_bucket": shares(buckets, 50),
        "busy_self_top": shares(self_time, top),
        "busy_inclusive_project_top": shares(inclusive, top),
    }


def summarize_profiles(directory: Path, prefix: str) -> dict[str, Any]:
    """:func:`profile_summary` of every ``<prefix>*.speedscope.json`` in ``directory``."""
    out: dict[str, Any] = {}
    for path in sorted(directory.glob(f"{prefix}*.speedscope.json")):
        try:
            out[path.name] = profile_summary(path)
        except (OSError, ValueError, KeyError) as error:
            out[path.name] = {"error": repr(error)}
    return out


# ====================================================================== child process entry points


def _exit_on_stdin_eof(on_eof: Callable[[], None]) -> None:
    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        on_eof()

    threading.Thread(target=watch, name="stdin-eof", daemon=True).start()


def run_coordinator(count_store_commands: bool) -> int:
    """The real coordinator entry point, stopped (SIGTERM, graceful) when the benchmark goes away."""
    _exit_on_stdin_eof(lambda: os.kill(os.getpid(), signal.SIGTERM))
    if count_store_commands:
        from prometheus_client import Counter
        from pymongo import monitoring

        commands = Counter(
            "bench_store_commands",
            "Commands the coordinator sent to the store (benchmark listener)",
            ["command"],
        )

        class CommandCounter(monitoring.CommandListener):
            def started(self, event: monitoring.CommandStartedEvent) -> None:
                commands.labels(event.command_name).inc()

            def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
                pass

            def failed(self, event: monitoring.CommandFailedEvent) -> None:
                pass

        monitoring.register(CommandCounter())
    from coordinator.__main__ import main

    return main([])


async def run_host(url: str, namespace: str, services: Sequence[str], mode: str, prefetch: int) -> None:
    """No-op task services, bare aio-pika, all in one event loop on one connection.

    Why not ``task_sdk`` Runners: a Runner opens its own robust connection (3 channels) per service, sends
    progress before ``staged`` and heartbeats every few seconds; with 300 services that measures the SDK and
    the broker's connection handling, not the coordinator. These services do only what the protocol needs
    (validate the command, publish one persistent reply with a confirm, ack) and are the very same processes
    for the bare-broker floor and for the coordinator, so the ratio isolates the coordinator.

    mode ``answer``: answer every command at once. mode ``hold``: ack commands and keep the ``initialize``
    ones; stdin ``count`` prints ``HELD n``, ``answer`` publishes their replies and prints ``ANSWERED n``.
    Stdin EOF, SIGTERM or SIGINT stops the host.
    """
    topology = Topology(namespace)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.strip())
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    connection = await aio_pika.connect(url, timeout=30, client_properties={"connection_name": "bench-host"})
    user = "guest" if connection.url.user is None else str(connection.url.user)
    publisher = await connection.channel(publisher_confirms=True)
    replies = await publisher.get_exchange(topology.replies_exchange, ensure=False)
    consumer = await connection.channel()
    await consumer.set_qos(prefetch_count=prefetch)
    held: list[Command] = []

    async def reply_to(command: Command) -> None:
        reply = TaskReply(
            message_id=uuid.uuid4().hex,
            sent_at=now(),
            release_id=command.release_id,
            service=command.service,
            in_reply_to=command.message_id,
            action=command.action,
            outcome=SUCCESS[command.action],
            instance_id=f"bench-{command.service}",
            sdk_version="bench",
        )
        await replies.publish(
            amqp_message(encode(reply), reply.message_id, reply.kind.value, reply.release_id, user),
            routing_key=topology.reply_key(command.service, ReplyKind.REPLY),
            mandatory=True,
            timeout=30,
        )

    async def on_command(incoming: AbstractIncomingMessage) -> None:
        command = decode(incoming.body, Command)
        if mode == "answer":
            await reply_to(command)
        elif command.action is Action.INITIALIZE:
            held.append(command)
        await incoming.ack()

    for name in services:
        queue_ = await consumer.declare_queue(
            topology.task_queue(name), durable=True, arguments=topology.task_queue_arguments()
        )
        await queue_.bind(topology.commands_exchange, routing_key=topology.task_binding(name))
        await queue_.consume(on_command, consumer_tag=f"bench-{name}")
    print("READY", flush=True)

    async def control() -> None:
        while (line := await lines.get()) is not None:
            if line == "count":
                print(f"HELD {len(held)}", flush=True)
            elif line == "answer":
                pending, held[:] = list(held), []
                for start in range(0, len(pending), 500):
                    await asyncio.gather(*(reply_to(c) for c in pending[start : start + 500]))
                print(f"ANSWERED {len(pending)}", flush=True)
        stop.set()

    controller = asyncio.create_task(control())
    await stop.wait()
    controller.cancel()
    await asyncio.gather(controller, return_exceptions=True)
    await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench._common", description="Benchmark helper processes."
    )
    commands = parser.add_subparsers(dest="what", required=True)
    coordinator = commands.add_parser("coordinator", help="the real coordinator (RC_* settings)")
    coordinator.add_argument("--count-store-commands", action="store_true")
    profile = commands.add_parser("profile", help="summarize py-spy speedscope profiles")
    profile.add_argument("files", nargs="+", type=Path)
    host = commands.add_parser("host", help="no-op task services")
    host.add_argument("--amqp-url", default=amqp_url())
    host.add_argument("--namespace", required=True)
    host.add_argument("--services", required=True, help="comma-separated service names")
    host.add_argument("--mode", choices=("answer", "hold"), default="answer")
    host.add_argument("--prefetch", type=int, default=16)
    args = parser.parse_args(argv)
    if args.what == "coordinator":
        return run_coordinator(args.count_store_commands)
    if args.what == "profile":
        for path in args.files:
            print(json.dumps(profile_summary(path), indent=2))
        return 0
    asyncio.run(run_host(args.amqp_url, args.namespace, args.services.split(","), args.mode, args.prefetch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
