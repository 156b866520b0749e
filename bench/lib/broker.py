"""Service host processes, the namespace's topology, and releases driven through the coordinator."""

from __future__ import annotations

import asyncio
import secrets
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import aio_pika

from bench.lib.basics import BAD_STATES, ms, now, split
from bench.lib.procs import Child, Children
from coordinator.broker.rabbitmq import send_confirmed
from coordinator.store import Store
from rc_cli.client import AdminClient, expect_ok
from schemas.documents import ReleaseView
from schemas.enums import Action, ReleaseState
from schemas.messages import (
    SCHEMA_VERSION,
    Announcement,
    Command,
    CreateRelease,
    PublishRelease,
    ReleaseInfo,
    ReleaseResult,
    encode,
)
from schemas.topology import SCHEMA_VERSION_HEADER, Topology

# ---------------------------------------------------------------------- service hosts


async def start_hosts(
    children: Children,
    url: str,
    namespace: str,
    services: Sequence[str],
    processes: int,
    *,
    mode: str = "answer",
    prefetch: int = 16,
) -> list[Child]:
    """``processes`` host processes serving ``services`` between them; returns once all consume."""
    hosts = []
    for index, names in enumerate(split(services, processes)):
        argv = [
            sys.executable,
            "-m",
            "bench.lib.entry",
            "host",
            "--amqp-url",
            url,
            "--namespace",
            namespace,
            "--services",
            ",".join(names),
            "--mode",
            mode,
            "--prefetch",
            str(prefetch),
        ]
        hosts.append(children.add(Child(f"host{index}", argv)))
    for host in hosts:
        await host.expect("READY", 120)
    return hosts


async def host_command(hosts: Sequence[Child], command: str, answer_prefix: str, within: float) -> int:
    """Send ``command`` to every host; sum the integers of their ``<answer_prefix> N`` answers."""
    for host in hosts:
        host.send(command)
    total = 0
    for host in hosts:
        line = await host.expect(answer_prefix, within)
        total += int(line.split()[1])
    return total


# ---------------------------------------------------------------------- topology


async def declare_topology(url: str, namespace: str) -> None:
    """The exchanges and coordinator queues, declared exactly as the coordinator declares them."""
    from coordinator.broker.rabbitmq import RabbitBroker

    session = await RabbitBroker(url, Topology(namespace), publish_timeout=10, prefetch=1).connect(
        "bench-setup"
    )
    try:
        await session.declare_topology()
    finally:
        await session.close()


async def delete_namespace(
    url: str, namespace: str, services: Iterable[str], extra_queues: Iterable[str] = ()
) -> None:
    """Delete the queues and exchanges of ``namespace`` a run created (quorum queues: unconditionally)."""
    topology = Topology(namespace)
    queues = [
        *(topology.task_queue(s) for s in services),
        topology.replies_queue,
        topology.admin_queue,
        topology.dead_letter_queue,
        *extra_queues,
    ]
    connection = await aio_pika.connect(url, timeout=30)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            try:
                await channel.queue_delete(name, if_unused=False, if_empty=False)
            except Exception:
                channel = await connection.channel()
        for name in topology.exchanges():
            try:
                await channel.exchange_delete(name, if_unused=False)
            except Exception:
                channel = await connection.channel()


async def queue_depth(channel: aio_pika.abc.AbstractChannel, name: str) -> int:
    """Ready messages in queue ``name`` (a passive declare: no load on the consumer)."""
    queue_ = await channel.declare_queue(name, passive=True)
    return int(queue_.declaration_result.message_count or 0)


def amqp_message(
    body: bytes, message_id: str, kind: str, correlation_id: str | None, user: str
) -> aio_pika.Message:
    """A message with the properties every message of the design carries (persistent, JSON, ids, user)."""
    return aio_pika.Message(
        body,
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=message_id,
        correlation_id=correlation_id,
        type=kind,
        headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
        user_id=user,
    )


