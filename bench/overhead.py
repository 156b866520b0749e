"""Coordinator overhead against the bare-broker floor.

For each N (default 3, 30, 300) no-op task services, spread over a few host processes (bare aio-pika, see
:func:`bench.lib.entry.run_host`), in one fresh namespace and one fresh store per N:

1. **floor**: this process plays a coordinator with no logic and no store: per step it publishes N persistent
   commands with confirms (all at once, as the coordinator's outbox delivery does) and waits until all N
   persistent replies from the hosts have been consumed and acked from the coordinator's own reply queue.
   Three steps (initialize, start, publish) per round, several rounds; figure: median ms per step.
1b. **same-hops floor** (:mod:`bench.overhead_same_hops`): every broker hop of a coordinator's release
   (the operator's requests and answers, the commands and replies, the five announcements, each group
   published as the coordinator's outbox is) made by this process with no logic and no store, timed like
   the coordinator's steps; as many releases as floor rounds; figure: median over releases of the mean of
   a release's three steps, as the coordinator's.
2. **the store alone**: ``get`` and a one-task ``compare_and_set`` of a release with N tasks, through the
   engine's interface (to separate the store's cost from the coordinator's).
3. **coordinator**: the real coordinator in a child process with the store; releases driven by an operator
   client (``AdminClient``): create -> staged -> publish -> published. Per release, ms per step from the
   arrivals of its announcements (:func:`bench.lib.time_release`; the store's ``entered`` times apart):
   initialize = create request sent -> ``running``; process = ``running`` -> ``staged``; publish =
   publish request sent -> ``published``. Median and p95 over the releases.

With ``--spans`` the coordinator records spans of its work (:mod:`bench.lib.spans`), and the run prints
per N where each release waited for the coordinator itself, and how much of that was store writes and the
health check.

Prints per N the floor, coordinator and same-hops floor ms/step and the ratios coordinator / floor and
coordinator / same-hops floor, then the CPU ms per step of each side (coordinator; store, on the default
engine its threads inside the coordinator process; this process when it plays either floor's
coordinator) next to the time the target allows; writes ``bench/results/overhead.json``. Targets: ratio
<= 1.3 at N = 300, <= 1.5 at N = 3.

    python -m bench.overhead [--n 3,30,300] [--releases 10,10,5] [--profile] [--spans]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench.lib import (
    RESULTS,
    STEPS,
    Announcements,
    Child,
    Children,
    CoordinatorHandle,
    CpuMeter,
    Measured,
    Metrics,
    StoreHandle,
    admin_client,
    amqp_url,
    check_file_handles,
    close_store,
    connect_store,
    declare_topology,
    delete_namespace,
    drive_release,
    last_line,
    machine_info,
    measured_store,
    new_namespace,
    rabbitmq_pid,
    rabbitmq_version,
    ratio,
    register_services,
    say,
    service_names,
    start_coordinator,
    start_hosts,
    start_store,
    store_figures,
    summarize_profiles,
    summary,
    without_store_threads,
    write_results,
)
from bench.lib.spans import SPANS_ENV, critical_path, print_critical_path, read_spans
from bench.overhead_baselines import FLOOR_ACTIONS, measure_floor, measure_store
from bench.overhead_same_hops import same_hops_of

NAME = "overhead"
#: ratio targets of issue 7 (coordinator ms/step <= target x floor ms/step)
TARGETS = {3: 1.5, 300: 1.3}
#: Drives one release (its label, the seconds it may take) through the coordinator: its ms per step.
Drive = Callable[[str, float], Awaitable[dict[str, float]]]


def cpu_per_step(
    floor_cpu: dict[str, float],
    floor_steps: int,
    coordinator_cpu: dict[str, float],
    steps: int,
    same_hops_cpu: dict[str, float],
    same_hops_steps: int,
) -> dict[str, float | None]:
    """CPU ms per step of the process in the coordinator's role (this process for the floors), of the
    store and of RabbitMQ: what each side costs, whatever the machine's other load does to wall time."""

    def per_step(cpu: dict[str, float], name: str, count: int) -> float | None:
        # A process not measured (a remote store or broker) has no figure rather than a zero.
        return round(1000 * cpu[name] / count, 2) if name in cpu else None

    return {
        "floor_bench": per_step(floor_cpu, "bench", floor_steps),
        "floor_rabbitmq": per_step(floor_cpu, "rabbitmq", floor_steps),
        "same_hops_bench": per_step(same_hops_cpu, "bench", same_hops_steps),
        "same_hops_rabbitmq": per_step(same_hops_cpu, "rabbitmq", same_hops_steps),
        "coordinator": per_step(coordinator_cpu, "coordinator", steps),
        "store": per_step(coordinator_cpu, "store", steps),
        "rabbitmq": per_step(coordinator_cpu, "rabbitmq", steps),
    }


