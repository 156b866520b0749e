"""The same-work floor of the throughput benchmark (:mod:`bench.throughput`): bare consume + ack (the base of
:mod:`bench.throughput_bare`) plus the publications the coordinator must make while it drains, with no
logic and no store.

In the coordinator's run, every release has S services; the S-th reply of a release moves it to
``running``, and the coordinator publishes S persistent ``start`` commands (one into each service's quorum
queue, through the commands exchange, mandatory) and one persistent ``release.running`` announcement on the
events exchange, all in flight together on one channel with publisher confirms; the replies are acked once
stored, before those publications are confirmed. This floor does the same broker work:

1. R x S replies (S per release id, the correlation id their release's, in the order two hold-mode hosts
   leave them in the coordinator's queue: each host's replies release after release, the hosts' streams
   interleaved) are pre-loaded into a quorum queue like the coordinator's.
2. They are consumed with the same prefetch, each acked at once. When a release id's S-th reply arrives, a
   task of its own publishes that release's S ``start`` commands and its announcement (bodies built
   beforehand, sizes like the coordinator's: the announcement carries a view of an S-task release) with
   confirms, all in flight together, on one publisher channel (confirms, mandatory commands), each as the
   coordinator publishes (:func:`bench.lib.publish_confirmed`).
3. The S service queues are throwaway quorum queues of the sub-namespace ``<ns>.same`` with the task
   queues' arguments, bound to its own commands exchange (so that mandatory commands route); its events
   exchange has no queue bound, as the coordinator's has none in its run. All deleted afterwards. Nobody
   consumes the commands (in the coordinator's run the hold-mode hosts consume and ack them: RabbitMQ work
   that is not the coordinator's, and not in this floor).

Rate: messages consumed between 10 % and 90 %, as :func:`bench.throughput_bare.bare_consume`; CPU ms per
reply of this process and of RabbitMQ over the same window (``/proc``, polled every 20 ms).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from bench.lib import (
    Publication,
    announcement_publication,
    bench_command,
    command_publications,
    cpu_seconds,
    delete_namespace,
    new_release_id,
    publish_outbox,
    rabbitmq_pid,
    ratio,
    say,
    split,
    success_reply,
)
from bench.overhead_baselines import sample_release
from bench.throughput_bare import PREFETCH, preload, window_cpu, window_rate
from schemas.broker_url import broker_user
from schemas.documents import ReleaseView
from schemas.enums import Action, ReleaseState
from schemas.messages import encode
from schemas.topology import Topology


def reply_bodies(release_ids: Sequence[str], services: Sequence[str], hosts: int) -> list[tuple[bytes, str]]:
    """``(body, release id)`` of every ``accepted`` reply, in the order hold-mode hosts leave them."""
    streams = []
    for names in split(services, hosts):
        stream = []
        for release_id in release_ids:
            for service in names:
                command = bench_command(release_id, service, Action.INITIALIZE)
                stream.append((encode(success_reply(command)), release_id))
        streams.append(stream)
    longest = max(len(s) for s in streams)
    return [s[i] for i in range(longest) for s in streams if i < len(s)]


def outbox(release_id: str, services: Sequence[str], topology: Topology) -> list[Publication]:
    """What a release's S-th reply makes the coordinator publish: S ``start`` commands and the
    ``release.running`` announcement (a view of a release of S tasks)."""
    view = ReleaseView.of(sample_release(services).model_copy(update={"id": release_id}))
    return [
        *command_publications(release_id, services, Action.START, topology),
        announcement_publication(view, ReleaseState.RUNNING, topology),
    ]


class SameWork:
    """The consumer: acks every reply at once; a release's S-th reply publishes its outbox (a task of its
    own, as the coordinator's replies do not wait for their confirmations)."""

    def __init__(self, outboxes: dict[str, list[Publication]], services: int, total: int, user: str) -> None:
        self.outboxes, self.services, self.total, self.user = outboxes, services, total, user
        self.channel: AbstractChannel | None = None  # the publisher's: confirms, returns raising
        self.seen: Counter[str] = Counter()
        self.stamps: list[float] = []
        self.publishing: set[asyncio.Task[None]] = set()
        self.done = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        self.stamps.append(time.perf_counter())
        release_id = message.correlation_id or ""
        self.seen[release_id] += 1
        if self.seen[release_id] == self.services:
            outbox = self.outboxes.pop(release_id)
            self.publishing.add(asyncio.create_task(self.publish(release_id, outbox)))
        if len(self.stamps) == self.total:
            self.done.set()

    async def publish(self, release_id: str, publications: Sequence[Publication]) -> None:
        assert self.channel is not None
        await publish_outbox(self.channel, release_id, publications, self.user)


