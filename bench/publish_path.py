"""The coordinator's publication path alone: CPU per publication of a transition's outbox.

A transition of a release of 10 services publishes 10 persistent commands (one into each service's quorum
queue, mandatory) and one announcement, with publisher confirms, all in flight together. This script
does that in rounds through the coordinator's own broker session (:class:`RabbitSession.publish`),
alternating with the same messages published through aio-pika's ``Exchange.publish`` on a channel with
confirms (what the coordinator did before: it waits for each frame to be written before the next
publication on the channel may queue), and prints the CPU of this process per publication for both,
and their ratio.

    python -m bench.publish_path [--rounds 200] [--services 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import aio_pika

from bench.lib import (
    RESULTS,
    amqp_url,
    delete_namespace,
    last_line,
    new_namespace,
    ratio,
    say,
    service_names,
    write_results,
)
from coordinator.broker.rabbitmq import RabbitBroker, RabbitSession
from schemas.broker_url import broker_user
from schemas.documents import OutboxEntry
from schemas.enums import Action, MessageKind
from schemas.messages import SCHEMA_VERSION
from schemas.topology import SCHEMA_VERSION_HEADER, Topology

NAME = "publish_path"
Burst = Callable[[Sequence[OutboxEntry]], Awaitable[None]]


def outbox(services: Sequence[str]) -> list[OutboxEntry]:
    """A transition's outbox: a command to each service and one announcement (bodies of realistic size)."""
    body = '{"release_id": "RE_BENCH000", "padding": "' + "x" * 250 + '"}'
    entries = [
        OutboxEntry(
            message_id=uuid.uuid4().hex,
            exchange="commands",
            routing_key=Topology.command_key(service, Action.START),
            kind=MessageKind.COMMAND,
            body=body,
        )
        for service in services
    ]
    entries.append(
        OutboxEntry(
            message_id=uuid.uuid4().hex,
            exchange="events",
            routing_key=Topology.event_key("running"),
            kind=MessageKind.ANNOUNCEMENT,
            body=body,
        )
    )
    return entries


def through_session(session: RabbitSession) -> Burst:
    async def burst(entries: Sequence[OutboxEntry]) -> None:
        await asyncio.gather(*(session.publish(entry, "RE_BENCH000") for entry in entries))

    return burst


def through_aio_pika(channel: aio_pika.abc.AbstractChannel, topology: Topology, user: str) -> Burst:
    """The same messages through aio-pika's ``Exchange.publish``, as the coordinator published before (a
    channel with publisher confirms of a connection of its own)."""
    names = {"commands": topology.commands_exchange, "events": topology.events_exchange}

    async def burst(entries: Sequence[OutboxEntry]) -> None:
        exchanges = {kind: await channel.get_exchange(name, ensure=False) for kind, name in names.items()}
        await asyncio.gather(*(_publish(exchanges[entry.exchange], entry) for entry in entries))

    async def _publish(exchange: aio_pika.abc.AbstractExchange, entry: OutboxEntry) -> None:
        message = aio_pika.Message(
            entry.body.encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=entry.message_id,
            correlation_id="RE_BENCH000",
            type=entry.kind.value,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            user_id=user,
            app_id="rc-coordinator",
        )
        mandatory = entry.exchange == "commands"
        await exchange.publish(message, routing_key=entry.routing_key, mandatory=mandatory, timeout=30)

    return burst


async def cpu_per_publication(burst: Burst, entries: Sequence[OutboxEntry], rounds: int) -> float:
    """Microseconds of this process's CPU per publication over ``rounds`` bursts."""
    started = time.process_time()
    for _ in range(rounds):
        await burst(entries)
    return 1e6 * (time.process_time() - started) / (rounds * len(entries))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url, namespace = amqp_url(), new_namespace("pub")
    topology = Topology(namespace)
    services = service_names(args.services)
    broker = RabbitBroker(url, topology, publish_timeout=30, prefetch=64)
    session = await broker.connect(f"{namespace}-bench")
    connection = await aio_pika.connect(url, timeout=30)
    samples: dict[str, list[float]] = {"aio_pika": [], "session": []}
    try:
        await session.declare_topology()
        for service in services:
            await session.declare_task_queue(service)
        entries = outbox(services)
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        sides = {
            "aio_pika": through_aio_pika(channel, topology, broker_user(url)),
            "session": through_session(session),
        }
        for burst in sides.values():  # warm up both
            await cpu_per_publication(burst, entries, 5)
        for block in range(args.blocks):
            for side, burst in sides.items():
                samples[side].append(await cpu_per_publication(burst, entries, args.rounds // args.blocks))
            say(
                f"block {block + 1}/{args.blocks}: "
                + ", ".join(f"{k} {v[-1]:.0f} us" for k, v in samples.items())
            )
    finally:
        await connection.close()
        await session.close()
        await delete_namespace(url, namespace, services, [])
    medians = {side: round(statistics.median(values), 1) for side, values in samples.items()}
    return {
        "benchmark": NAME,
        "method": {
            "services": args.services,
            "publications_per_burst": len(services) + 1,
            "rounds": args.rounds,
        },
        "cpu_us_per_publication": medians,
        "samples_us": samples,
        "ratio": ratio(medians["session"], medians["aio_pika"]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.publish_path", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=400, help="bursts per side (default 400)")
    parser.add_argument("--blocks", type=int, default=8, help="alternations of the two sides (default 8)")
    parser.add_argument("--services", type=int, default=10, help="commands per burst (default 10)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    data = asyncio.run(run(args))
    medians = data["cpu_us_per_publication"]
    say(
        f"CPU per publication: aio-pika {medians['aio_pika']} us, coordinator session {medians['session']} us"
    )
    path = write_results(NAME, data, args.results_dir)
    say(f"figures written to {path.name}")
    print(last_line(NAME, medians["session"], "us/publication", data["ratio"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