# ---------------------------------------------------------------------- one N


async def measure_n(
    n: int,
    *,
    url: str,
    releases: int,
    floor_rounds: int,
    processes: int,
    warmup: int,
    profile_dir: Path | None,
    release_timeout: float,
    spans: Path | None = None,
) -> dict[str, Any]:
    """One N in a fresh namespace and store: the baselines, then the coordinator's releases."""
    check_file_handles(n + 10)
    namespace = new_namespace(f"n{n}")
    services = service_names(n)
    say(f"N={n}: namespace {namespace}, {min(processes, n)} host processes")
    result: dict[str, Any] = {"n": n, "namespace": namespace, "host_processes": min(processes, n)}
    async with Children() as children, contextlib.AsyncExitStack() as opened:
        opened.push_async_callback(delete_queues, n, url, namespace, services)
        store = await start_store(children, namespace)
        await declare_topology(url, namespace)
        hosts = await start_hosts(children, url, namespace, services, processes)
        floor = await baselines_of(
            result, url, namespace, services, hosts, store, floor_rounds, warmup, release_timeout
        )
        profile = profile_dir / f"{NAME}-n{n}-coordinator.speedscope.json" if profile_dir else None
        coordinator, drive = await coordinator_driven(
            children, opened, url, store, namespace, services, release_timeout, profile, spans
        )
        per_release, delta = await measured_releases(
            result, n, url, coordinator, store, hosts, drive, releases, warmup, release_timeout
        )
        figures(result, delta, per_release, floor, store, releases, (warmup + floor_rounds), floor_rounds)
        await stop_children(children, coordinator, hosts, store)
        if spans:
            result["critical_path"] = critical_path(read_spans(spans), skip=warmup)
    return result


async def baselines_of(
    result: dict[str, Any],
    url: str,
    namespace: str,
    services: Sequence[str],
    hosts: Sequence[Child],
    store: StoreHandle,
    rounds: int,
    warmup: int,
    release_timeout: float,
) -> list[float]:
    """What the coordinator is compared with, put in ``result``: the floor, the same-hops floor and the
    store alone. Returns the floor's samples (ms per step)."""
    n = len(services)
    floor = await floor_of(result, url, namespace, services, hosts, rounds, warmup)
    await same_hops_of(result, url, namespace, services, hosts, rounds, warmup, release_timeout)
    result["store_round_trip_ms"] = await measure_store(store.url, namespace, services, 50 if n <= 30 else 15)
    say(f"N={n}: store alone {result['store_round_trip_ms']}")
    return floor


