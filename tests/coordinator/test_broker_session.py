"""The broker seam's publishing contract, on RabbitMQ and in memory alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from coordinator.broker import Broker, Delivery, Unroutable
from schemas.documents import OutboxEntry
from schemas.enums import MessageKind
from schemas.topology import DEAD_REASON_HEADER, Topology
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


async def test_a_consumed_delivery_says_who_sent_it_and_is_settled_once(
    coordinator_broker: Broker, connect_peer: Callable[[], Awaitable[Peer]], namespace: str
) -> None:
    """A delivery carries what admission checks (the broker-vouched user, the correlation id naming the
    release, the reply-to of an operator); settled twice, it is refused and the session keeps consuming
    (on RabbitMQ a second acknowledgement of one delivery would close the channel and end the session);
    a requeued one comes back marked redelivered, a dead-lettered one reaches the dead letters with the
    reason and where it was going."""
    topology = Topology(namespace)
    peer = await connect_peer()
    session = await coordinator_broker.connect("rc-test")
    seen: list[Delivery] = []
    arrived = asyncio.Event()

    async def keep(delivery: Delivery) -> None:
        seen.append(delivery)
        arrived.set()

    async def next_delivery() -> Delivery:
        await asyncio.wait_for(arrived.wait(), 30)
        arrived.clear()
        return seen[-1]

    try:
        await session.declare_topology()
        await session.consume(topology.replies_queue, keep)
        await peer.publish(
            topology.replies_exchange,
            "reply.portal.reply",
            b'{"n": 1}',
            message_id="m1",
            correlation_id="RE_ABCDEFGH",
            reply_to="operator-answers",
        )
        first = await next_delivery()
        sent = (first.body, first.routing_key, first.message_id, first.correlation_id, first.reply_to)
        assert sent == (b'{"n": 1}', "reply.portal.reply", "m1", "RE_ABCDEFGH", "operator-answers")
        assert (first.user_id, first.redelivered) == (peer.user, False)
        await first.requeue()
        again = await next_delivery()
        assert (again.message_id, again.redelivered) == ("m1", True)
        await again.ack()
        with pytest.raises(Exception, match="settled"):
            await again.ack()
        await peer.publish(topology.replies_exchange, "reply.portal.reply", b"{}", message_id="m2")
        second = await next_delivery()
        await second.dead_letter("invalid: a test")
        dead = await _get_within(peer, topology.dead_letter_queue, 30)
    finally:
        await session.close()
        await peer.close()
    assert [d.message_id for d in seen] == ["m1", "m1", "m2"]
    assert (dead.message_id, dead.headers[DEAD_REASON_HEADER]) == ("m2", "invalid: a test")
    assert dead.headers["x-rc-original-routing-key"] == "reply.portal.reply"
    assert dead.headers["x-rc-original-user-id"] == peer.user


async def _get_within(peer: Peer, queue: str, seconds: float) -> Received:
    deadline = asyncio.get_running_loop().time() + seconds
    while (got := await peer.get(queue)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"nothing reached {queue}"
        await asyncio.sleep(0.05)
    return got
