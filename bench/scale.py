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
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.lib import (
    RESULTS,
    Children,
    admin_client,
    amqp_url,
    close_store,
    delete_namespace,
    last_line,
    machine_info,
    new_namespace,
    rabbitmq_version,
    ratio,
    rss_kib,
    say,
    start_coordinator,
    write_results,
)
from bench.scale_memory import memory
from bench.scale_store import Site, start_preloaded_store
from bench.scale_timing import (
    OPERATIONS,
    coordinator_in_process,
    rc_commands,
    store_queries,
    through_coordinator,
    time_sites,
)
from coordinator.__main__ import broker_of
from coordinator.service import Coordinator
from coordinator.settings import Settings as CoordinatorSettings

NAME = "scale"
#: Targets (ms, p95, through the coordinator) with 100,000 releases stored (``--releases 100000``).
TARGETS_MS = {"list": 50.0, "show": 50.0, "study": 50.0, "events": 50.0}
MEMORY_GROWTH_TARGET = 0.20


async def latency(args: argparse.Namespace, url: str) -> dict[str, Any]:
    small = min(args.small, args.releases)
    sites = [
        Site("baseline", small, new_namespace("scale-base")),
        Site("large", args.releases, new_namespace("scale")),
    ]
    result: dict[str, Any] = {"namespaces": {s.label: s.namespace for s in sites}}
    async with Children() as children:
        try:
            await start_sites(children, url, sites, result)
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
            say("one run of each real rc command (new process)")
            result["rc_command_ms"] = await rc_commands(url, sites[1].namespace, args.releases)
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
            await close_sites(url, sites)
    return result


async def start_sites(children: Children, url: str, sites: Sequence[Site], result: dict[str, Any]) -> None:
    """Load the sites' stores, then start their coordinators (and one in this process for each)."""
    say(f"loading {sites[0].stored} and {sites[1].stored} releases into two fresh stores")
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


async def close_sites(url: str, sites: Sequence[Site]) -> None:
    for site in sites:
        if site.client is not None:
            await site.client.close()
        if site.direct is not None:
            with contextlib.suppress(Exception):
                await close_store(site.direct)
        await delete_namespace(url, site.namespace, [])


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
