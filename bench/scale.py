"""Operator latency with many stored releases, and coordinator memory as releases go through it (issues 7, 9).

1. **Operator latency.** Two stores side by side, each a fresh database with its own coordinator and
   namespace: the *baseline* with ``--small`` (10) releases stored, the *large* one with ``--releases``
   (10,000). An operator client (``AdminClient``, what ``rc`` uses) times, ``--calls`` times each and
   alternating between the two (so both see the same machine load): ``release list`` (first page, 50),
   ``release show ID`` (20 recent events, a random release), ``study show SD_X`` (20 releases; a study in
   every release and one in 1 % of them) and ``release events ID`` (first page, 50, a random release):
   p50 and p95. Plus one run of the real ``rc`` command for each (a new Python process: includes
   interpreter start-up).
2. **The store alone, and the coordinator without the broker.** The very queries the coordinator makes
   for each request (``coordinator/store.py``: ``get``, ``state_of``, ``list_releases``, ``event_page``,
   ``study_summary``, ``study_releases``), sent with PyMongo to the same two stores, timed the same way:
   what of the latency is the store's, and what is the coordinator's + the broker round trip. And the same
   requests handled by ``Coordinator.execute`` in this process on the same stores (store + coordinator
   work, no broker, no second process).
3. **Memory.** A fresh coordinator with 3 no-op services; resident memory (``VmRSS``) after
   ``--memory-first`` (10) full releases (create -> staged -> publish -> published) and after
   ``--memory-releases`` (1,000).

How the releases get into the store. They are valid :class:`schemas.documents.Release` documents (mostly
published, a few canceled or failed) and their audit events, converted by the store's own conversion. The
embedded store (mongoeco) cannot take 10,000 of them over the wire in bounded time: its ``insert`` command
inserts one document at a time and, for a single document, compares the new ``_id`` with every stored
document (O(n^2) for a load; measured 100 releases + their events in 1.5 s at 300 stored, 7.4 s at 600), and
its unique-index build compares every document with every earlier one (O(n^2) too; 26 s for 1,000
releases, so about 45 min for 10,000). So the store is a child of this script (``python -m bench.scale
store``) that creates the coordinator's indexes (the same definitions, ``RELEASE_INDEXES`` and
``EVENT_INDEXES``) on the empty collections, inserts the documents through mongoeco's in-process batched
insert (unique keys checked against the index, O(n) in all), and then serves that very database with
mongoeco's wire server, exactly as ``python -m coordinator.embedded_store`` does. The coordinator then
starts on it as on any store (its ``ensure_indexes`` finds the indexes in place). The load time is printed
and recorded. With ``RC_BENCH_MONGODB_URL`` (a real MongoDB) the releases are inserted over the wire with
``insert_many`` instead, into fresh databases, before the coordinator creates the indexes.

Targets: list p95 < 100 ms, show p95 < 50 ms, study show and release events < 100 ms with 10,000 releases;
memory growth < 20 % from 10 to 1,000.

    python -m bench.scale [--releases 10000] [--calls 20] [--memory-releases 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pymongo import DESCENDING, AsyncMongoClient

from bench._common import (
    RESULTS,
    Announcements,
    Child,
    Children,
    CoordinatorHandle,
    StoreHandle,
    admin_client,
    amqp_url,
    close_store,
    configured_store,
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
from coordinator.service import Coordinator
from coordinator.settings import Settings as CoordinatorSettings
from coordinator.store import _BRIEF, EVENT_INDEXES, RELEASE_INDEXES, Store, _event_doc, _to_doc
from rc_cli.client import AdminClient, expect_ok
from schemas.documents import AuditEvent, Release, Task
from schemas.enums import PUBLISHED_PATH, Action, EventKind, Outcome, ReleaseState, TaskState
from schemas.messages import (
    AdminAnswer,
    AdminRequest,
    ListEvents,
    ListReleases,
    ShowRelease,
    ShowStudy,
    encode,
)

NAME = "scale"
#: Targets (ms, p95) with 10,000 releases stored, issues 7 and 9.
TARGETS_MS = {"list": 100.0, "show": 50.0, "study": 100.0, "events": 100.0}
MEMORY_GROWTH_TARGET = 0.20
SERVICES = ("file-service", "portal", "search-index")
#: In every stored release (the worst case of ``rc study show``: 10,000 releases to count).
COMMON_STUDY = "SD_ABCDEFGH"
#: Release ``seq`` also has study ``SD_000000<seq % 100>``: each of those is in 1 % of the releases.
RARE_STUDIES = 100
#: The timed operator requests, in the order they are timed.
OPERATIONS = ("list", "show", "study", "study_rare", "events")
LOAD_BATCH = 500
_FINAL = {ReleaseState.PUBLISHED: TaskState.PUBLISHED, ReleaseState.CANCELED: TaskState.CANCELED}
_PATH = {
    ReleaseState.PUBLISHED: PUBLISHED_PATH,
    ReleaseState.CANCELED: (ReleaseState.WAITING, ReleaseState.INITIALIZING, ReleaseState.CANCELED),
    ReleaseState.FAILED: (
        ReleaseState.WAITING,
        ReleaseState.INITIALIZING,
        ReleaseState.RUNNING,
        ReleaseState.FAILED,
    ),
}


# ---------------------------------------------------------------------- stored releases


def rare_study(seq: int) -> str:
    return f"SD_{seq % RARE_STUDIES:08d}"


def stored_release(seq: int) -> tuple[Release, list[AuditEvent]]:
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
        studies=(COMMON_STUDY, rare_study(seq)),
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
        AuditEvent(
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


def release_batches(count: int, batch: int = LOAD_BATCH) -> Any:
    """``(release documents, event documents)`` of releases ``1..count``, ``batch`` releases at a time."""
    for start in range(1, count + 1, batch):
        releases: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for seq in range(start, min(start + batch, count + 1)):
            release, its_events = stored_release(seq)
            releases.append(_to_doc(release))
            events.extend(_event_doc(e) for e in its_events)
        yield releases, events


def _index_specs(specs: list[tuple[list[tuple[str, int]], dict[str, Any]]]) -> list[dict[str, Any]]:
    """``createIndexes`` specs of the coordinator's index definitions (what PyMongo sends for them)."""
    return [{"key": dict(keys), **options} for keys, options in specs]