async def coordinator_driven(
    children: Children,
    opened: contextlib.AsyncExitStack,
    url: str,
    store: StoreHandle,
    namespace: str,
    services: Sequence[str],
    release_timeout: float,
    profile: Path | None,
    spans: Path | None,
) -> tuple[CoordinatorHandle, Drive]:
    """The coordinator in a child process on the run's store, with ``services`` registered, and a
    :data:`Drive` of releases through it by an operator client (the client and the store's connection
    are closed with ``opened``)."""
    store_db = await connect_store(store.url, namespace)
    opened.push_async_callback(close_store, store_db)
    await register_services(store_db, services)
    coordinator = await start_coordinator(
        children,
        url,
        store.url,
        namespace,
        count_store_commands=True,
        profile=profile,
        extra_env={SPANS_ENV: str(spans)} if spans else None,
    )
    announcements = Announcements()
    client = await admin_client(url, namespace, release_timeout, announcements)
    opened.push_async_callback(client.close)
    return coordinator, partial(drive_release, client, announcements, store_db)


async def measured_releases(
    result: dict[str, Any],
    n: int,
    url: str,
    coordinator: CoordinatorHandle,
    store: StoreHandle,
    hosts: Sequence[Child],
    drive: Drive,
    releases: int,
    warmup: int,
    within: float,
) -> tuple[list[dict[str, float]], Metrics]:
    """``warmup`` releases, then ``releases`` measured ones, each driven within ``within`` seconds: the ms
    per step of each measured release and the coordinator's metrics over them; the CPU seconds of every
    process in ``result``."""
    for i in range(warmup):
        await drive(f"warm-up {i}", within)
    before = await coordinator.scrape()
    pids: dict[str, Measured | None] = {
        "coordinator": coordinator.pid,
        "store": measured_store(coordinator.pid, store),
        "rabbitmq": rabbitmq_pid(url),
    }
    meter = CpuMeter(pids | {h.name: h.pid for h in hosts}).start()
    per_release = await drive_releases(n, releases, drive, within)
    result["coordinator_cpu_seconds"] = meter.stop()
    delta = await replies_counted(coordinator, before, releases * n * len(STEPS))
    return per_release, delta


async def floor_of(
    result: dict[str, Any],
    url: str,
    namespace: str,
    services: Sequence[str],
    hosts: Sequence[Child],
    rounds: int,
    warmup: int,
) -> list[float]:
    """The floor's samples (ms per step), its CPU seconds and summary put in ``result``."""
    n = len(services)
    say(f"N={n}: floor, {rounds} rounds x 3 steps")
    meter = CpuMeter({"bench": os.getpid(), "rabbitmq": rabbitmq_pid(url)} | {h.name: h.pid for h in hosts})
    meter.start()
    floor = await measure_floor(url, namespace, services, rounds, warmup)
    result["floor_cpu_seconds"] = meter.stop()
    result["floor_ms_per_step"] = summary(floor)
    say(f"N={n}: floor {result['floor_ms_per_step']['median']:.1f} ms/step (median)")
    return floor


async def drive_releases(n: int, releases: int, drive: Drive, within: float) -> list[dict[str, float]]:
    """Drive ``releases`` releases one after the other: ms per step of each."""
    per_release: list[dict[str, float]] = []
    for i in range(releases):
        steps = await drive(f"bench {i}", within)
        per_release.append(steps)
        say(f"N={n}: release {i + 1}/{releases}: " + ", ".join(f"{k} {steps[k]:.1f} ms" for k in STEPS))
    return per_release


async def replies_counted(coordinator: CoordinatorHandle, before: Metrics, expected: int) -> Metrics:
    """The coordinator's metrics since ``before``, once it counted ``expected`` replies (or 10 s passed)."""
    delta = (await coordinator.scrape()).minus(before)
    deadline = time.monotonic() + 10  # the last reply is counted just after its effect is announced
    while delta.value("rc_messages_total", kind="reply") < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        delta = (await coordinator.scrape()).minus(before)
    return delta