async def publish_confirmed(
    channel: aio_pika.abc.AbstractChannel,
    exchange: str,
    routing_key: str,
    message: aio_pika.Message,
    *,
    mandatory: bool,
) -> None:
    """Publish ``message`` as the coordinator does (:func:`coordinator.broker.rabbitmq.send_confirmed`:
    straight on the AMQP channel, without waiting for each frame to be written) and wait for the broker's
    confirm, on a channel opened with publisher confirms; a nack or a returned message raises."""
    body, properties = message.body, message.properties
    await send_confirmed(channel, exchange, routing_key, body, properties, mandatory=mandatory, within=60)


@dataclass(frozen=True)
class Publication:
    """One message of a release's outbox, built beforehand (the benchmarks' floors publish it)."""

    body: bytes
    message_id: str
    kind: str
    exchange: str
    routing_key: str


async def publish_outbox(
    channel: aio_pika.abc.AbstractChannel, release_id: str, publications: Sequence[Publication], user: str
) -> None:
    """Publish a release's outbox as the coordinator does: every message at once, confirms in flight
    together, commands mandatory."""
    await asyncio.gather(
        *(
            publish_confirmed(
                channel,
                p.exchange,
                p.routing_key,
                amqp_message(p.body, p.message_id, p.kind, release_id, user),
                mandatory=p.kind == "command",
            )
            for p in publications
        )
    )


def bench_command(release_id: str, service: str, action: Action) -> Command:
    """A valid command, as the coordinator would send it, for the benchmarks' floors."""
    return Command(
        message_id=uuid.uuid4().hex,
        sent_at=now(),
        release_id=release_id,
        service=service,
        action=action,
        release=ReleaseInfo(id=release_id, name="bench", studies=("SD_BENCH01",), tentative_version="0.0.1"),
    )


def command_body(release_id: str, service: str, action: Action) -> tuple[str, bytes]:
    """A valid command (as the coordinator would send) for the bare-broker floor: its id and body."""
    command = bench_command(release_id, service, action)
    return command.message_id, encode(command)


def command_publications(
    release_id: str, services: Sequence[str], action: Action, topology: Topology
) -> list[Publication]:
    """The commands of one step of a release, one to each service, as the coordinator's outbox holds them."""
    made = []
    for service in services:
        message_id, body = command_body(release_id, service, action)
        key = topology.command_key(service, action)
        made.append(Publication(body, message_id, "command", topology.commands_exchange, key))
    return made


def announcement_publication(view: ReleaseView, state: ReleaseState, topology: Topology) -> Publication:
    """The announcement of ``state`` carrying ``view``, as the coordinator's outbox holds it."""
    message_id = f"{view.id}.announce.{state}.r1"
    announcement = Announcement(
        message_id=message_id, sent_at=now(), release_id=view.id, state=state, release=view
    )
    key = topology.event_key(state.value)
    return Publication(
        encode(announcement), announcement.message_id, "announcement", topology.events_exchange, key
    )


def new_release_id() -> str:
    return "RE_" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(8))


# ---------------------------------------------------------------------- releases through the coordinator