async def declare(channel: aio_pika.abc.AbstractChannel, same: Topology, services: Sequence[str]) -> None:
    """The throwaway exchanges, service queues (bound) and reply queue of the sub-namespace ``same``."""
    for name in (same.commands_exchange, same.events_exchange):
        await channel.declare_exchange(name, aio_pika.ExchangeType.TOPIC, durable=True)
    for service in services:
        queue = await channel.declare_queue(
            same.task_queue(service), durable=True, arguments=same.task_queue_arguments()
        )
        await queue.bind(same.commands_exchange, routing_key=same.task_binding(service))
    await channel.declare_queue(
        same.replies_queue, durable=True, arguments=same.coordinator_queue_arguments()
    )


async def poll_cpu(work: SameWork, broker_pid: int | None, points: list[tuple[float, ...]]) -> None:
    """``(time, consumed, CPU seconds of this process, of RabbitMQ)`` every 20 ms until every reply is in."""
    while True:
        broker = cpu_seconds(broker_pid) if broker_pid else 0.0
        points.append((time.perf_counter(), float(len(work.stamps)), cpu_seconds(os.getpid()), broker))
        if work.done.is_set():
            return
        await asyncio.sleep(0.02)


async def drain(url: str, same: Topology, work: SameWork, broker_pid: int | None) -> list[tuple[float, ...]]:
    """Consume the pre-loaded replies (publishing as they ask), then wait for every confirmation."""
    connection = await aio_pika.connect(url, timeout=30)
    try:
        work.channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=PREFETCH)
        points: list[tuple[float, ...]] = []
        poller = asyncio.create_task(poll_cpu(work, broker_pid, points))
        replies = await consumer.get_queue(same.replies_queue, ensure=False)
        tag = await replies.consume(work.on_message)
        await asyncio.wait_for(work.done.wait(), 300)
        await replies.cancel(tag)
        await poller
        await asyncio.gather(*work.publishing)  # a publication not confirmed fails the run
        work.stamps.append(time.perf_counter())  # the last confirmation
    finally:
        await connection.close()
    return points


async def same_work_consume(
    url: str, namespace: str, services: Sequence[str], releases: int, hosts: int
) -> dict[str, Any]:
    """Consume + ack of ``releases`` x S replies with the coordinator's publications (module docstring)."""
    same = Topology(f"{namespace}.same")
    release_ids = [new_release_id() for _ in range(releases)]
    bodies = reply_bodies(release_ids, services, hosts)
    total, user = len(bodies), broker_user(url)
    work = SameWork({r: outbox(r, services, same) for r in release_ids}, len(services), total, user)
    try:
        connection = await aio_pika.connect(url, timeout=30)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await declare(channel, same, services)
            await preload(channel, same.replies_queue, bodies, user)
        broker_pid = rabbitmq_pid(url)
        points = await drain(url, same, work, broker_pid)
    finally:
        await delete_namespace(url, same.namespace, services)
    *stamps, confirmed = work.stamps
    rate, t_start, t_end = window_rate([(t, float(i + 1)) for i, t in enumerate(stamps)], total)
    cpu = window_cpu(points, t_start, t_end) if rate else None
    return {
        "messages": total,
        "publications": releases * (len(services) + 1),
        "rate_per_s": round(rate, 1),
        "whole_drain_s": round(stamps[-1] - stamps[0], 3),
        "last_confirmation_after_s": round(confirmed - stamps[0], 3),
        # a remote broker: its CPU is not ours to read
        "cpu_ms_per_reply": {"bench": cpu[0]} | ({"rabbitmq": cpu[1]} if broker_pid else {}) if cpu else {},
    }


async def against_same_work(
    url: str, namespace: str, services: Sequence[str], releases: int, hosts: int, rate: float
) -> dict[str, Any]:
    """The same-work floor, and the coordinator's rate against it."""
    say(f"consume + ack + same publications: {releases} releases x {len(services)} replies")
    same = await same_work_consume(url, namespace, services, releases, hosts)
    say(
        f"consume + ack + same publications: {same['rate_per_s']:.1f} messages/s "
        f"(cpu ms per reply {same['cpu_ms_per_reply']})"
    )
    return {"same_work": same, "ratio_same_work": ratio(rate, same["rate_per_s"])}
