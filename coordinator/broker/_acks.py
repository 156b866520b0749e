"""Acknowledgements of one consuming channel, sent together (``basic.ack`` with ``multiple``).

A delivery is acknowledged only when its handler says so, that is once its effect is stored; nothing
here acknowledges earlier. What changes is how: the acknowledgements that become due in the same turn
of the event loop (the replies of one stored batch) leave in one frame where the order allows. A
``basic.ack`` with ``multiple`` acknowledges every outstanding delivery of the channel up to its tag, so
it is sent only for a run of due deliveries with no outstanding, not yet due, delivery before them; the
others due are acknowledged one by one, at once, as before.

Delivery tags of a channel are consecutive and handlers see their deliveries in that order (aiormq and
aio-pika start one task per delivery, in order). Should a delivery ever be seen out of order, the channel
falls back to one acknowledgement per delivery for good.

Every frame that settles a delivery of the channel (a run's acknowledgements, a single one, a requeue)
is written under one lock, and a run is chosen under it: aiormq's write queue is bounded, so queuing a
frame can wait, and without the lock a later run's ``multiple`` could overtake an earlier run's single
acknowledgement of a delivery it covers. RabbitMQ then refuses that acknowledgement (``PRECONDITION_FAILED
- unknown delivery tag``) and closes the channel, which ends the session (seen in the throughput
benchmark: a reconnection, and the replies not yet acknowledged delivered again).
"""

from __future__ import annotations

import asyncio

from aio_pika.abc import AbstractIncomingMessage


class CoalescedAcks:
    def __init__(self) -> None:
        #: Deliveries not yet settled, in tag order: the message once its acknowledgement is due, else None.
        self._outstanding: dict[int, AbstractIncomingMessage | None] = {}
        self._last_seen = 0
        self._in_order = True
        self._sending: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()
        #: ``basic.ack`` frames sent, and deliveries they acknowledged (tests and benchmarks read them).
        self.frames = 0
        self.acknowledged = 0

    def received(self, message: AbstractIncomingMessage) -> None:
        """A delivery reached its handler (call before the handler runs)."""
        tag = message.delivery_tag
        if tag is None:
            return
        if tag != self._last_seen + 1:
            self._in_order = False
        self._last_seen = max(self._last_seen, tag)
        self._outstanding[tag] = None

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Acknowledge ``message``, with the others due in this turn of the event loop."""
        tag = message.delivery_tag
        if not self._in_order or tag is None or tag not in self._outstanding:
            async with self._writing:
                await self._send_one(message)
            return
        self._outstanding[tag] = message
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_task(self._send_due())
        await asyncio.shield(self._sending)

    async def requeue(self, message: AbstractIncomingMessage) -> None:
        """Give ``message`` back to the queue (``basic.nack`` with requeue): it no longer holds back a run."""
        async with self._writing:
            if message.delivery_tag is not None:
                self._outstanding.pop(message.delivery_tag, None)
            await message.nack(requeue=True)

    async def _send_due(self) -> None:
        """Runs one turn after the first acknowledgement fell due: the others due by the time it holds
        the writing lock join it; the last frame's write is awaited (back-pressure, as one
        acknowledgement awaited it before)."""
        async with self._writing:
            self._sending = None
            await self._send_run()

    async def _send_run(self) -> None:
        run: list[AbstractIncomingMessage] = []
        for message in self._outstanding.values():  # in tag order
            if message is None:
                break
            run.append(message)
        alone = [m for m in list(self._outstanding.values())[len(run) :] if m is not None]
        frames = [(run[-1], len(run) > 1)] if run else []
        frames += [(message, False) for message in alone]
        for message in (*run, *alone):
            del self._outstanding[message.delivery_tag]  # type: ignore[arg-type]
        if not frames:
            return
        self.frames += len(frames)
        self.acknowledged += len(run) + len(alone)
        for message, multiple in frames[:-1]:
            await _ack(message, multiple=multiple, wait=False)  # may wait for room in the write queue
        message, multiple = frames[-1]
        await _ack(message, multiple=multiple, wait=True)

    async def _send_one(self, message: AbstractIncomingMessage) -> None:
        self.frames += 1
        self.acknowledged += 1
        await message.ack()


async def _ack(message: AbstractIncomingMessage, *, multiple: bool, wait: bool) -> None:
    assert message.delivery_tag is not None
    await message.channel.basic_ack(message.delivery_tag, multiple=multiple, wait=wait)