# ---------------------------------------------------------------------- the preloaded store (child)


async def _serve_preloaded(database: str, releases: int) -> int:
    """Create the coordinator's indexes, insert ``releases`` releases and their events in batches
    (in-process), print ``LOADED {json}``, then serve the database on the wire and print ``READY uri``."""
    from mongoeco import AsyncMongoClient as EcoClient
    from mongoeco.wire import AsyncMongoEcoProxyServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def watch_stdin() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 4096):
                pass
        loop.call_soon_threadsafe(stop.set)

    threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()
    async with EcoClient() as client:
        db = client[database]
        started = time.perf_counter()
        await db.command({"createIndexes": "releases", "indexes": _index_specs(RELEASE_INDEXES)})
        await db.command({"createIndexes": "events", "indexes": _index_specs(EVENT_INDEXES)})
        indexed = time.perf_counter()
        generate = insert = 0.0
        stored = events = 0
        mark = time.perf_counter()
        for release_docs, event_docs in release_batches(releases):
            generated = time.perf_counter()
            generate += generated - mark
            await db["releases"].insert_many(release_docs, ordered=False)
            await db["events"].insert_many(event_docs, ordered=False)
            mark = time.perf_counter()
            insert += mark - generated
            stored += len(release_docs)
            events += len(event_docs)
            if stored % 2000 == 0 and stored < releases:
                print(f"stored {stored} releases ({mark - started:.1f}s)", flush=True)
        loaded = {
            "releases": stored,
            "events": events,
            "index_seconds": round(indexed - started, 3),
            "generate_seconds": round(generate, 2),
            "insert_seconds": round(insert, 2),
            "total_seconds": round(time.perf_counter() - started, 2),
        }
        if stored:
            stats = await db.command({"collStats": "releases"})
            loaded["release_document_bytes"] = int(stats.get("avgObjSize", 0))
        print(f"LOADED {json.dumps(loaded)}", flush=True)
        async with AsyncMongoEcoProxyServer(client=client, host="127.0.0.1", port=0) as server:
            print(f"READY {server.address.uri}", flush=True)
            await stop.wait()
    return 0


