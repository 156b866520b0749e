"""Acknowledgements sent together: never one for a delivery whose handler has not said so."""

from __future__ import annotations

import asyncio

from coordinator.broker._acks import CoalescedAcks

#: Frames as a channel saw them: ``(tag, multiple)``, or ``(tag, False, "nack")``.
Sent = list[tuple[int, bool] | tuple[int, bool, str]]


class FakeChannel:
    def __init__(self) -> None:
        self.sent: Sent = []

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        self.sent.append((delivery_tag, multiple))
        if wait:
            await asyncio.sleep(0)  # the writer drains: other acknowledgements may fall due meanwhile

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        self.sent.append((delivery_tag, multiple, "nack"))


def deliveries(count: int) -> tuple[CoalescedAcks, list[int], Sent]:
    channel = FakeChannel()
    acks = CoalescedAcks(channel)
    tags = list(range(1, count + 1))
    for tag in tags:
        acks.received(tag)
    return acks, tags, channel.sent


async def test_acknowledgements_due_in_one_turn_leave_in_one_frame() -> None:
    acks, tags, sent = deliveries(5)
    await asyncio.gather(*(acks.ack(tag) for tag in tags))
    assert sent == [(5, True)]
    assert (acks.frames, acks.acknowledged) == (1, 5)


async def test_a_delivery_not_yet_due_is_never_covered_by_a_multiple_ack() -> None:
    acks, tags, sent = deliveries(5)
    await asyncio.gather(*(acks.ack(tags[i]) for i in (0, 1, 3, 4)))  # the third one is still working
    assert sent == [(2, True), (4, False), (5, False)]
    await acks.ack(tags[2])
    assert sent[3:] == [(3, False)]
    assert (acks.frames, acks.acknowledged) == (4, 5)


async def test_a_requeued_delivery_no_longer_holds_back_the_ones_after_it() -> None:
    acks, tags, sent = deliveries(4)
    await acks.requeue(tags[0])  # nacked for another try
    await asyncio.gather(*(acks.ack(tag) for tag in tags[1:]))
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

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None:
        raise AssertionError("nothing is requeued here")

    async def serve(self) -> None:
        while True:
            tag, multiple = await self.writes.get()
            await asyncio.sleep(0)  # the socket takes its time
            if tag not in self.outstanding:
                self.unknown.append(tag)
            covered = {t for t in self.outstanding if t <= tag} if multiple else {tag}
            self.outstanding -= covered
            self.writes.task_done()


async def test_a_later_run_never_overtakes_an_earlier_single_acknowledgement() -> None:
    """The first run is a ``multiple`` up to 2 and a single 4 (3 still working); 3 and 5 fall due while
    the write queue is full: their run (a ``multiple`` up to 5, covering 4) must not reach the broker
    before the single 4 (seen in the throughput benchmark as 'unknown delivery tag', the channel closed)."""
    broker = Broker(5)
    serving = asyncio.create_task(broker.serve())
    await broker.writes.put((0, False))  # the queue is full: the next frame waits for room
    broker.outstanding.add(0)
    acks = CoalescedAcks(broker)
    for tag in range(1, 6):
        acks.received(tag)
    first = asyncio.gather(*(acks.ack(tag) for tag in (1, 2, 4)))
    await asyncio.sleep(0)  # the first run is chosen and waits to queue its frames
    await asyncio.gather(first, *(acks.ack(tag) for tag in (3, 5)))
    await broker.writes.join()
    serving.cancel()
    assert broker.unknown == []
    assert broker.outstanding == set()


async def test_deliveries_seen_out_of_order_are_acknowledged_one_by_one() -> None:
    channel = FakeChannel()
    acks = CoalescedAcks(channel)
    for tag in (1, 3, 2):
        acks.received(tag)
    await asyncio.gather(*(acks.ack(tag) for tag in (1, 3, 2)))
    assert sorted(channel.sent) == [(1, False), (2, False), (3, False)]
