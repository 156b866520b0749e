"""The in-memory broker behaves like RabbitMQ where the coordinator relies on it."""

from __future__ import annotations

import asyncio

import pytest

from coordinator.broker import NotLeader, Unroutable
from coordinator.broker.memory import (
    BrokerError,
    MemoryBroker,
    MemoryDelivery,
    Message,
    PublishRefused,
)
from schemas.topology import DEAD_REASON_HEADER, DELIVERY_LIMIT, Topology
from tests.unit.event_loop import turns_until

TOPOLOGY = Topology("mem")


async def drained() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def setup_queue(broker: MemoryBroker, *, single_active: bool = False) -> str:
    admin = broker.connection("admin")
    for name, kind in TOPOLOGY.exchanges().items():
        admin.declare_exchange(name, kind)
    arguments = TOPOLOGY.quorum_arguments(single_active_consumer=single_active)
    queue = admin.declare_queue("mem.task.portal", arguments)
    admin.bind(queue, TOPOLOGY.commands_exchange, "task.portal.*")
    dead = admin.declare_queue(TOPOLOGY.dead_letter_queue, {})
    admin.bind(dead, TOPOLOGY.dead_letter_exchange, "")
    return queue


def command(n: int) -> Message:
    return Message(f"{n}".encode(), exchange=TOPOLOGY.commands_exchange, routing_key="task.portal.start")


async def test_topic_routing_and_mandatory() -> None:
    broker = MemoryBroker(TOPOLOGY)
    queue = setup_queue(broker)
    sender = broker.connection("rc-coordinator")
    sender.publish(command(1), mandatory=True)
    assert [m.body for m in broker.queues[queue].messages] == [b"1"]
    with pytest.raises(Unroutable):
        sender.publish(
            Message(b"x", exchange=TOPOLOGY.commands_exchange, routing_key="task.other.start"), mandatory=True
        )
    sender.publish(
        Message(b"x", exchange=TOPOLOGY.commands_exchange, routing_key="task.other.start")
    )  # dropped


async def test_a_user_id_that_is_not_the_connections_user_is_refused() -> None:
    broker = MemoryBroker(TOPOLOGY)
    setup_queue(broker)
    mallory = broker.connection("mallory")
    with pytest.raises(PublishRefused, match="user_id property set to 'portal'"):
        mallory.publish(
            Message(
                b"x", exchange=TOPOLOGY.commands_exchange, routing_key="task.portal.start", user_id="portal"
            )
        )


async def test_unacknowledged_deliveries_come_back_marked_redelivered_when_their_consumer_dies() -> None:
    broker = MemoryBroker(TOPOLOGY)
    queue = setup_queue(broker)
    held: list[MemoryDelivery] = []

    async def hold(delivery: MemoryDelivery) -> None:
        held.append(delivery)

    worker = broker.connection("portal")
    worker.consume(queue, hold, prefetch=2)
    sender = broker.connection("rc-coordinator")
    for n in range(3):
        sender.publish(command(n))
    await drained()
    assert [d.body for d in held] == [b"0", b"1"]  # prefetch 2: the third waits
    await held[0].ack()
    await drained()
    assert [d.body for d in held] == [b"0", b"1", b"2"]
    await worker.close()  # 1 and 2 were never acknowledged
    again: list[MemoryDelivery] = []

    async def take(delivery: MemoryDelivery) -> None:
        again.append(delivery)
        await delivery.ack()

    broker.connection("portal").consume(queue, take, prefetch=10)
    await drained()
    assert [(d.body, d.redelivered) for d in again] == [(b"1", True), (b"2", True)]


async def test_past_the_delivery_limit_a_message_is_dead_lettered() -> None:
    broker = MemoryBroker(TOPOLOGY)
    queue = setup_queue(broker)

    attempts: list[bytes] = []

    async def give_back(delivery: MemoryDelivery) -> None:
        attempts.append(delivery.body)
        await delivery.requeue()

    broker.connection("rc-coordinator").publish(command(7))
    broker.connection("portal").consume(queue, give_back, prefetch=1)
    await turns_until(lambda: bool(broker.queues[TOPOLOGY.dead_letter_queue].messages))
    dead = broker.connection("admin").get(TOPOLOGY.dead_letter_queue)
    assert dead is not None
    assert dead.body == b"7"
    assert attempts == [b"7"] * (DELIVERY_LIMIT + 1)  # handed out up to the limit, then once past it
    assert not broker.queues[queue].messages


async def test_a_dead_letter_carries_its_reason() -> None:
    broker = MemoryBroker(TOPOLOGY)
    queue = setup_queue(broker)

    async def refuse(delivery: MemoryDelivery) -> None:
        await delivery.dead_letter("invalid: not JSON")

    broker.connection("rc-coordinator").publish(command(1))
    broker.connection("portal").consume(queue, refuse, prefetch=1)
    await drained()
    dead = broker.connection("admin").get(TOPOLOGY.dead_letter_queue)
    assert dead is not None
    assert dead.headers[DEAD_REASON_HEADER] == "invalid: not JSON"
    assert dead.headers["x-rc-original-routing-key"] == "task.portal.start"


async def test_a_single_active_consumer_queue_feeds_one_consumer_then_the_next() -> None:
    broker = MemoryBroker(TOPOLOGY)
    queue = setup_queue(broker, single_active=True)
    seen: dict[str, list[bytes]] = {"first": [], "second": []}

    def consumer(name: str):  # type: ignore[no-untyped-def]
        async def take(delivery: MemoryDelivery) -> None:
            seen[name].append(delivery.body)
            await delivery.ack()

        return take

    first = broker.connection("rc-coordinator")
    first.consume(queue, consumer("first"), prefetch=5)
    broker.connection("rc-coordinator").consume(queue, consumer("second"), prefetch=5)
    sender = broker.connection("rc-coordinator")
    sender.publish(command(1))
    await drained()
    await first.close()
    sender.publish(command(2))
    await drained()
    assert seen == {"first": [b"1"], "second": [b"2"]}


async def test_the_leader_lock_is_held_by_one_session_and_released_with_it() -> None:
    broker = MemoryBroker(TOPOLOGY)
    leader, other = await broker.connect("a"), await broker.connect("b")
    await leader.acquire_leadership()
    with pytest.raises(NotLeader):
        await other.acquire_leadership()
    await leader.close()
    await other.acquire_leadership()


async def test_a_queue_redeclared_with_other_arguments_is_refused() -> None:
    broker = MemoryBroker(TOPOLOGY)
    queue = setup_queue(broker)
    with pytest.raises(BrokerError, match="inequivalent arguments"):
        broker.connection("portal").declare_queue(queue, {"x-queue-type": "classic"})
