"""The process slots of one instance (``RC_TASK_CONCURRENCY``), and the work window that follows them.

A ``start`` takes a slot before it is acknowledged, and the instance's work window on the service's
queue is then narrowed to the slots still free (no consumer at all once every slot is busy) *before* the
acknowledgement, closing behind that very ``start`` (:mod:`task_sdk._amqp_work`): the broker never hands
this instance more commands than it has free slots, even when several arrive together, so a busy instance
leaves new work on the queue for an idle one. The ``start`` is still acknowledged as soon as it is taken
on, so a long ``process()`` never holds a delivery past RabbitMQ's consumer timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from task_sdk._transport import Delivery


class WorkSlots:
    def __init__(self, capacity: int, set_window: Callable[[int, Delivery | None], Awaitable[None]]) -> None:
        self.capacity = capacity
        self.busy = 0
        self._set_window = set_window
        self._freed = asyncio.Event()
        self._window_lock = asyncio.Lock()

    @property
    def free(self) -> int:
        return self.capacity - self.busy

    async def take(self, delivery: Delivery) -> None:
        """Take a slot for the ``start`` in ``delivery`` (waiting for one only if a start came while the
        window was closing), then narrow the window to the slots left, behind it."""
        while self.busy >= self.capacity:
            self._freed.clear()
            await self._freed.wait()
        self.busy += 1
        await self.follow(delivery)

    def give_back(self) -> None:
        """A ``process`` ended: its slot is free (call :meth:`follow` to widen the window)."""
        self.busy -= 1
        self._freed.set()

    async def follow(self, taken: Delivery | None = None) -> None:
        """Make the work window the free slots, as they are when this call's turn comes."""
        async with self._window_lock:
            await self._set_window(self.free, taken)
