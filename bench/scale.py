"""Operator latency with many stored releases, and coordinator memory as releases go through it.

1. **Operator latency.** Two stores side by side, each a fresh database with its own coordinator and
   namespace: the *baseline* with ``--small`` (10) releases stored, the *large* one with ``--releases``
   (10,000). An operator client (``AdminClient``, what ``rc`` uses) times, ``--calls`` times each and
   alternating between the two (so both see the same machine load): ``release list`` (first page, 50),
   ``release show ID`` (20 recent events, a random release), ``study show SD_X`` (20 releases; a study in
   every release and one in 1 % of them) and ``release events ID`` (first page, 50, a random release):
   p50 and p95. Plus one run of the real ``rc`` command for each (a new Python process: includes
   interpreter start-up).
2. **The store alone, and the coordinator without the broker.** The very store calls the coordinator makes
   for each request (``get``, ``state_of``, ``list_releases``, ``event_page``, ``study_summary``,
   ``study_releases``), made in this process on the same two stores, timed the same way:
   what of the latency is the store's, and what is the coordinator's + the broker round trip. And the same
   requests handled by ``Coordinator.execute`` in this process on the same stores (store + coordinator
   work, no broker, no second process).
3. **Memory.** A fresh coordinator with 3 no-op services; resident memory (``VmRSS``) after
   ``--memory-first`` (10) full releases (create -> staged -> publish -> published) and after
   ``--memory-releases`` (1,000).

How the releases get into the store. They are valid :class:`schemas.documents.Release` documents (mostly
published, a few canceled or failed) and their audit events, written through the store's own interface
(``import_batch``, what ``rc-coordinator store copy`` uses) into a fresh store: by default a SQLite file
(the default engine), with ``RC_BENCH_MONGODB_URL`` a fresh database on that MongoDB. The load time is
printed and recorded. The coordinator then starts on that store as on any other.

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
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.lib import (
    RESULTS,
    Announcements,
    Children,
    CoordinatorHandle,
    StoreHandle,
    admin_client,
    amqp_url,
    close_store,
    connect_store,
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
from coordinator.__main__ import broker_of
from coordinator.service import Coordinator
from coordinator.settings import Settings as CoordinatorSettings
from coordinator.store import Store
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
#: Targets (ms, p95, through the coordinator) with 100,000 releases stored (``--releases 100000``).
TARGETS_MS = {"list": 50.0, "show": 50.0, "study": 50.0, "events": 50.0}
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


def release_batches(count: int, batch: int = LOAD_BATCH) -> Iterator[tuple[list[Release], list[AuditEvent]]]:
    """Releases ``1..count`` and their events, ``batch`` releases at a time."""
    for start in range(1, count + 1, batch):
        releases: list[Release] = []
        events: list[AuditEvent] = []
        for seq in range(start, min(start + batch, count + 1)):
            release, its_events = stored_release(seq)
            releases.append(release)
            events.extend(its_events)
        yield releases, events


@dataclass
class Site:
    """One store with ``stored`` releases, its coordinator and an operator client."""

    label: str
    stored: int
    namespace: str
    store: StoreHandle | None = None
    coordinator: CoordinatorHandle | None = None
    client: AdminClient | None = None
    #: The same store, opened in this process: its queries timed alone.
    direct: Store | None = None
    #: The coordinator's request handling run in this process on ``direct`` (no broker).
    in_process: Coordinator | None = None
    load: dict[str, Any] = field(default_factory=dict)


async def start_preloaded_store(children: Children, site: Site) -> None:
    """A fresh store for ``site`` with its releases in it (see the module docstring)."""
    site.store = await start_store(children, site.namespace)
    store = site.direct = await connect_store(site.store.url, site.namespace)
    started = time.perf_counter()
    events = 0
    for releases, batch_events in release_batches(site.stored):
        await store.import_batch(releases, batch_events, ())
        events += len(batch_events)
        if (stored := releases[-1].seq) % 2000 == 0 and stored < site.stored:
            say(f"{site.label}: stored {stored} releases ({time.perf_counter() - started:.1f}s)")
    site.load = {
        "releases": site.stored,
        "events": events,
        "total_seconds": round(time.perf_counter() - started, 2),
        "how": f"import_batch through the store interface ({store.engine})",
    }


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
    """The store calls the coordinator makes for request ``name``, one after the other (the coordinator
    makes those of ``study show`` at once); ms per call."""
    store = site.direct
    assert store is not None
    timed: dict[str, float] = {}

    async def timing(label: str, awaitable: Awaitable[Any]) -> None:
        started = time.perf_counter()
        await awaitable
        timed[label] = ms(time.perf_counter() - started)

    match name:
        case "list":
            await timing("list_releases", store.list_releases(50))
        case "show":
            await timing("get", store.get(release_id))
            await timing("event_page", store.event_page(release_id, 20))
        case "study" | "study_rare":
            study = COMMON_STUDY if name == "study" else rare_study(min(site.stored, 42))
            await timing("study_summary", store.study_summary(study))
            await timing("study_releases", store.study_releases(study, 20))
        case _:
            await timing("state_of", store.state_of(release_id))
            await timing("event_page", store.event_page(release_id, 50))
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
            for site in sites:
                await start_preloaded_store(children, site)
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
                assert site.direct is not None
                in_process = CoordinatorSettings(namespace=site.namespace)  # its broker is never connected
                site.in_process = Coordinator(in_process, site.direct, broker_of(in_process))
            say(f"coordinators active (start-up s: {result['coordinator_start_seconds']})")
            for site in sites:  # warm-up: every request once, and the store queries once
                for name in OPERATIONS:
                    await through_coordinator(site, name, f"RE_{site.stored:08d}")
                    await store_queries(site, name, f"RE_{site.stored:08d}")
            say(f"{args.calls} rounds of {', '.join(OPERATIONS)} through the coordinator, alternating stores")
            result.update(await time_sites(sites, args.calls, through_coordinator))
            say(f"{args.calls} rounds of the same store queries sent directly through the store interface")
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
                    with contextlib.suppress(Exception):
                        await close_store(site.direct)
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
            store = await start_store(children, namespace)
            await declare_topology(url, namespace)
            await start_hosts(children, url, namespace, services, 1)
            store_db = await connect_store(store.url, namespace)
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
            "store_direct": "the store reads the coordinator makes for each request, sent one after the "
            "other through the store interface (<op>_ms = their sum, <op>.<query>_ms each)",
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
    args = parse_args(argv)
    data = asyncio.run(run(args))
    path = write_results(NAME, data, args.results_dir)
    latency_, memory_ = data["latency"], data["memory"]
    load = latency_["load"]["large"]
    print(
        f"load: {load['releases']} releases + {load['events']} events in {load['total_seconds']} s "
        f"({load['how']}); coordinator start-up {latency_['coordinator_start_seconds']} s"
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