def figures(
    result: dict[str, Any],
    delta: Metrics,
    per_release: list[dict[str, float]],
    floor: list[float],
    store: StoreHandle,
    releases: int,
    floor_rounds: int,
    same_hops_releases: int,
) -> None:
    """Put the coordinator's figures, and their ratios to the floor's and the same-hops floor's, in
    ``result``."""
    replies = int(delta.value("rc_messages_total", kind="reply"))
    result["replies"] = replies
    result["store"] = store_figures(delta, replies, releases * len(STEPS))
    per_step = [statistics.fmean(r[s] for s in STEPS) for r in per_release]
    result["coordinator_ms_per_step"] = summary(per_step)
    result["coordinator_steps_ms"] = {
        s: summary([r[s] for r in per_release]) for s in (*STEPS, *(f"{k}_stored" for k in STEPS))
    }
    result["releases"] = per_release
    result["floor_samples_ms"] = floor
    floor_median = result["floor_ms_per_step"]["median"]
    result["ratio"] = ratio(result["coordinator_ms_per_step"]["median"], floor_median)
    result["ratio_p95"] = ratio(result["coordinator_ms_per_step"]["p95"], floor_median)
    same_hops_median = result["same_hops_ms_per_step"]["median"]
    result["ratio_same_hops"] = ratio(result["coordinator_ms_per_step"]["median"], same_hops_median)
    result["coordinator_cpu_seconds"] = without_store_threads(result["coordinator_cpu_seconds"], store)
    result["cpu_ms_per_step"] = cpu_per_step(
        result["floor_cpu_seconds"],
        floor_rounds * len(FLOOR_ACTIONS),
        result["coordinator_cpu_seconds"],
        releases * len(STEPS),
        result["same_hops_cpu_seconds"],
        same_hops_releases * len(STEPS),
    )


async def stop_children(
    children: Children, coordinator: CoordinatorHandle, hosts: Sequence[Child], store: StoreHandle
) -> None:
    await children.stop(coordinator.child)
    for host in hosts:
        await children.stop(host)
    if store.child is not None:
        await children.stop(store.child)


async def delete_queues(n: int, url: str, namespace: str, services: Sequence[str]) -> None:
    """Delete the namespace's queues; a failure is said, not raised (the run's figures stand)."""
    try:
        await delete_namespace(url, namespace, services)
    except Exception as error:
        say(f"N={n}: could not delete the namespace's queues: {error!r}")


