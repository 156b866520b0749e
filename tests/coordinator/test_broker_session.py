"""The broker seam's publishing contract, on RabbitMQ and in memory alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from coordinator.broker import Broker, Delivery, Unroutable
from schemas.documents import OutboxEntry
from schemas.enums import MessageKind
from schemas.topology import Topology
from tests.coordinator.fixtures import BOTH_BROKERS
from tests.coordinator.peers import Peer, Received

pytestmark = BOTH_BROKERS


def cancel(message_id: str) -> OutboxEntry:
    return OutboxEntry(
        message_id=message_id,
        exchange="commands",
        routing_key="task.portal.cancel",
        kind=MessageKind.COMMAND,
        body="{}",
    )


async def test_a_command_no_queue_takes_is_refused_as_unroutable(coordinator_broker: Broker) -> None:
    """The outbox sends a cancel to an instance's own queue and falls back to the service's queue only when
    the broker says no queue took it: a silently dropped command here would leave a release canceling."""
    session = await coordinator_broker.connect("rc-test")
    try:
        await session.declare_topology()
        await session.declare_task_queue("portal")
        await session.publish(cancel("routed"), "RE_1")  # the service's queue takes it
        with pytest.raises(Unroutable):
            await session.publish(cancel("unrouted"), "RE_1", routing_key="task.portal.cancel.nobody")
        await session.publish(cancel("after"), "RE_1")  # the session stays usable
    finally:
        await session.close()


async def test_consumer_counts_of_many_services_come_back_for_each_service(
    coordinator_broker: Broker, connect_peer: Callable[[], Awaitable[Peer]], namespace: str
) -> None:
    """The health check asks the queues of hundreds of services at once over several channels: each
    service still gets its own count, None where it has no queue (a missing queue closes the channel
    that asked, and the rest of that channel's share is asked on a new one), and again on the channels
    kept for the next release."""
    topology = Topology(namespace)
    services = [f"svc{i:02d}" for i in range(40)]
    with_queue = services[::2]
    consumed = services[::4]
    session = await coordinator_broker.connect("rc-test")
    peer = await connect_peer()
    try:
        await session.declare_topology()
        for service in with_queue:
            await session.declare_task_queue(service)
        for service in consumed:
            await peer.consume(topology.task_queue(service), _ignore)
        counts = await session.consumer_counts(services)
        again = await session.consumer_counts(services)  # on the channels kept from the first time
    finally:
        await peer.close()
        await session.close()
    assert list(counts) == services
    expected = {s: (1 if s in consumed else 0) if s in with_queue else None for s in services}
    assert counts == expected
    assert again == expected


async def _ignore(_: Received) -> None:
    return None


async def test_acknowledgements_go_together_and_never_for_a_delivery_still_at_work(
    coordinator_broker: Broker, connect_peer: Callable[[], Awaitable[Peer]], namespace: str
) -> None:
    """Replies stored in one write are acknowledged together; one whose handler has not finished stays
    unacknowledged whatever is acknowledged around it, and comes back when the session is lost."""
    topology = Topology(namespace)
    peer = await connect_peer()
    first = await coordinator_broker.connect("rc-test")
    held: dict[str, Delivery] = {}
    every = asyncio.Event()

    async def hold(delivery: Delivery) -> None:
        held[delivery.message_id or ""] = delivery
        if len(held) == 5:
            every.set()

    try:
        await first.declare_topology()
        for n in range(5):
            await peer.publish(topology.replies_exchange, "reply.portal.reply", b"{}", message_id=f"m{n}")
        await first.consume(topology.replies_queue, hold)
        await asyncio.wait_for(every.wait(), 30)
        await asyncio.gather(*(held[f"m{n}"].ack() for n in (0, 1, 3, 4)))  # m2 is still at work
    finally:
        await first.close()
    again: list[str] = []
    redelivered = asyncio.Event()

    async def note(delivery: Delivery) -> None:
        again.append(delivery.message_id or "")
        redelivered.set()
        await delivery.ack()

    second = await coordinator_broker.connect("rc-test-2")
    try:
        await second.consume(topology.replies_queue, note)
        await asyncio.wait_for(redelivered.wait(), 30)
    finally:
        await second.close()
        await peer.close()
    assert again == ["m2"]
