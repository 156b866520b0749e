"""The seam between the runner and a message broker.

The runner (``_runner.py``) knows commands, replies and outcomes; a :class:`Transport` knows how to
check the service's queue, consume it, and publish replies. Two implementations:
``_amqp.AmqpTransport`` (RabbitMQ via aio-pika) and ``_memory.InMemoryTransport`` (tests, harness).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from schemas.messages import BUSY_DETAIL, Heartbeat, Progress, TaskReply

#: What a task service sends: all go to the replies exchange, routed by their kind.
Outgoing = TaskReply | Progress | Heartbeat


class Delivery(Protocol):
    """One command as delivered by the broker, to be settled exactly once."""

    @property
    def body(self) -> bytes: ...

    @property
    def user_id(self) -> str | None:
        """The broker user that published it (RabbitMQ refuses a ``user_id`` that is not the sender's)."""
        ...

    @property
    def message_id(self) -> str | None: ...

    async def ack(self) -> None:
        """The command is done with (or safely taken on): the broker may forget it."""
        ...

    async def dead_letter(self) -> None:
        """The command is invalid: reject it without requeue (the queue dead-letters it)."""
        ...


DeliveryHandler = Callable[[Delivery], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Health:
    """Whether the transport is consuming the service's queue, and if not, why."""

    consuming: bool
    detail: str | None = None


#: An instance whose every process slot is busy: healthy, though it consumes nothing until one frees.
BUSY = Health(True, f"{BUSY_DETAIL}: new commands wait in the queue for a free one")


class PublishFailed(Exception):
    """The broker did not confirm a publication (connection lost, nack, unroutable, timeout)."""


class Transport(Protocol):
    """What the runner needs from a broker."""

    async def open(self, service: str, consumer_tag: str, on_delivery: DeliveryHandler) -> None:
        """Check the topology and the service's queue (declared only if missing and allowed), then consume."""
        ...

    async def open_control(self, service: str, instance_id: str, on_delivery: DeliveryHandler) -> None:
        """Declare and consume this instance's own queue, for the commands addressed to it alone (a
        cancel of the release it processes); it goes away with the instance."""
        ...

    async def set_work_window(self, free_slots: int, taken: Delivery | None = None) -> None:
        """Take at most ``free_slots`` unacknowledged commands from the service's queue; 0 stops taking
        them until a slot frees (another instance takes them). ``taken`` is the ``start`` that has just
        taken a slot and is not acknowledged yet: the window closes behind it before its ack."""
        ...

    async def stop_consuming(self) -> None:
        """Stop taking new commands; deliveries already received may still be settled."""
        ...

    async def publish(self, message: Outgoing) -> None:
        """Publish and wait for the broker's confirmation; raise :class:`PublishFailed` if not confirmed."""
        ...

    async def wait_ready(self) -> None:
        """Return once a publication is worth retrying (e.g. after a reconnection)."""
        ...

    def health(self) -> Health: ...

    async def recover(self) -> None:
        """Try to consume again after :meth:`health` reported the consumer gone."""
        ...

    async def close(self) -> None: ...