def serve_store(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale store")
    parser.add_argument("--database", required=True)
    parser.add_argument("--releases", type=int, required=True)
    args = parser.parse_args(argv)
    return asyncio.run(_serve_preloaded(args.database, args.releases))


@dataclass
class Site:
    """One store with ``stored`` releases, its coordinator and an operator client."""

    label: str
    stored: int
    namespace: str
    store: StoreHandle | None = None
    coordinator: CoordinatorHandle | None = None
    client: AdminClient | None = None
    direct: AsyncMongoClient[dict[str, Any]] | None = None
    #: The coordinator's request handling run in this process on ``direct`` (no broker).
    in_process: Coordinator | None = None
    load: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return database_of(self.namespace)

    def db(self) -> Any:
        assert self.direct is not None
        return self.direct[self.database]


def _patient_client(url: str) -> AsyncMongoClient[dict[str, Any]]:
    # The single-threaded embedded store can be busy for seconds; the default heartbeat would then reset
    # the pool (cancelling what is in flight).
    return AsyncMongoClient(
        url,
        tz_aware=True,
        heartbeatFrequencyMS=600_000,
        serverSelectionTimeoutMS=600_000,
        connectTimeoutMS=600_000,
    )


async def start_preloaded_store(children: Children, site: Site, within: float) -> None:
    """The store of ``site`` with its releases in it (see the module docstring)."""
    configured = configured_store()
    if configured:
        site.store = StoreHandle(configured, None)
        client = _patient_client(configured)
        try:
            started = time.perf_counter()
            events = 0
            for release_docs, event_docs in release_batches(site.stored):
                await client[site.database]["releases"].insert_many(release_docs, ordered=False)
                await client[site.database]["events"].insert_many(event_docs, ordered=False)
                events += len(event_docs)
            site.load = {
                "releases": site.stored,
                "events": events,
                "total_seconds": round(time.perf_counter() - started, 2),
                "how": "insert_many over the wire, indexes built afterwards by the coordinator",
            }
        finally:
            await client.close()
        return
    child = children.add(
        Child(
            f"store-{site.label}",
            [
                sys.executable,
                "-m",
                "bench.scale",
                "store",
                "--database",
                site.database,
                "--releases",
                str(site.stored),
            ],
        )
    )
    loaded = await child.expect("LOADED ", within)
    site.load = {
        **json.loads(loaded.split(" ", 1)[1]),
        "how": "in-process batched insert into mongoeco after creating the indexes, then served on the wire",
    }
    ready = await child.expect("READY ", 60)
    site.store = StoreHandle(ready.split(" ", 1)[1].strip(), child)


# ---------------------------------------------------------------------- timing


def random_ids(stored: int, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"RE_{rng.randint(1, stored):08d}" for _ in range(count)]


def admin_operation(name: str, release_id: str, stored: int) -> Any:
    """The operator request ``name`` (the defaults of the ``rc`` command)."""
    match name:
        case "list":
            return ListReleases()
        case "show":
            return ShowRelease(release_id=release_id)
        case "study":
            return ShowStudy(study=COMMON_STUDY)
        case "study_rare":
            return ShowStudy(study=rare_study(min(stored, 42)))
        case _:
            return ListEvents(release_id=release_id)


async def store_queries(site: Site, name: str, release_id: str) -> dict[str, float]:
    """The store queries the coordinator makes for request ``name`` (``coordinator/store.py``), one after
    the other (the coordinator sends those of ``study show`` at once); ms per query."""
    db = site.db()
    releases, events = db["releases"], db["events"]
    timed: dict[str, float] = {}

    async def timing(label: str, awaitable: Awaitable[Any]) -> None:
        started = time.perf_counter()
        await awaitable
        timed[label] = ms(time.perf_counter() - started)

    by_event = [("at", DESCENDING), ("_id", DESCENDING)]
    match name:
        case "list":  # list_releases
            await timing("list_releases", releases.find({}, sort=[("seq", DESCENDING)], limit=51).to_list())
        case "show":  # get + events_of(20)
            await timing("get", releases.find_one({"_id": release_id}))
            await timing(
                "event_page", events.find({"release_id": release_id}, sort=by_event, limit=21).to_list()
            )
        case "study" | "study_rare":  # study_summary + study_releases(20)
            study = COMMON_STUDY if name == "study" else rare_study(min(site.stored, 42))
            brief = dict(_BRIEF)
            by_seq = [("seq", DESCENDING)]
            await timing("study_latest", releases.find_one({"studies": study}, sort=by_seq, projection=brief))
            await timing(
                "study_published",
                releases.find_one(
                    {"studies": study, "state": ReleaseState.PUBLISHED.value},
                    sort=[("final_sort", DESCENDING)],
                    projection=brief,
                ),
            )
            await timing("study_count", releases.count_documents({"studies": study}))
            await timing(
                "study_releases",
                releases.find({"studies": study}, sort=by_seq, limit=21, projection=brief).to_list(),
            )
        case _:  # state_of + event_page(50)
            await timing(
                "state_of", releases.find_one({"_id": release_id}, projection={"_id": 0, "state": 1})
            )
            await timing(
                "event_page", events.find({"release_id": release_id}, sort=by_event, limit=51).to_list()
            )
    return timed


async def time_sites(
    sites: Sequence[Site], calls: int, measure: Callable[[Site, str, str], Awaitable[dict[str, float]]]
) -> dict[str, dict[str, Any]]:
    """``calls`` rounds; in each, every operation on every site in turn. Per site: ms summaries of every
    operation (``<op>_ms``) and of every labelled part of it (``<op>.<part>_ms``)."""
    ids = {site.label: random_ids(site.stored, calls, 7) for site in sites}
    samples: dict[str, dict[str, list[float]]] = {site.label: {} for site in sites}
    for round_ in range(calls):
        for name in OPERATIONS:
            for site in sites:
                parts = await measure(site, name, ids[site.label][round_])
                into = samples[site.label]
                into.setdefault(f"{name}_ms", []).append(round(sum(parts.values()), 3))
                if len(parts) > 1:
                    for part, value in parts.items():
                        into.setdefault(f"{name}.{part}_ms", []).append(value)
    return {
        site.label: {"stored": site.stored, **{k: summary(v) for k, v in samples[site.label].items()}}
        for site in sites
    }


async def through_coordinator(site: Site, name: str, release_id: str) -> dict[str, float]:
    assert site.client is not None
    started = time.perf_counter()
    expect_ok(await site.client.request(admin_operation(name, release_id, site.stored)))
    return {"request": ms(time.perf_counter() - started)}


async def coordinator_in_process(site: Site, name: str, release_id: str) -> dict[str, float]:
    """The coordinator's own handling of the request (``Coordinator.execute`` + encoding the answer), in
    this process, on the same store: the store queries and the coordinator's work, without the broker."""
    assert site.in_process is not None
    request = AdminRequest(
        message_id=uuid.uuid4().hex,
        sent_at=now(),
        operator="bench",
        operation=admin_operation(name, release_id, site.stored),
    )
    started = time.perf_counter()
    result = await site.in_process.execute(request, "bench")
    answer = AdminAnswer(
        message_id=uuid.uuid4().hex, sent_at=now(), in_reply_to=request.message_id, ok=True, result=result
    )
    encode(answer)
    return {"execute": ms(time.perf_counter() - started)}


def time_rc(url: str, namespace: str, *args: str) -> float:
    """One run of the real ``rc`` command (a new interpreter), in ms."""
    env = {**os.environ, "RC_AMQP_URL": url, "RC_NAMESPACE": namespace, "RC_TIMEOUT": "60"}
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "rc_cli", *args], env=env, capture_output=True, timeout=120, check=False
    )
    elapsed = ms(time.perf_counter() - started)
    if completed.returncode != 0:
        raise RuntimeError(
            f"rc {' '.join(args)} failed ({completed.returncode}): {completed.stderr.decode()[-500:]}"
        )
    return elapsed


