"""The consumers of the service's queue: one per free process slot, each with a prefetch of 1.

Why one consumer per slot rather than one consumer whose prefetch follows the free slots: RabbitMQ
applies a new prefetch only to consumers created after it, so narrowing that one consumer meant cancelling
it and consuming again, and the new consumer's prefetch counted none of the deliveries the old one had
handed over and that were not settled yet. Two ``start`` commands arriving together at an instance with two
free slots then let a third in (the first narrowed the window to one free slot and consumed again while
the second was still unacknowledged), and the third waited on this busy instance while another was idle.

With one consumer per free slot and a prefetch of 1, a consumer holds at most one unsettled delivery, and
while it holds one the broker sends it nothing more. A ``start`` that takes a slot cancels the consumer
that delivered it *before* it is acknowledged: that consumer has nothing in flight (its one delivery is
this ``start``), so nothing more reaches the instance for that slot, and the acknowledgement gives the
broker no new room. A slot that frees opens a consumer under a new tag (RabbitMQ up to 3.10.8 crashes the
channel when a quorum queue consumer comes back under the tag of one cancelled with deliveries in flight,
rabbitmq-server issue 5927). An ``initialize``, ``publish`` or ``cancel`` takes no slot: its consumer
receives nothing else until it is settled, and then goes on.

So the instance never holds more unsettled commands of the shared queue than it has free slots, whatever
arrives together, and a ``start`` never waits on it for a slot while another instance may be idle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustChannel, AbstractRobustQueue

from task_sdk._amqp_probes import consumer_registered

log = structlog.get_logger("task_sdk")

Deliver = Callable[[AbstractIncomingMessage], Awaitable[None]]


class WorkConsumers:
    """The consumers of one instance on the service's queue, as many as its free process slots."""

    def __init__(self, channel: AbstractRobustChannel, queue: AbstractRobustQueue, tag: str) -> None:
        self._channel = channel
        self._queue = queue
        self._tag = tag
        #: The tags of the consumers open now, oldest first.
        self.tags: list[str] = []
        #: The free process slots, as the runner last said.
        self.wanted = 0
        self.consuming = False
        self._opened = 0  # consumers opened so far: each gets a tag of its own
        self._deliver: Deliver | None = None
        self._lock = asyncio.Lock()

    async def open(self, free_slots: int, deliver: Deliver) -> None:
        """One consumer per free slot, each taking one command at a time (raises if refused)."""
        self._deliver = deliver
        await self._channel.set_qos(prefetch_count=1)
        self.wanted, self.consuming = free_slots, True
        async with self._lock:
            while len(self.tags) < self.wanted:
                self.tags.append(await self._consume())

    async def follow(self, free_slots: int, taken_by: str | None) -> None:
        """Consume for ``free_slots`` slots; ``taken_by`` is the consumer whose ``start`` just took a slot
        and is not acknowledged yet: the one to cancel."""
        async with self._lock:
            self.wanted = free_slots
            await self._apply(taken_by)

    async def reapply(self) -> None:
        """Open the consumers missing (a change while the connection was down, or a failure)."""
        async with self._lock:
            await self._apply(None)

    async def _apply(self, taken_by: str | None) -> None:
        """Never raises: a closed channel takes its consumers with it, the heartbeat's health check sees
        it, and :meth:`reapply` is tried again.

        With more consumers than free slots and no ``start`` to blame, none is cancelled: the extra
        ones each hold a ``start`` that took its slot and whose own call comes next (a consumer with
        nothing in flight could still be handed a command while it is being cancelled)."""
        if not self.consuming:
            return
        try:
            if taken_by in self.tags and len(self.tags) > self.wanted:
                self.tags.remove(taken_by)
                await self._queue.cancel(taken_by)  # nothing more comes to it once this returns
            while len(self.tags) < self.wanted:
                self.tags.append(await self._consume())
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            log.warning("work_window.not_applied", wanted=self.wanted, open=len(self.tags), error=reason)

    async def _consume(self) -> str:
        assert self._deliver is not None
        self._opened += 1
        return await self._queue.consume(self._deliver, consumer_tag=f"{self._tag}.{self._opened}")

    async def stop(self) -> None:
        """Consume no more (deliveries already received may still be settled)."""
        async with self._lock:
            self.consuming = False
            tags, self.tags = self.tags, []
            for tag in tags:
                await self._queue.cancel(tag)

    def registered(self) -> bool:
        """Whether the open channel still has a consumer of ours (the broker may cancel them; aio-pika
        consumes again under their tags, one after the other, so for a moment only some are back)."""
        return any(consumer_registered(self._channel, tag) for tag in self.tags)
