"""An in-memory :class:`~task_sdk._transport.Transport`: no broker, same runner.

The test side of it plays the broker and the coordinator: :meth:`InMemoryTransport.deliver`
hands a command to the runner, :attr:`published` receives every reply, progress and heartbeat,
and :attr:`dead_letters` every command the runner refused. Deliveries are signed by the broker user
given to :meth:`InMemoryTransport.deliver` (the coordinator's, ``rc-coordinator``, unless told otherwise).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from task_sdk._settings import DEFAULT_COORDINATOR_USER
from task_sdk._transport import Delivery, DeliveryHandler, Health, Outgoing, PublishFailed


class Settlement(StrEnum):
    PENDING = "pending"
    ACKED = "acked"
    DEAD_LETTERED = "dead_lettered"


@dataclass(eq=False)
class MemoryDelivery:
    body: bytes
    redelivered: bool = False
    user_id: str | None = DEFAULT_COORDINATOR_USER
    message_id: str | None = None
    settlement: Settlement = Settlement.PENDING
    dead_letters: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)

    async def ack(self) -> None:
        self._settle(Settlement.ACKED)

    async def dead_letter(self) -> None:
        self._settle(Settlement.DEAD_LETTERED)
        self.dead_letters.put_nowait(self.body)

    def _settle(self, settlement: Settlement) -> None:
        if self.settlement is not Settlement.PENDING:
            raise RuntimeError(f"delivery settled twice ({self.settlement} then {settlement})")
        self.settlement = settlement


class InMemoryTransport:
    """A transport whose broker is a few lists; ``fail_publications`` simulates an outage."""

    def __init__(self) -> None:
        self.published: asyncio.Queue[Outgoing] = asyncio.Queue()
        self.dead_letters: asyncio.Queue[bytes] = asyncio.Queue()
        self.deliveries: list[MemoryDelivery] = []
        #: The next N publications fail with PublishFailed (then succeed).
        self.fail_publications = 0
        #: Every work window the runner asked for, in order (its free process slots).
        self.windows: list[int] = []
        self._on_delivery: DeliveryHandler | None = None
        self._on_control: DeliveryHandler | None = None
        self._waiting: list[MemoryDelivery] = []
        self._consuming = False
        self._window = 1

    # ------------------------------------------------------------------ the runner's side
    async def open(self, service: str, consumer_tag: str, on_delivery: DeliveryHandler) -> None:
        self._on_delivery = on_delivery
        self._consuming = True
        waiting, self._waiting = self._waiting, []
        for delivery in waiting:
            await on_delivery(delivery)

    async def open_control(self, service: str, instance_id: str, on_delivery: DeliveryHandler) -> None:
        self._on_control = on_delivery

    async def set_work_window(self, free_slots: int, taken: Delivery | None = None) -> None:
        self.windows.append(free_slots)
        self._window = free_slots
        waiting, self._waiting = self._waiting, []
        for delivery in waiting:
            await self._hand_over(delivery)

    async def stop_consuming(self) -> None:
        self._consuming = False

    async def publish(self, message: Outgoing) -> None:
        if self.fail_publications > 0:
            self.fail_publications -= 1
            raise PublishFailed("simulated broker outage")
        self.published.put_nowait(message)

    async def wait_ready(self) -> None:
        return None

    def health(self) -> Health:
        return Health(True) if self._consuming else Health(False, "not consuming")

    async def recover(self) -> None:
        return None

    async def close(self) -> None:
        self._consuming = False

    # ------------------------------------------------------------------ the test's side
    async def deliver(
        self,
        body: bytes,
        *,
        redelivered: bool = False,
        user_id: str | None = DEFAULT_COORDINATOR_USER,
        message_id: str | None = None,
    ) -> MemoryDelivery:
        """Hand ``body``, published by broker user ``user_id``, to the runner as the broker would (queued
        while nobody consumes)."""
        delivery = MemoryDelivery(body, redelivered, user_id, message_id, dead_letters=self.dead_letters)
        self.deliveries.append(delivery)
        await self._hand_over(delivery)
        return delivery

    async def deliver_control(
        self, body: bytes, *, user_id: str | None = DEFAULT_COORDINATOR_USER
    ) -> MemoryDelivery:
        """Hand ``body`` to the runner through its own control queue (a cancel addressed to it)."""
        assert self._on_control is not None, "the runner has not opened its control queue"
        delivery = MemoryDelivery(body, user_id=user_id, dead_letters=self.dead_letters)
        self.deliveries.append(delivery)
        await self._on_control(delivery)
        return delivery

    async def _hand_over(self, delivery: MemoryDelivery) -> None:
        if self._consuming and self._window > 0 and self._on_delivery is not None:
            await self._on_delivery(delivery)
        else:
            self._waiting.append(delivery)
