"""Replies per second the coordinator aggregates, against bare consume + ack.

Method (pre-loaded replies, one coordinator process, many releases in flight):

1. S no-op services (host processes in *hold* mode: they ack commands and keep them) are registered; the
   real coordinator runs; R releases are created, so R x S ``initialize`` commands reach the hosts.
2. The coordinator is stopped (SIGTERM; its state is in the store, which keeps running).
3. The hosts publish all R x S ``accepted`` replies at once (persistent, confirmed): they wait in the
   coordinator's reply queue.
4. The coordinator is started again: it recovers the R open releases and drains the queue. The queue depth is
   polled on the broker (a passive declare: no load on the coordinator) every 20 ms, with the CPU time of the
   coordinator, the store (on the default engine, its threads inside the coordinator process) and RabbitMQ.
   Rate = replies consumed between 90 % and 10 % of the queue left,
   divided by that time (steady state; start-up and tail excluded). Every S-th reply of a release moves it
   to ``running`` (S start commands and an announcement are published): that is part of aggregating.
5. Store operations per reply come from the coordinator's own ``rc_store_seconds_count{operation}``, and on
   MongoDB the commands from a PyMongo command listener in the coordinator process
   (``bench_store_commands_total``).
6. Base: the same number of reply messages pre-loaded into a quorum queue with the same arguments, consumed
   with the same prefetch (64) and acked, by bare aio-pika in this process; same 90 %-10 % window.
7. Same-work floor (:mod:`bench.throughput_same`): the same, plus the coordinator's publications (each
   release's S-th reply: S persistent ``start`` commands into quorum queues and one announcement, with
   confirms, in flight together), no logic, no store; its rate and CPU per reply, and the coordinator's
   ratio to it (``ratio_same_work``) beside the ratio to the base.

Target: >= 5,000 replies/s, or >= 0.8 x bare consume + ack, whichever is lower.

    python -m bench.throughput [--services 10] [--releases 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from bench.lib import (
    RESULTS,
    Child,
    Children,
    CoordinatorHandle,
    Measured,
    Metrics,
    StoreHandle,
    admin_client,
    amqp_url,
    close_store,
    cpu_seconds,
    create_release,
    declare_topology,
    delete_namespace,
    host_command,
    last_line,
    machine_info,
    measured_store,
    new_namespace,
    queue_depth,
    rabbitmq_pid,
    rabbitmq_version,
    register_services,
    rss_kib,
    say,
    service_names,
    start_coordinator,
    start_hosts,
    start_store,
    store_figures,
    summarize_profiles,
    without_store_threads,
    write_results,
)
from bench.lib import (
    connect_store as _connect_store,
)
from bench.throughput_bare import PREFETCH, against_bare, window_cpu, window_rate
from bench.throughput_same import against_same_work
from schemas.topology import Topology

NAME = "throughput"
#: Fewer replies drain between a few polls of the queue depth (every 20 ms; at 800 replies/s, 200 replies
#: gave a 10 %-90 % window of 0.15 s, and once none at all): too short a window to take a rate from.
MIN_REPLIES = 500


# ---------------------------------------------------------------------- the coordinator


#: The coordinator's settings in both of its runs: no initialize deadline, the prefetch of the bare consumer.
COORDINATOR_ENV = {"RC_INITIALIZE_TIMEOUT": "86400", "RC_PREFETCH": str(PREFETCH)}


def method(args: argparse.Namespace, total: int, version: str | None) -> dict[str, Any]:
    """The head of the results: what was measured, and how."""
    return {
        "benchmark": NAME,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(version),
        "method": {
            "services": args.services,
            "releases_in_flight": args.releases,
            "replies": total,
            "preloaded": "replies published by the hosts while the coordinator was stopped",
            "rate_window": "10 % to 90 % of the replies consumed (queue depth polled every 20 ms)",
            "base": "bare aio-pika consume + ack of as many messages, same queue type and prefetch",
            "same_work": "the base plus, on each release's last reply, its S start commands and its "
            "announcement published with confirms in flight together (see bench/throughput_same.py)",
            "coordinator_prefetch": PREFETCH,
            "profiled": args.profile,
        },
    }


async def create_releases(url: str, namespace: str, releases: int) -> None:
    """Create ``releases`` releases, 4 at a time, through an operator client."""
    client = await admin_client(url, namespace, 120, None)
    try:
        created = 0
        for start in range(0, releases, 4):
            batch = range(start, min(start + 4, releases))
            await asyncio.gather(*(create_release(client, f"tp {i}", 120) for i in batch))
            created += len(batch)
            if created % 100 == 0 or created == releases:
                say(f"created {created}/{releases} releases")
    finally:
        await client.close()


async def wait_held(hosts: Sequence[Child], total: int) -> None:
    """Wait until the hosts hold every ``initialize`` command."""
    deadline = time.monotonic() + 120
    while (held := await host_command(hosts, "count", "HELD", 30)) < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the hosts hold {held} of {total} initialize commands")
        await asyncio.sleep(0.5)


@dataclass
class Drain:
    """The coordinator draining the pre-loaded replies: ``(time, consumed, CPU seconds of the coordinator,
    the store and RabbitMQ)`` every 20 ms."""

    depth: int
    broker_pid: int | None
    coordinator: CoordinatorHandle | None = None
    store: Measured | None = None
    points: list[tuple[float, float, float, float, float]] = field(default_factory=list)

    async def poll(self, channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
        while True:
            left = await queue_depth(channel, queue)
            coordinator = self.coordinator
            self.points.append(
                (
                    time.perf_counter(),
                    float(self.depth - left),
                    cpu_seconds(coordinator.pid) if coordinator else 0.0,
                    cpu_seconds(self.store) if self.store else 0.0,
                    cpu_seconds(self.broker_pid) if self.broker_pid else 0.0,
                )
            )
            if left == 0:
                return
            await asyncio.sleep(0.02)


async def drain(
    children: Children, url: str, store: StoreHandle, namespace: str, answered: int, args: argparse.Namespace
) -> Drain:
    """Start the coordinator again and poll the reply queue until it is empty."""
    connection = await aio_pika.connect(url, timeout=30)
    try:
        channel = await connection.channel()
        replies_queue = Topology(namespace).replies_queue
        run = Drain(await queue_depth(channel, replies_queue), rabbitmq_pid(url))
        say(f"{answered} replies published, {run.depth} in the reply queue; starting the coordinator")
        poller = asyncio.create_task(run.poll(channel, replies_queue))
        profile = args.results_dir / f"{NAME}-coordinator.speedscope.json" if args.profile else None
        coordinator = await start_coordinator(
            children,
            url,
            store.url,
            namespace,
            extra_env=COORDINATOR_ENV,
            count_store_commands=True,
            profile=profile,
        )
        run.coordinator, run.store = coordinator, measured_store(coordinator.pid, store)
        last_progress = time.monotonic()
        while not poller.done():
            await asyncio.sleep(1)
            if run.points and time.monotonic() - last_progress >= 5:
                last_progress = time.monotonic()
                say(f"coordinator consumed {int(run.points[-1][1])}/{run.depth}")
        await poller
    finally:
        await connection.close()
    return run


VERDICTS = ("applied", "duplicate", "stale", "refused")


def applied_replies(metrics: Metrics) -> int:
    return int(metrics.value("rc_messages_total", kind="reply", verdict="applied"))


async def coordinator_figures(run: Drain, store: StoreHandle, total: int) -> tuple[dict[str, Any], float]:
    """The coordinator's rate and costs, once it counted every reply (or a minute passed)."""
    assert run.coordinator is not None
    depth, points = run.depth, run.points
    deadline = time.monotonic() + 60
    metrics = await run.coordinator.scrape()
    # Every reply applied once; a command the coordinator sent again after its restart (its confirm not
    # yet stored when it stopped) may bring a duplicate reply too, which it counts apart.
    while applied_replies(metrics) < total and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        metrics = await run.coordinator.scrape()
    applied = applied_replies(metrics)
    if applied < total:
        verdicts = {v: metrics.value("rc_messages_total", kind="reply", verdict=v) for v in VERDICTS}
        say(f"only {applied} of {total} replies applied after a minute: {verdicts}")
    rate, t_start, t_end = window_rate([(p[0], p[1]) for p in points], depth)
    per_reply = window_cpu(points, t_start, t_end) if rate else None
    cpu: dict[str, float] = {}
    if per_reply is not None:
        measured = {"coordinator": True, "store": bool(run.store), "rabbitmq": bool(run.broker_pid)}
        for name, ms_per_reply in zip(("coordinator", "store", "rabbitmq"), per_reply, strict=True):
            if measured[name]:  # a remote store or broker: its CPU is not ours to read
                cpu[name] = ms_per_reply
        cpu = without_store_threads(cpu, store)
    else:
        say(f"the queue drained between two polls: no rate measured; use more than {depth} replies")
    figures = {
        "replies": depth,
        "applied": applied,
        "duplicates": int(metrics.value("rc_messages_total", kind="reply", verdict="duplicate")),
        "rate_per_s": round(rate, 1),
        "window_s": round(t_end - t_start, 3),
        "cpu_ms_per_reply": cpu,
        "store": store_figures(metrics, depth),
        "coordinator_rss_kib": rss_kib(run.coordinator.pid),
    }
    say(f"coordinator: {rate:.1f} replies/s (cpu ms per reply {cpu})")
    return figures, rate


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = amqp_url()
    namespace = new_namespace("tp")
    services = service_names(args.services)
    total = args.services * args.releases
    data = method(args, total, await rabbitmq_version(url))
    say(f"namespace {namespace}: {args.releases} releases x {args.services} services = {total} replies")
    async with Children() as children, asyncio.timeout(args.time_limit):
        store_db = None
        try:
            store = await start_store(children, namespace)
            await declare_topology(url, namespace)
            hosts = await start_hosts(children, url, namespace, services, args.processes, mode="hold")
            store_db = await _connect_store(store.url, namespace)
            await register_services(store_db, services)
            first = await start_coordinator(children, url, store.url, namespace, extra_env=COORDINATOR_ENV)
            await create_releases(url, namespace, args.releases)
            await wait_held(hosts, total)
            await children.stop(first.child)
            say("coordinator stopped; the hosts publish every reply")
            answered = await host_command(hosts, "answer", "ANSWERED", 300)
            drained = await drain(children, url, store, namespace, answered, args)
            data["coordinator"], rate = await coordinator_figures(drained, store, total)
            assert drained.coordinator is not None
            await children.stop(drained.coordinator.child)
            for host in hosts:
                await children.stop(host)
            data.update(await against_bare(url, namespace, services[0], drained.depth, rate))
            data.update(
                await against_same_work(url, namespace, services, args.releases, args.processes, rate)
            )
            if store.child is not None:
                await children.stop(store.child)
        finally:
            if store_db is not None:
                await close_store(store_db)
            try:
                await delete_namespace(url, namespace, services, [f"{namespace}.bare"])
            except Exception as error:
                say(f"could not delete the namespace's queues: {error!r}")
    return data


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10, help="services per release (default 10)")
    parser.add_argument("--releases", type=int, default=300, help="releases in flight (default 300)")
    parser.add_argument("--processes", type=int, default=2, help="host processes")
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds the whole run may take")
    parser.add_argument("--profile", action="store_true", help="run the draining coordinator under py-spy")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    if args.services < 1 or args.releases < 1:
        parser.error("--services and --releases must be at least 1")
    if args.services * args.releases < MIN_REPLIES:
        parser.error(
            f"--services x --releases is {args.services * args.releases}: at least {MIN_REPLIES} replies "
            "are needed for a rate between 10 % and 90 % of the queue (it is polled every 20 ms)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    data = asyncio.run(run(args))
    if args.profile:
        data["profiles"] = summarize_profiles(args.results_dir, NAME)
    path = write_results(NAME, data, args.results_dir)
    coordinator, bare = data["coordinator"], data["bare"]
    print(
        f"coordinator: {coordinator['rate_per_s']:.1f} replies/s; "
        f"bare consume+ack: {bare['rate_per_s']:.1f} msg/s"
    )
    same = data["same_work"]
    print(
        f"consume + ack + same publications: {same['rate_per_s']:.1f} msg/s; "
        f"ratio to the same-work floor: {data['ratio_same_work']}"
    )
    print(f"store writes per reply: {coordinator['store'].get('writes_per_reply')}")
    if coordinator["store"].get("commits_per_reply") is not None:
        print(f"store commits per reply: {coordinator['store']['commits_per_reply']}")
    print(f"target: {data['target_per_s']:.1f} replies/s -> {'met' if data['meets_target'] else 'NOT met'}")
    print(f"figures written to {path.name} in {args.results_dir.name}/")
    print(last_line("throughput", coordinator["rate_per_s"], "replies/s", data["ratio"]))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