async def latency(args: argparse.Namespace, url: str) -> dict[str, Any]:
    small = min(args.small, args.releases)
    sites = [
        Site("baseline", small, new_namespace("scale-base")),
        Site("large", args.releases, new_namespace("scale")),
    ]
    result: dict[str, Any] = {"namespaces": {s.label: s.namespace for s in sites}}
    async with Children() as children:
        try:
            say(f"loading {small} and {args.releases} releases into two fresh stores")
            started = time.perf_counter()
            await asyncio.gather(*(start_preloaded_store(children, s, args.load_limit) for s in sites))
            result["load"] = {s.label: s.load for s in sites}
            result["load_wall_seconds"] = round(time.perf_counter() - started, 1)
            say(f"loaded: {json.dumps(sites[1].load)}")
            result["coordinator_start_seconds"] = {}
            for site in sites:
                assert site.store is not None
                started = time.perf_counter()
                # The coordinator's start-up includes its ensure_indexes (index builds on a real MongoDB).
                site.coordinator = await start_coordinator(children, url, site.store.url, site.namespace)
                result["coordinator_start_seconds"][site.label] = round(time.perf_counter() - started, 2)
                site.client = await admin_client(url, site.namespace, 120, None)
                site.direct = _patient_client(site.store.url)
                site.in_process = Coordinator(
                    CoordinatorSettings(namespace=site.namespace), Store(site.direct, site.database)
                )
            say(f"coordinators active (start-up s: {result['coordinator_start_seconds']})")
            for site in sites:  # warm-up: every request once, and the store queries once
                for name in OPERATIONS:
                    await through_coordinator(site, name, f"RE_{site.stored:08d}")
                    await store_queries(site, name, f"RE_{site.stored:08d}")
            say(f"{args.calls} rounds of {', '.join(OPERATIONS)} through the coordinator, alternating stores")
            result.update(await time_sites(sites, args.calls, through_coordinator))
            say(f"{args.calls} rounds of the same store queries sent directly with PyMongo")
            result["store_direct"] = await time_sites(sites, args.calls, store_queries)
            say(f"{args.calls} rounds of the same requests handled in this process (no broker)")
            result["coordinator_in_process"] = await time_sites(sites, args.calls, coordinator_in_process)
            large = sites[1]
            middle = f"RE_{max(1, args.releases // 2):08d}"
            say("one run of each real rc command (new process)")
            result["rc_command_ms"] = {
                "release list": await asyncio.to_thread(time_rc, url, large.namespace, "release", "list"),
                "release show": await asyncio.to_thread(
                    time_rc, url, large.namespace, "release", "show", middle
                ),
                "study show": await asyncio.to_thread(
                    time_rc, url, large.namespace, "study", "show", COMMON_STUDY
                ),
                "release events": await asyncio.to_thread(
                    time_rc, url, large.namespace, "release", "events", middle
                ),
                "--help only": await asyncio.to_thread(time_rc, url, large.namespace, "--help"),
            }
            result["rss_kib"] = {
                s.label: {
                    "coordinator": rss_kib(s.coordinator.pid) if s.coordinator else None,
                    "store": s.store.pid and rss_kib(s.store.pid) if s.store else None,
                }
                for s in sites
            }
            for site in sites:
                if site.client is not None:
                    await site.client.close()
                    site.client = None
                if site.coordinator is not None:
                    await children.stop(site.coordinator.child)
        finally:
            for site in sites:
                if site.client is not None:
                    await site.client.close()
                if site.direct is not None:
                    if configured_store():
                        with contextlib.suppress(Exception):
                            await site.direct.drop_database(site.database)
                    await site.direct.close()
                await delete_namespace(url, site.namespace, [])
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
                await close_store(store_db)
            await delete_namespace(url, namespace, services)
    return result


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=10_000, help="releases stored (default 10,000)")
    parser.add_argument("--small", type=int, default=10, help="releases stored for the baseline (default 10)")
    parser.add_argument("--calls", type=int, default=20, help="rounds of timed requests (default 20)")
    parser.add_argument("--memory-first", type=int, default=10, help="releases before the first RSS reading")
    parser.add_argument(
        "--memory-releases", type=int, default=1000, help="releases before the last RSS reading"
    )
    parser.add_argument(
        "--concurrency", type=int, default=8, help="releases driven at once for the memory part"
    )
    parser.add_argument("--load-limit", type=float, default=600.0, help="seconds the store load may take")
    parser.add_argument("--time-limit", type=float, default=1800.0, help="seconds the whole run may take")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