# ---------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--n", type=_ints, default=[3, 30, 300], help="numbers of services (default 3,30,300)"
    )
    parser.add_argument(
        "--releases", type=_ints, default=None, help="releases per N (default 10 at N<=30, 5 above)"
    )
    parser.add_argument("--floor-rounds", type=int, default=10, help="floor rounds (3 steps each) per N")
    parser.add_argument("--processes", type=int, default=3, help="host processes for the services")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured warm-up rounds/releases per N")
    parser.add_argument("--release-timeout", type=float, default=600.0, help="seconds one release may take")
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds the whole run may take")
    parser.add_argument("--profile", action="store_true", help="run coordinator and store under py-spy")
    parser.add_argument(
        "--spans",
        action="store_true",
        help="record where each release waits for the coordinator (bench/lib/spans.py) and print it",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = amqp_url()
    releases = args.releases or [10 if n <= 30 else 5 for n in args.n]
    if len(releases) == 1:
        releases = releases * len(args.n)
    version = await rabbitmq_version(url)
    data: dict[str, Any] = {
        "benchmark": NAME,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(version),
        "method": {
            "services": "bare aio-pika no-op services, many per host process on one connection",
            "host_processes": args.processes,
            "floor": "N persistent commands published with confirms at once, N persistent replies "
            "consumed+acked (prefetch 64), same hosts and queues, no coordinator, no store",
            "same_hops": "per release, the coordinator's hops with no logic and no store: create request "
            "and answer, N initialize commands + release.initializing, N replies, N start commands + "
            "release.running, N replies, release.staged, publish request and answer, N publish commands + "
            "release.publishing, N replies, release.published; timed like the coordinator's steps "
            "(see bench/overhead_same_hops.py)",
            "coordinator_steps": "initialize: create sent -> release.running announced; process: "
            "release.running -> release.staged announced; publish: publish sent -> release.published "
            "announced (<step>_stored: from the store's entered times, see drive_release)",
            "ms_per_step": "mean of a release's three steps; median/p95 over releases",
            "warmup": args.warmup,
            "profiled": args.profile,
        },
        "results": [],
    }
    profile_dir = args.results_dir if args.profile else None
    async with asyncio.timeout(args.time_limit):
        for n, count in zip(args.n, releases, strict=True):
            result = await measure_n(
                n,
                url=url,
                releases=count,
                floor_rounds=args.floor_rounds,
                processes=args.processes,
                warmup=args.warmup,
                profile_dir=profile_dir,
                release_timeout=args.release_timeout,
                spans=args.results_dir / f"{NAME}-n{n}-spans.json" if args.spans else None,
            )
            data["results"].append(result)
            say(
                f"N={n}: floor {result['floor_ms_per_step']['median']:.1f} ms/step, coordinator "
                f"{result['coordinator_ms_per_step']['median']:.1f} ms/step median, "
                f"{result['coordinator_ms_per_step']['p95']:.1f} p95, ratio {result['ratio']:.2f}"
            )
            write_results(NAME, data, args.results_dir)
    if args.profile:
        data["profiles"] = summarize_profiles(args.results_dir, NAME)
    return data


def _figure(value: float | None, width: int) -> str:
    return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"


def _print_store_traffic(results: Sequence[dict[str, Any]]) -> None:
    """On MongoDB (commands counted by the listener): round trips per reply and bytes written per step,
    which must grow linearly with N."""
    counted = [r for r in results if "round_trips_per_reply" in r["store"]]
    if not counted:
        return
    print()
    print(f"{'N':>5} {'store round trips/reply':>24} {'write bytes/step':>17} {'write bytes/step/N':>19}")
    for r in counted:
        store, n = r["store"], r["n"]
        per_step = store.get("write_bytes_per_step") or 0
        print(f"{n:>5} {store['round_trips_per_reply']:>24.3f} {per_step:>17,} {per_step / n:>19,.0f}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = asyncio.run(run(args))
    path = write_results(NAME, data, args.results_dir)
    print(
        f"{'N':>5} {'floor ms/step':>14} {'coord median':>13} {'coord p95':>10} {'ratio':>7} "
        f"{'same-hops ms/step':>18} {'ratio to same hops':>19}"
    )
    for r in data["results"]:
        print(
            f"{r['n']:>5} {r['floor_ms_per_step']['median']:>14.1f} "
            f"{r['coordinator_ms_per_step']['median']:>13.1f} "
            f"{r['coordinator_ms_per_step']['p95']:>10.1f} {r['ratio']:>7.2f} "
            f"{r['same_hops_ms_per_step']['median']:>18.1f} {r['ratio_same_hops']:>19.2f}"
        )
    print()
    print(
        "CPU ms per step (floor, same hops: this process in the coordinator's role, and for same hops also "
        "the operator's client and listener; budget: target x floor ms/step)"
    )
    print(f"{'N':>5} {'floor':>8} {'same hops':>10} {'coordinator':>12} {'store':>8} {'budget':>8}")
    for r in data["results"]:
        cpu = r["cpu_ms_per_step"]
        target = TARGETS.get(r["n"])
        budget = f"{target * r['floor_ms_per_step']['median']:.1f}" if target else "-"
        columns = (("floor_bench", 8), ("same_hops_bench", 10), ("coordinator", 12), ("store", 8))
        figures = [_figure(cpu.get(name), width) for name, width in columns]
        print(f"{r['n']:>5} {' '.join(figures)} {budget:>8}")
    _print_store_traffic(data["results"])
    for r in data["results"]:
        if "critical_path" in r:
            print_critical_path(r["n"], r["critical_path"])
    print(f"figures written to {path.name} in {args.results_dir.name}/")
    largest = data["results"][-1]
    print(
        last_line(
            f"overhead_n{largest['n']}",
            largest["coordinator_ms_per_step"]["median"],
            "ms/step",
            largest["ratio"],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
