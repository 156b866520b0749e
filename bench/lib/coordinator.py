"""The store and the real coordinator of a benchmark run, and its Prometheus metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.lib.basics import database_of, free_port, now
from bench.lib.broker import delete_namespace
from bench.lib.procs import STORE_THREADS, Child, Children, Measured
from coordinator.store import HeartbeatRecord, Store, default_store_url, store_for
from rc_cli.client import AdminClient

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


def measured_store(coordinator_pid: int, store: StoreHandle) -> Measured | None:
    """What to meter as the store: the embedded engine's threads inside the coordinator, the store's own
    process, or nothing (a store this run did not start)."""
    return (coordinator_pid, STORE_THREADS) if store.in_process else store.pid


def without_store_threads(cpu: dict[str, float], store: StoreHandle) -> dict[str, float]:
    """The coordinator's CPU without its embedded store's threads (metered as ``store``)."""
    if store.in_process and "coordinator" in cpu and "store" in cpu:
        return cpu | {"coordinator": round(cpu["coordinator"] - cpu["store"], 3)}
    return cpu


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


async def end_run(
    url: str, namespace: str, services: Sequence[str], client: AdminClient | None, store: Store | None
) -> None:
    """The end of a run, whatever happened: close the operator client and the store (see
    :func:`close_store`), delete the namespace's queues."""
    if client is not None:
        await client.close()
    if store is not None:
        await close_store(store)
    await delete_namespace(url, namespace, services)


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
    argv = [sys.executable, "-m", "bench.lib.entry", "coordinator"]
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
#: Durable transactions of the embedded engine: its writes queued together share one (group commit).
STORE_COMMITS_METRIC = "rc_store_commits_total"
STORE_WRITE_BYTES_METRIC = "bench_store_write_bytes_total"
#: Store commands that change something (for "writes per reply").
WRITE_COMMANDS = ("insert", "update", "delete", "findAndModify")
#: Timed store operations that write (on the embedded engine, each one transaction); ``drop_done`` drops the
#: outbox messages the broker confirmed (and, on MongoDB, the journal events already copied to ``events``).
WRITE_OPERATIONS = ("insert_release", "compare_and_set", "record_events", "drop_done", "heartbeat")


def store_figures(delta: Metrics, replies: int, steps: int | None = None) -> dict[str, Any]:
    """Store operations (coordinator's own timing metric) and commands (listener) per reply; on MongoDB
    also the bytes of the write commands per reply and, given the number of release ``steps``, per step."""
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
        written = sum(delta.by_label(STORE_WRITE_BYTES_METRIC, "command").values())
        figures["write_bytes_per_reply"] = round(written / replies) if replies else None
        if steps:
            figures["write_bytes_per_step"] = round(written / steps)
    else:  # the embedded engine: its writes are transactions, each a timed operation
        transactions = sum(v for k, v in operations.items() if k in WRITE_OPERATIONS)
        figures["writes_per_reply"] = round(transactions / replies, 3) if replies else None
        commits = delta.value(STORE_COMMITS_METRIC)
        figures["commits_per_reply"] = round(commits / replies, 3) if replies and commits else None
    return figures