def _p95(figures: dict[str, Any], key: str) -> float:
    return float(figures.get(key, {}).get("p95", float("nan")))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = amqp_url()
    data: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(await rabbitmq_version(url)),
        "method": {
            "latency": "AdminClient request -> answer (what rc sends): list = first page of 50, show = 20 "
            "recent events of a random release, study = rc study show (20 releases) of a study in every "
            "release, study_rare = of a study in 1 % of them, events = first page of 50 of a random release",
            "baseline": f"the same requests, alternating with them, against {args.small} releases stored in "
            "a second store with its own coordinator",
            "store_direct": "the queries coordinator/store.py makes for each request, sent one after the "
            "other with PyMongo to the same stores (<op>_ms = their sum, <op>.<query>_ms each)",
            "coordinator_in_process": "Coordinator.execute of the same requests + encoding the answer, in "
            "the benchmark process on the same stores: store + coordinator work, no broker",
            "load": "see the module docstring: indexes created first, then batched in-process inserts",
            "memory": "VmRSS of the coordinator process after the first and the last full release",
        },
    }
    async with asyncio.timeout(args.time_limit):
        data["latency"] = await latency(args, url)
        large, direct = data["latency"]["large"], data["latency"]["store_direct"]["large"]
        say(
            f"{args.releases} stored, p95 ms through the coordinator / store alone: "
            + ", ".join(
                f"{op} {_p95(large, f'{op}_ms'):.1f} / {_p95(direct, f'{op}_ms'):.1f}" for op in OPERATIONS
            )
        )
        data["memory"] = await memory(args, url)
    data["targets"] = {
        **{
            f"{op}_p95_ms": {"target": target, "met": _p95(large, f"{op}_ms") < target}
            for op, target in TARGETS_MS.items()
        },
        "memory_growth": {
            "target": MEMORY_GROWTH_TARGET,
            "met": data["memory"]["growth"] < MEMORY_GROWTH_TARGET,
        },
    }
    base = data["latency"]["baseline"]
    data["ratios_to_baseline_p95"] = {
        op: ratio(_p95(large, f"{op}_ms"), _p95(base, f"{op}_ms")) for op in OPERATIONS
    }
    data["store_share_of_p50"] = {
        op: ratio(direct[f"{op}_ms"]["median"], large[f"{op}_ms"]["median"]) for op in OPERATIONS
    }
    data["ratio"] = data["ratios_to_baseline_p95"]["list"]
    return data


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["store"]:
        return serve_store(argv[1:])
    args = parse_args(argv)
    data = asyncio.run(run(args))
    path = write_results(NAME, data, args.results_dir)
    latency_, memory_ = data["latency"], data["memory"]
    load = latency_["load"]["large"]
    indexes = (
        f"indexes {load['index_seconds']} s first"
        if "index_seconds" in load
        else "indexes built afterwards by the coordinator"
    )
    print(
        f"load: {load['releases']} releases + {load['events']} events in {load['total_seconds']} s "
        f"({indexes}); coordinator start-up (ensure_indexes) {latency_['coordinator_start_seconds']} s"
    )
    print(f"{'p50 / p95 ms':<22}" + "".join(f"{op:>20}" for op in OPERATIONS))
    for label, figures in (
        (f"coordinator, {latency_['baseline']['stored']}", latency_["baseline"]),
        (f"coordinator, {latency_['large']['stored']}", latency_["large"]),
        (f"store only, {latency_['baseline']['stored']}", latency_["store_direct"]["baseline"]),
        (f"store only, {latency_['large']['stored']}", latency_["store_direct"]["large"]),
        (f"in-process, {latency_['baseline']['stored']}", latency_["coordinator_in_process"]["baseline"]),
        (f"in-process, {latency_['large']['stored']}", latency_["coordinator_in_process"]["large"]),
    ):
        cells = "".join(
            f"{figures[f'{op}_ms']['median']:>10.1f} /{figures[f'{op}_ms']['p95']:>7.1f}" for op in OPERATIONS
        )
        print(f"{label:<22}{cells}")
    print(f"ratios large / baseline (p95): {data['ratios_to_baseline_p95']}")
    print(f"store share of the p50 (large): {data['store_share_of_p50']}")
    print(f"rc command (new process) ms: {latency_['rc_command_ms']}")
    print(
        f"memory: {memory_['rss_kib']['first']} KiB after {memory_['first']} releases, "
        f"{memory_['rss_kib']['last']} KiB after {memory_['releases']} (growth {memory_['growth']:.1%})"
    )
    print(
        "targets: " + ", ".join(f"{k} {'met' if v['met'] else 'NOT met'}" for k, v in data["targets"].items())
    )
    print(f"figures written to {path.name} in {args.results_dir.name}/")
    print(last_line("scale_list_p95", _p95(latency_["large"], "list_ms"), "ms", data["ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