class Announcements:
    """Records ``release.<state>`` announcements (arrival time) and lets callers wait for one."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, ReleaseState], float] = {}
        self._events: dict[tuple[str, ReleaseState | None], asyncio.Event] = {}
        self.bad: dict[str, str] = {}

    def _event(self, key: tuple[str, ReleaseState | None]) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def __call__(self, announcement: Announcement) -> None:
        key = (announcement.release_id, announcement.state)
        self.arrived.setdefault(key, time.monotonic())
        self._event(key).set()
        if announcement.state in BAD_STATES:
            self.bad.setdefault(announcement.release_id, announcement.release.state_reason or "")
            self._event((announcement.release_id, None)).set()

    async def wait(self, release_id: str, state: ReleaseState, within: float) -> None:
        ok = asyncio.ensure_future(self._event((release_id, state)).wait())
        bad = asyncio.ensure_future(self._event((release_id, None)).wait())
        try:
            done, _ = await asyncio.wait({ok, bad}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ok.cancel()
            bad.cancel()
        if ok in done:
            return
        if bad in done:
            raise RuntimeError(f"{release_id} was {self.bad.get(release_id)!r} instead of reaching {state}")
        raise TimeoutError(f"{release_id} did not reach {state} within {within:g}s")

    def forget(self, release_id: str) -> None:
        for key in [k for k in self._events if k[0] == release_id]:
            del self._events[key]
        for seen in [k for k in self.arrived if k[0] == release_id]:
            del self.arrived[seen]
        self.bad.pop(release_id, None)


async def admin_client(
    url: str, namespace: str, within: float, announcements: Announcements | None
) -> AdminClient:
    client = AdminClient(url, namespace, timeout=within, operator="bench")
    await client.connect()
    if announcements is not None:
        await client.subscribe_announcements(announcements)
    return client


async def create_release(client: AdminClient, name: str, within: float) -> str:
    result = expect_ok(await client.request(CreateRelease(name=name, studies=("SD_BENCH01",)), wait=within))
    assert isinstance(result, ReleaseResult)
    return result.release.id


@dataclass(frozen=True)
class TimedRelease:
    """One release driven create -> staged -> publish -> published, timed from the announcements' arrivals."""

    release_id: str
    #: ms per step: initialize, process, publish.
    steps: dict[str, float]
    created_at: datetime
    publish_at: datetime


async def time_release(
    client: AdminClient, announcements: Announcements, name: str, within: float
) -> TimedRelease:
    """Drive one release and time its steps from the arrivals of its announcements: initialize = operator
    create sent -> ``release.running``; process = ``release.running`` -> ``release.staged``; publish =
    operator publish sent -> ``release.published``. Whoever answers the requests and announces (the
    coordinator, or the overhead benchmark's same-hops floor) is timed alike."""
    created_at, created_mono = now(), time.monotonic()
    release_id = await create_release(client, name, within)
    await announcements.wait(release_id, ReleaseState.STAGED, within)
    publish_at, publish_mono = now(), time.monotonic()
    expect_ok(await client.request(PublishRelease(release_id=release_id), wait=within))
    await announcements.wait(release_id, ReleaseState.PUBLISHED, within)
    arrived = {
        state: announcements.arrived[(release_id, state)]
        for state in ReleaseState
        if (release_id, state) in announcements.arrived
    }
    announcements.forget(release_id)
    steps = {
        "initialize": ms(arrived[ReleaseState.RUNNING] - created_mono),
        "process": ms(arrived[ReleaseState.STAGED] - arrived[ReleaseState.RUNNING]),
        "publish": ms(arrived[ReleaseState.PUBLISHED] - publish_mono),
    }
    return TimedRelease(release_id, steps, created_at, publish_at)


async def drive_release(
    client: AdminClient, announcements: Announcements, store: Store, name: str, within: float
) -> dict[str, float]:
    """One release create -> staged -> publish -> published through the coordinator; ms per step.

    Step boundaries are the arrivals of the coordinator's announcements (published right after the
    transition is stored; see :func:`time_release`). ``<step>_stored`` are the same from the store's
    ``entered`` times, which are the moment the deciding reply *arrived* (before it waited for the
    release's lock), so they move time from initialize to process.
    """
    timed = await time_release(client, announcements, name, within)
    release = await store.get(timed.release_id)
    assert release is not None
    entered = release.entered
    return {
        **timed.steps,
        "initialize_stored": ms((entered[ReleaseState.RUNNING] - timed.created_at).total_seconds()),
        "process_stored": ms((entered[ReleaseState.STAGED] - entered[ReleaseState.RUNNING]).total_seconds()),
        "publish_stored": ms((entered[ReleaseState.PUBLISHED] - timed.publish_at).total_seconds()),
    }
