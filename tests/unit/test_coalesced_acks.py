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
    acks.settled(messages[0])  # nacked for another try
    await asyncio.gather(*(acks.ack(m) for m in messages[1:]))
    assert sent == [(4, True)]


async def test_deliveries_seen_out_of_order_are_acknowledged_one_by_one() -> None:
    acks = CoalescedAcks()
    sent: list[tuple[int, bool]] = []
    messages = [cast(AbstractIncomingMessage, FakeMessage(tag, sent)) for tag in (1, 3, 2)]
    for message in messages:
        acks.received(message)
    await asyncio.gather(*(acks.ack(m) for m in messages))
    assert sorted(sent) == [(1, False), (2, False), (3, False)]
