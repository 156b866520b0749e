"""Acknowledgements sent together: never one for a delivery whose handler has not said so."""

from __future__ import annotations

import asyncio
from typing import cast

from aio_pika.abc import AbstractIncomingMessage

from coordinator.broker._acks import CoalescedAcks


class FakeChannel:
    def __init__(self, sent: list[tuple[int, bool]]) -> None:
        self.sent = sent

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append((delivery_tag, multiple))
        if wait:
            await asyncio.sleep(0)  # the writer drains: other acknowledgements may fall due meanwhile


class FakeMessage:
    def __init__(self, tag: int, sent: list[tuple[int, bool]]) -> None:
        self.delivery_tag = tag
        self.channel = FakeChannel(sent)

    async def ack(self, multiple: bool = False) -> None:
        await self.channel.basic_ack(self.delivery_tag, multiple)

    async def nack(self, requeue: bool = True) -> None:
        self.channel.sent.append((self.delivery_tag, False, "nack"))  # type: ignore[arg-type]


Sent = list[tuple[int, bool]]


def deliveries(acks: CoalescedAcks, count: int) -> tuple[list[AbstractIncomingMessage], Sent]:
    sent: list[tuple[int, bool]] = []
    messages = [cast(AbstractIncomingMessage, FakeMessage(tag, sent)) for tag in range(1, count + 1)]
    for message in messages:
        acks.received(message)
    return messages, sent


async def test_acknowledgements_due_in_one_turn_leave_in_one_frame() -> None:
    acks = CoalescedAcks()
    messages, sent = deliveries(acks, 5)
    await asyncio.gather(*(acks.ack(m) for m in messages))
    assert sent == [(5, True)]
    assert (acks.frames, acks.acknowledged) == (1, 5)


async def test_a_delivery_not_yet_due_is_never_covered_by_a_multiple_ack() -> None:
    acks = CoalescedAcks()
    messages, sent = deliveries(acks, 5)
    await asyncio.gather(*(acks.ack(messages[i]) for i in (0, 1, 3, 4)))  # the third one is still working
    assert sent == [(2, True), (4, False), (5, False)]
    await acks.ack(messages[2])
    assert sent[3:] == [(3, False)]


async def test_a_requeued_delivery_no_longer_holds_back_the_ones_after_it() -> None:
    acks = CoalescedAcks()
    messages, sent = deliveries(acks, 4)
    await acks.requeue(messages[0])  # nacked for another try
    await asyncio.gather(*(acks.ack(m) for m in messages[1:]))
    assert sent == [(1, False, "nack"), (4, True)]


class Broker:
    """A channel's unacknowledged deliveries as RabbitMQ keeps them, behind aiormq's bounded write queue:
    queuing a frame waits while the queue is full, and a frame for a delivery no longer outstanding is the
    broker's ``PRECONDITION_FAILED - unknown delivery tag``."""

    def __init__(self, count: int) -> None:
        self.outstanding = set(range(1, count + 1))
        self.writes: asyncio.Queue[tuple[int, bool]] = asyncio.Queue(maxsize=1)
        self.unknown: list[int] = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        await self.writes.put((delivery_tag, multiple))

    async def serve(self) -> None:
        while True:
            tag, multiple = await self.writes.get()
            await asyncio.sleep(0)  # the socket takes its time
            if tag not in self.outstanding:
                self.unknown.append(tag)
            covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
            self.outstanding -= covered
            self.writes.task_done()


class BrokerMessage:
    def __init__(self, tag: int, broker: Broker) -> None:
        self.delivery_tag = tag
        self.channel = broker

    async def ack(self, multiple: bool = False) -> None:
        await self.channel.basic_ack(self.delivery_tag, multiple)


async def test_a_later_run_never_overtakes_an_earlier_single_acknowledgement() -> None:
    """The first run is a ``multiple`` up to 2 and a single 4 (3 still working); 3 and 5 fall due while
    the write queue is full: their run (a ``multiple`` up to 5, covering 4) must not reach the broker
    before the single 4 (seen in the throughput benchmark as 'unknown delivery tag', the channel closed)."""
    broker = Broker(5)
    serving = asyncio.create_task(broker.serve())
    await broker.writes.put((0, False))  # the queue is full: the next frame waits for room
    broker.outstanding.add(0)
    acks = CoalescedAcks()
    messages = [cast(AbstractIncomingMessage, BrokerMessage(tag, broker)) for tag in range(1, 6)]
    for message in messages:
        acks.received(message)
    first = asyncio.gather(*(acks.ack(messages[i]) for i in (0, 1, 3)))
    await asyncio.sleep(0)  # the first run is chosen and waits to queue its frames
    await asyncio.gather(first, *(acks.ack(messages[i]) for i in (2, 4)))
    await broker.writes.join()
    serving.cancel()
    assert broker.unknown == []
    assert broker.outstanding == set()


async def test_deliveries_seen_out_of_order_are_acknowledged_one_by_one() -> None:
    acks = CoalescedAcks()
    sent: list[tuple[int, bool]] = []
    messages = [cast(AbstractIncomingMessage, FakeMessage(tag, sent)) for tag in (1, 3, 2)]
    for message in messages:
        acks.received(message)
    await asyncio.gather(*(acks.ack(m) for m in messages))
    assert sorted(sent) == [(1, False), (2, False), (3, False)]
