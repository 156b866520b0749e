"""Operator latency with many stored releases, and coordinator memory as releases go through it (issue 7).

1. **list / show latency**: releases (valid :class:`schemas.documents.Release` documents, converted by the
   store's own conversion, mostly published, a few canceled or failed, with their audit events) are inserted
   straight into the store in bulk, the real coordinator runs on it, and an operator client (``AdminClient``,
   what ``rc`` uses) times ``release list`` (first page, 50) and ``release show ID`` (20 recent events, a
   random release) ``--calls`` times each: p50 and p95. Measured first with ``--small`` releases stored
   (the baseline of the ratio), then with ``--releases`` (default 10,000); plus one timing of the real ``rc``
   command for each (a new Python process: includes interpreter start-up).
2. **memory**: a fresh coordinator with 3 no-op services; resident memory (``VmRSS``) after ``--memory-first``
   (10) full releases (create -> staged -> publish -> published) and after ``--memory-releases`` (1,000).

Targets: list p95 < 100 ms, show p95 < 50 ms with 10,000 releases; memory growth < 20 % from 10 to 1,000.

    python -m bench.scale [--releases 10000] [--memory-releases 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench._common import (
    RESULTS,
    Announcements,
    Children,
    admin_client,
    amqp_url,
    connect_store,
    database_of,
    declare_topology,
    delete_namespace,
    drive_release,
    last_line,
    machine_info,
    ms,
    new_namespace,
    now,
    rabbitmq_version,
    ratio,
    register_services,
    rss_kib,
    say,
    start_coordinator,
    start_hosts,
    start_store,
    summary,
    write_results,
)
from coordinator.store import Store, _event_doc, _to_doc
from rc_cli.client import AdminClient, expect_ok
from schemas.documents import Event, Release, Task
from schemas.enums import Action, EventKind, Outcome, ReleaseState, TaskState
from schemas.messages import ListReleases, ShowRelease

NAME = "scale"
LIST_TARGET_MS = 100.0
SHOW_TARGET_MS = 50.0
MEMORY_GROWTH_TARGET = 0.20
SERVICES = ("file-service", "portal", "search-index")
_FINAL = {ReleaseState.PUBLISHED: TaskState.PUBLISHED, ReleaseState.CANCELED: TaskState.CANCELED}
_PATH = {
    ReleaseState.PUBLISHED: (
        ReleaseState.WAITING,
        ReleaseState.INITIALIZING,
        ReleaseState.RUNNING,
        ReleaseState.STAGED,
        ReleaseState.PUBLISHING,
        ReleaseState.PUBLISHED,
    ),
    ReleaseState.CANCELED: (ReleaseState.WAITING, ReleaseState.INITIALIZING, ReleaseState.CANCELED),
    ReleaseState.FAILED: (
        ReleaseState.WAITING,
        ReleaseState.INITIALIZING,
        ReleaseState.RUNNING,
        ReleaseState.FAILED,
    ),
}


# ---------------------------------------------------------------------- stored releases


def stored_release(seq: int) -> tuple[Release, list[Event]]:
    """Release number ``seq`` of a long history (mostly published), with one event per transition."""
    state = (
        ReleaseState.CANCELED
        if seq % 15 == 0
        else ReleaseState.FAILED
        if seq % 33 == 0
        else ReleaseState.PUBLISHED
    )
    started = now() - timedelta(hours=10 * (20_000 - seq))
    path = _PATH[state]
    entered = {s: started + timedelta(minutes=10 * i) for i, s in enumerate(path)}
    task_state = _FINAL.get(state, TaskState.FAILED)
    tasks = {
        s: Task(
            service=s,
            state=task_state,
            progress=100.0,
            last_message=str(task_state),
            last_message_id=f"{seq:032x}",
            answers={Action.INITIALIZE: Outcome.ACCEPTED},
            entered={TaskState.INITIALIZED: started, task_state: entered[state]},
            updated_at=entered[state],
        )
        for s in SERVICES
    }
    release_id = f"RE_{seq:08d}"
    release = Release(
        id=release_id,
        seq=seq,
        name=f"Release {seq}",
        description="stored by bench.scale",
        studies=("SD_ABCDEFGH", "SD_12345678"),
        tags=("bench",),
        author="bench",
        tentative_version=f"0.{seq // 1000}.{seq % 1000 + 1}",
        final_version=f"{seq}.0.0" if state is ReleaseState.PUBLISHED else None,
        state=state,
        state_reason=None if state is ReleaseState.PUBLISHED else f"{state} by bench",
        tasks=tasks,
        entered=entered,
        revision=len(path) * 4,
        created_at=started,
        updated_at=entered[state],
    )
    events = [
        Event(
            id=f"{release_id}.r{i}",
            release_id=release_id,
            at=entered[s],
            kind=EventKind.CREATED if i == 0 else EventKind.TRANSITION,
            reason=f"entered {s}",
            state_before=path[i - 1] if i else None,
            state_after=s,
        )
        for i, s in enumerate(path)
    ]
    return release, events


async def insert_releases(
    store: Store, first: int, last: int, timings: list[tuple[int, float]] | None = None
) -> int:
    """Insert releases ``first..last`` (inclusive) and their events, in bulk; returns the events count.

    ``timings`` gets ``(releases stored after the batch, seconds the batch took)`` per batch of 200.
    """
    events_total = 0
    for start in range(first, last + 1, 200):
        releases: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for seq in range(start, min(start + 200, last + 1)):
            release, its_events = stored_release(seq)
            releases.append(_to_doc(release))
            events.extend(_event_doc(e) for e in its_events)
        started = time.perf_counter()
        await store.releases.insert_many(releases, ordered=False)
        await store.events.insert_many(events, ordered=False)
        if timings is not None:
            timings.append((start + len(releases) - 1, round(time.perf_counter() - started, 3)))
        events_total += len(events)
        if (start + len(releases) - 1) % 1000 == 0 or start + len(releases) > last:
            say(f"stored releases up to {start + len(releases) - 1}")
    return events_total


async def time_requests(client: AdminClient, stored: int, calls: int) -> dict[str, Any]:
    lists: list[float] = []
    shows: list[float] = []
    rng = random.Random(7)
    for _ in range(calls):
        started = time.perf_counter()
        expect_ok(await client.request(ListReleases()))
        lists.append(ms(time.perf_counter() - started))
        release_id = f"RE_{rng.randint(1, stored):08d}"
        started = time.perf_counter()
        expect_ok(await client.request(ShowRelease(release_id=release_id)))
        shows.append(ms(time.perf_counter() - started))
    return {"stored": stored, "list_ms": summary(lists), "show_ms": summary(shows)}


def time_rc(url: str, namespace: str, *args: str) -> float:
    """One run of the real ``rc`` command (a new interpreter), in ms."""
    env = {"RC_AMQP_URL": url, "RC_NAMESPACE": namespace, "RC_TIMEOUT": "60"}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "rc_cli", *args],
        env={**__import__("os").environ, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )
    elapsed = ms(time.perf_counter() - started)
    if completed.returncode != 0:
        raise RuntimeError(
            f"rc {' '.join(args)} failed ({completed.returncode}): {completed.stderr.decode()[-500:]}"
        )
    return elapsed


async def latency(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = new_namespace("scale")
    result: dict[str, Any] = {"namespace": namespace}
    async with Children() as children:
        store_db = None
        client = None
        try:
            store = await start_store(children)
            # A client of its own for the bulk inserts: the single-threaded embedded store can be busy for
            # seconds on one batch, and the default heartbeat would reset the pool (cancelling the insert).
            bulk: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                store.url,
                tz_aware=True,
                heartbeatFrequencyMS=600_000,
                serverSelectionTimeoutMS=600_000,
                connectTimeoutMS=600_000,
            )
            store_db = Store(bulk, database_of(namespace))
            await store_db.ensure_indexes()
            small = min(args.small, args.releases)
            await insert_releases(store_db, 1, small)
            coordinator = await start_coordinator(children, url, store.url, namespace)
            client = await admin_client(url, namespace, 60, None)
            for _ in range(3):  # warm-up
                expect_ok(await client.request(ListReleases()))
            say(f"{args.calls} list + show requests with {small} releases stored")
            result["baseline"] = await time_requests(client, small, args.calls)
            started = time.perf_counter()
            batches: list[tuple[int, float]] = []
            events = await insert_releases(store_db, small + 1, args.releases, batches)
            result["insert_batch_seconds"] = batches
            result["insert_seconds"] = round(time.perf_counter() - started, 1)
            result["events_stored"] = events
            say(f"{args.calls} list + show requests with {args.releases} releases stored")
            result["large"] = await time_requests(client, args.releases, args.calls)
            rc_show_id = f"RE_{args.releases // 2:08d}"
            result["rc_command_ms"] = {
                "list": await asyncio.to_thread(time_rc, url, namespace, "release", "list"),
                "show": await asyncio.to_thread(time_rc, url, namespace, "release", "show", rc_show_id),
                "version_only": await asyncio.to_thread(time_rc, url, namespace, "--help"),
            }
            result["coordinator_rss_kib"] = rss_kib(coordinator.pid)
            await client.close()
            client = None
            await children.stop(coordinator.child)
        finally:
            if client is not None:
                await client.close()
            if store_db is not None:
                await store_db.close()
            await delete_namespace(url, namespace, [])
    return result


# ---------------------------------------------------------------------- memory


async def memory(args: argparse.Namespace, url: str) -> dict[str, Any]:
    namespace = new_namespace("mem")
    services = list(SERVICES)
    result: dict[str, Any] = {"namespace": namespace, "services": len(services)}
    async with Children() as children:
        store_db = None
        client = None
        try:
            store = await start_store(children)
            await declare_topology(url, namespace)
            await start_hosts(children, url, namespace, services, 1)
            store_db = connect_store(store.url, namespace)
            await register_services(store_db, services)
            coordinator = await start_coordinator(children, url, store.url, namespace)
            announcements = Announcements()
            client = await admin_client(url, namespace, 120, announcements)
            rss: dict[str, int] = {"started": rss_kib(coordinator.pid)}
            done = 0
            started = time.perf_counter()

            async def worker(count: int) -> None:
                nonlocal done
                assert client is not None
                assert store_db is not None
                for _ in range(count):
                    await drive_release(client, announcements, store_db, f"mem {done}", 120)
                    done += 1
                    if done % 100 == 0:
                        say(f"{done} releases published")

            await worker(args.memory_first)
            await asyncio.sleep(1)
            rss["first"] = rss_kib(coordinator.pid)
            say(f"after {done} releases: {rss['first']} KiB")
            left = args.memory_releases - done
            workers = max(1, min(args.concurrency, left))
            await asyncio.gather(
                *(worker(left // workers + (1 if i < left % workers else 0)) for i in range(workers))
            )
            await asyncio.sleep(1)
            rss["last"] = rss_kib(coordinator.pid)
            say(f"after {done} releases: {rss['last']} KiB")
            result.update(
                {
                    "releases": done,
                    "first": args.memory_first,
                    "rss_kib": rss,
                    "store_rss_kib": rss_kib(store.pid) if store.pid else None,
                    "growth": round(rss["last"] / rss["first"] - 1, 4),
                    "releases_per_s": round(done / (time.perf_counter() - started), 2),
                    "concurrency": workers,
                }
            )
            await client.close()
            client = None
            await children.stop(coordinator.child)
        finally:
            if client is not None:
                await client.close()
            if store_db is not None:
                await store_db.close()
            await delete_namespace(url, namespace, services)
    return result


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=10_000, help="releases stored (default 10,000)")
    parser.add_argument("--small", type=int, default=10, help="releases stored for the baseline (default 10)")
    parser.add_argument("--calls", type=int, default=50, help="list and show requests each (default 50)")
    parser.add_argument("--memory-first", type=int, default=10, help="releases before the first RSS reading")
    parser.add_argument(
        "--memory-releases", type=int, default=1000, help="releases before the last RSS reading"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="releases driven at once for the memory part"
    )
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds the whole run may take")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = amqp_url()
    data: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(await rabbitmq_version(url)),
        "method": {
            "latency": "AdminClient request -> answer, list = first page of 50, show = 20 recent events",
            "baseline": f"the same requests with {args.small} releases stored",
            "memory": "VmRSS of the coordinator process after the first and the last full release",
        },
    }
    async with asyncio.timeout(args.time_limit):
        data["latency"] = await latency(args, url)
        large, base = data["latency"]["large"], data["latency"]["baseline"]
        say(
            f"{args.releases} stored: list p50 {large['list_ms']['median']:.1f} "
            f"p95 {large['list_ms']['p95']:.1f} ms, "
            f"show p50 {large['show_ms']['median']:.1f} p95 {large['show_ms']['p95']:.1f} ms"
        )
        data["memory"] = await memory(args, url)
    data["targets"] = {
        "list_p95_ms": {"target": LIST_TARGET_MS, "met": large["list_ms"]["p95"] < LIST_TARGET_MS},
        "show_p95_ms": {"target": SHOW_TARGET_MS, "met": large["show_ms"]["p95"] < SHOW_TARGET_MS},
        "memory_growth": {
            "target": MEMORY_GROWTH_TARGET,
            "met": data["memory"]["growth"] < MEMORY_GROWTH_TARGET,
        },
    }
    data["ratio"] = ratio(large["list_ms"]["p95"], base["list_ms"]["p95"])
    return data


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = asyncio.run(run(args))
    path = write_results(NAME, data, args.results_dir)
    latency_, memory_ = data["latency"], data["memory"]
    for label, key in (("baseline", "baseline"), ("large", "large")):
        figures = latency_[key]
        print(
            f"{label:>8} ({figures['stored']} stored): list p50 {figures['list_ms']['median']:.1f} "
            f"p95 {figures['list_ms']['p95']:.1f} ms; show p50 {figures['show_ms']['median']:.1f} "
            f"p95 {figures['show_ms']['p95']:.1f} ms"
        )
    print(f"rc command (new process) ms: {latency_['rc_command_ms']}")
    print(
        f"memory: {memory_['rss_kib']['first']} KiB after {memory_['first']} releases, "
        f"{memory_['rss_kib']['last']} KiB after {memory_['releases']} (growth {memory_['growth']:.1%})"
    )
    print(
        "targets: " + ", ".join(f"{k} {'met' if v['met'] else 'NOT met'}" for k, v in data["targets"].items())
    )
    print(f"figures written to {path.name} in {args.results_dir.name}/")
    print(last_line("scale_list_p95", latency_["large"]["list_ms"]["p95"], "ms", data["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
