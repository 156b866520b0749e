"""The throughput run without RabbitMQ and without an AMQP client: the coordinator's own work per reply.

The same drain as :mod:`bench.throughput` (releases of 10 services created, their ``initialize`` commands
held, then every ``accepted`` reply queued at once), but the coordinator runs in this process on the
in-memory broker (``coordinator.broker.memory``, the one the in-memory tests use) with the default store
(a SQLite file in a temporary folder). What is left is what the coordinator itself does per reply:
admission, the state machine, the store's compare-and-set, the acknowledgement and the publications of the
commands and announcement it causes, as calls into memory instead of frames on a socket. Set against the
real run's CPU per reply, the difference is what the AMQP client and the socket cost.

    python -m bench.throughput_memory [--releases 300] [--services 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.lib import (
    RESULTS,
    last_line,
    new_namespace,
    now,
    ratio,
    say,
    service_names,
    success_reply,
    write_results,
)
from bench.lib.coordinator import register_services
from coordinator import logs
from coordinator.broker.memory import MemoryBroker, MemoryConnection, MemoryDelivery, Message
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import store_for
from schemas.enums import Action, MessageKind, ReleaseState, ReplyKind
from schemas.messages import AdminRequest, Command, decode, encode
from schemas.operations import CreateRelease
from schemas.topology import Topology

NAME = "throughput_memory"
USER = "bench"
PREFETCH = 64


class HeldCommands:
    """No-op services on the memory broker: every ``initialize`` command acknowledged and kept."""

    def __init__(self, connection: MemoryConnection, topology: Topology, services: Sequence[str]) -> None:
        self.held: list[Command] = []
        for service in services:
            queue = connection.declare_queue(topology.task_queue(service), topology.task_queue_arguments())
            connection.bind(queue, topology.commands_exchange, topology.task_binding(service))
            connection.consume(queue, self._on_command, PREFETCH)

    async def _on_command(self, delivery: MemoryDelivery) -> None:
        command = decode(delivery.body, Command)
        if command.action is Action.INITIALIZE:
            self.held.append(command)
        await delivery.ack()


def reply_messages(topology: Topology, commands: Sequence[Command]) -> list[Message]:
    """Each held command's ``accepted`` reply, as a service would sign and route it."""
    messages = []
    for command in commands:
        reply = success_reply(command)
        messages.append(
            Message(
                encode(reply),
                exchange=topology.replies_exchange,
                routing_key=topology.reply_key(command.service, ReplyKind.REPLY),
                message_id=reply.message_id,
                correlation_id=reply.release_id,
                user_id=USER,
                type=MessageKind.REPLY.value,
            )
        )
    return messages


async def create_releases(coordinator: Coordinator, count: int) -> list[str]:
    ids = []
    for i in range(count):
        request = AdminRequest(
            message_id=uuid.uuid4().hex,
            sent_at=now(),
            operator=USER,
            operation=CreateRelease(name=f"tm {i}", studies=("SD_BENCH01",)),
        )
        result = await coordinator.execute(request, USER)
        ids.append(result.release.id)  # type: ignore[union-attr]
    return ids


async def drained(coordinator: Coordinator, ids: Sequence[str], within: float) -> None:
    """Wait until every release is running (all its replies applied)."""
    deadline = time.monotonic() + within
    waiting = set(ids)
    while waiting:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} releases still not running")
        for release_id in list(waiting):
            release = await coordinator.releases.peek(release_id)
            if release is not None and release.state is ReleaseState.RUNNING:
                waiting.discard(release_id)
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    namespace = new_namespace("tm")
    topology = Topology(namespace)
    services = service_names(args.services)
    broker = MemoryBroker(topology, user="rc-coordinator", prefetch=PREFETCH)
    with tempfile.TemporaryDirectory(prefix="rc-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'store.db'}"
        settings = Settings(
            namespace=namespace, store_url=url, trusted_users=frozenset({USER}), metrics_port=0
        )
        store = store_for(settings.store, settings.database)
        await store.open()
        await register_services(store, services)
        coordinator = Coordinator(settings, store, broker)
        stop = asyncio.Event()
        task = asyncio.create_task(coordinator.run(stop))
        try:
            await asyncio.wait_for(coordinator.active.wait(), 30)
            return await measure(args, broker, topology, services, coordinator)
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await store.close()


async def measure(
    args: argparse.Namespace,
    broker: MemoryBroker,
    topology: Topology,
    services: Sequence[str],
    coordinator: Coordinator,
) -> dict[str, Any]:
    connection = broker.connection(USER, "bench-services")
    hosts = HeldCommands(connection, topology, services)
    ids = await create_releases(coordinator, args.releases)
    say(f"created {len(ids)} releases; {len(hosts.held)} initialize commands held")
    replies = reply_messages(topology, hosts.held)
    cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
    for message in replies:
        connection.publish(message, mandatory=True)
    await drained(coordinator, ids, args.time_limit)
    cpu, thread, wall = time.process_time() - cpu, time.thread_time() - thread, time.perf_counter() - wall
    count = len(replies)
    say(f"{count} replies applied in {wall:.2f} s: {count / wall:.0f} replies/s")
    return {
        "benchmark": NAME,
        "method": {"releases": args.releases, "services": len(services), "prefetch": PREFETCH},
        "replies": count,
        "rate_per_s": round(count / wall, 1),
        "cpu_ms_per_reply": {
            "event_loop_thread": round(1000 * thread / count, 3),
            "process": round(1000 * cpu / count, 3),
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--releases", type=int, default=300, help="releases in flight (default 300)")
    parser.add_argument("--services", type=int, default=10, help="services per release (default 10)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds the drain may take")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as nowhere:  # logged as the real coordinator logs (info), but not shown
        logs.configure("info", stream=nowhere)
        data = asyncio.run(run(args))
    cpu = data["cpu_ms_per_reply"]
    say(f"CPU ms per reply: event loop thread {cpu['event_loop_thread']}, whole process {cpu['process']}")
    write_results(NAME, data, args.results_dir)
    print(last_line(NAME, data["rate_per_s"], "replies/s", ratio(cpu["event_loop_thread"], cpu["process"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
