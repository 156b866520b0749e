"""The two baselines the overhead benchmark (:mod:`bench.overhead`) sets the coordinator against: the
bare-broker floor (the coordinator's message pattern with no logic and no store) and the store alone (a read
and a compare-and-set of one release, through the engine's interface)."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench.lib import amqp_message, close_store, command_body, connect_store, ms, new_release_id
from coordinator.settings import Settings as CoordinatorSettings
from schemas.documents import Release, Task
from schemas.enums import Action, Outcome, ReleaseState, TaskState
from schemas.topology import Topology

FLOOR_ACTIONS = (Action.INITIALIZE, Action.START, Action.PUBLISH)
#: The reply prefetch of the floor: the coordinator's own default (``RC_PREFETCH``), so both consume alike.
FLOOR_PREFETCH = CoordinatorSettings().prefetch


# ---------------------------------------------------------------------- the floor


class _ReplyCounter:
    def __init__(self) -> None:
        self.release_id = ""
        self.wanted = 0
        self.seen = 0
        self.done = asyncio.Event()

    def expect(self, release_id: str, count: int) -> None:
        self.release_id, self.wanted, self.seen = release_id, count, 0
        self.done.clear()

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        if message.correlation_id == self.release_id:
            self.seen += 1
            if self.seen == self.wanted:
                self.done.set()


async def measure_floor(
    url: str, namespace: str, services: Sequence[str], rounds: int, warmup: int
) -> list[float]:
    """ms per step of the bare message pattern (no logic, no store)."""
    topology = Topology(namespace)
    connection = await aio_pika.connect(url, timeout=30)
    samples: list[float] = []
    try:
        publisher = await connection.channel(publisher_confirms=True)
        commands = await publisher.get_exchange(topology.commands_exchange, ensure=False)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=FLOOR_PREFETCH)
        replies = await consumer.get_queue(topology.replies_queue, ensure=False)
        counter = _ReplyCounter()
        tag = await replies.consume(counter)
        for round_ in range(warmup + rounds):
            release_id = new_release_id()
            for action in FLOOR_ACTIONS:
                messages = []
                for service in services:
                    message_id, body = command_body(release_id, service, action)
                    message = amqp_message(body, message_id, "command", release_id, "guest")
                    messages.append((message, topology.command_key(service, action)))
                counter.expect(release_id, len(services))
                started = time.perf_counter()
                await asyncio.gather(
                    *(commands.publish(m, routing_key=key, mandatory=True, timeout=60) for m, key in messages)
                )
                await asyncio.wait_for(counter.done.wait(), 300)
                elapsed = time.perf_counter() - started
                if round_ >= warmup:
                    samples.append(ms(elapsed))
        await replies.cancel(tag)
    finally:
        await connection.close()
    return samples


# ---------------------------------------------------------------------- the store alone


def sample_release(services: Sequence[str]) -> Release:
    """A running release with ``services`` tasks, each accepted: what every reply reads and writes."""
    at = time.time()
    moment = datetime.fromtimestamp(at, UTC)
    tasks = {
        s: Task(
            service=s,
            state=TaskState.RUNNING,
            answers={Action.INITIALIZE: Outcome.ACCEPTED},
            entered={TaskState.INITIALIZED: moment, TaskState.RUNNING: moment},
            last_message="accepted",
            last_message_id="0" * 32,
            deadline_at=moment + timedelta(minutes=10),
            updated_at=moment,
        )
        for s in services
    }
    return Release(
        id=new_release_id(),
        seq=1,
        name="bench",
        studies=("SD_BENCH01",),
        tentative_version="0.0.1",
        state=ReleaseState.RUNNING,
        tasks=tasks,
        entered={
            ReleaseState.WAITING: moment,
            ReleaseState.INITIALIZING: moment,
            ReleaseState.RUNNING: moment,
        },
        created_at=moment,
        updated_at=moment,
    )


async def measure_store(url: str, namespace: str, services: Sequence[str], repeat: int) -> dict[str, Any]:
    """The store alone, through the engine's own interface, for a release of len(services) tasks: a read,
    and a compare-and-set that changes one task (what a reply costs), each ``repeat`` times."""
    scratch = url.replace(".db", "-scratch.db") if url.startswith("sqlite") else url
    store = await connect_store(scratch, f"{namespace}-scratch")
    release = sample_release(services)
    try:
        await store.insert(release, [])
        timings: dict[str, list[float]] = {"get": [], "compare_and_set": []}
        service = services[0]
        for n in range(repeat):
            started = time.perf_counter()
            await store.get(release.id)
            timings["get"].append(time.perf_counter() - started)
            task = release.tasks[service].model_copy(update={"progress": float(n % 100)})
            after = release.model_copy(
                update={"revision": release.revision + 1, "tasks": {**release.tasks, service: task}}
            )
            started = time.perf_counter()
            await store.compare_and_set(release, after, [])
            timings["compare_and_set"].append(time.perf_counter() - started)
            release = after
        result: dict[str, Any] = {
            name: round(statistics.median(values) * 1000, 3) for name, values in timings.items()
        }
        result["document_bytes"] = len(release.model_dump_json())
        return result
    finally:
        await close_store(store)  # a scratch file goes with the run's temporary folder
