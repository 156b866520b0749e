"""Acknowledgements of one consuming channel, sent together (``basic.ack`` with ``multiple``).

A delivery is acknowledged only when its handler says so, that is once its effect is stored; nothing
here acknowledges earlier. What changes is how: the acknowledgements that become due in the same turn
of the event loop (the replies of one stored batch) leave in one frame where the order allows. A
``basic.ack`` with ``multiple`` acknowledges every outstanding delivery of the channel up to its tag, so
it is sent only for a run of due deliveries with no outstanding, not yet due, delivery before them; the
others due are acknowledged one by one, at once, as before.

Delivery tags of a channel are consecutive and handlers see their deliveries in that order (aiormq starts
one task per delivery, in order). Should a delivery ever be seen out of order, the channel falls back to
one acknowledgement per delivery for good.

Every frame that settles a delivery of the channel (a run's acknowledgements, a single one, a requeue)
is written under one lock, and a run is chosen under it: aiormq's write queue is bounded, so queuing a
frame can wait, and without the lock a later run's ``multiple`` could overtake an earlier run's single
acknowledgement of a delivery it covers. RabbitMQ then refuses that acknowledgement (``PRECONDITION_FAILED
- unknown delivery tag``) and closes the channel, which ends the session (seen in the throughput
benchmark: a reconnection, and the replies not yet acknowledged delivered again).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class AckChannel(Protocol):
    """What settles deliveries: an AMQP channel (aiormq's)."""

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None: ...

    async def basic_nack(
        self, delivery_tag: int, multiple: bool = False, requeue: bool = True, wait: bool = True
    ) -> None: ...


class CoalescedAcks:
    def __init__(self, channel: AckChannel) -> None:
        self._channel = channel
        #: Delivery tags not yet settled, in order: True once the acknowledgement is due.
        self._outstanding: dict[int, bool] = {}
        self._last_seen = 0
        self._in_order = True
        self._sending: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        #: ``basic.ack`` frames sent, and deliveries they acknowledged (tests and benchmarks read them).
        self.frames = 0
        self.acknowledged = 0

    def received(self, tag: int) -> None:
        """A delivery reached its handler (call before the handler runs)."""
        if tag != self._last_seen + 1:
            self._in_order = False
        self._last_seen = max(self._last_seen, tag)
        self._outstanding[tag] = False

    async def ack(self, tag: int) -> None:
        """Acknowledge delivery ``tag``, with the others due in this turn of the event loop."""
        if not self._in_order or tag not in self._outstanding:
            async with self._writing:
                self._outstanding.pop(tag, None)
                await self._send([tag], multiple=False, wait=True)
            return
        self._outstanding[tag] = True
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send_due())
        await asyncio.shield(self._sending)

    async def requeue(self, tag: int) -> None:
        """Give delivery ``tag`` back to the queue (``basic.nack`` with requeue): it no longer holds back a
        run."""
        async with self._writing:
            self._outstanding.pop(tag, None)
            await self._channel.basic_nack(tag, requeue=True)

    async def _send_due(self) -> None:
        """Runs one turn after the first acknowledgement fell due: the others due by the time it holds
        the writing lock join it; the last frame's write is awaited (back-pressure, as one
        acknowledgement awaited it before)."""
        async with self._writing:
            self._sending = None
            await self._send_run()

    async def _send_run(self) -> None:
        tags = list(self._outstanding)  # in order
        run = 0
        while run < len(tags) and self._outstanding[tags[run]]:
            run += 1
        alone = [tag for tag in tags[run:] if self._outstanding[tag]]
        for tag in (*tags[:run], *alone):
            del self._outstanding[tag]
        if run:
            await self._send([tags[run - 1]], multiple=run > 1, wait=not alone, counted=run)
        if alone:
            await self._send(alone, multiple=False, wait=True)

    async def _send(self, tags: list[int], *, multiple: bool, wait: bool, counted: int = 0) -> None:
        """One ``basic.ack`` per tag (with ``multiple``: the one frame covers ``counted`` deliveries); only
        the last frame's write is awaited if ``wait``; the others may wait for room in the write queue."""
        self.frames += len(tags)
        self.acknowledged += counted or len(tags)
        for tag in tags[:-1]:
            await self._channel.basic_ack(tag, multiple=multiple, wait=False)
        await self._channel.basic_ack(tags[-1], multiple=multiple, wait=wait)
