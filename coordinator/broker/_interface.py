"""What the coordinator needs from a message broker, whatever implements it.

A :class:`Broker` opens a :class:`Session`: one connection, held while this coordinator leads. If the
session is lost, the coordinator opens a new one and replays its outbox from the store, so nothing is
assumed sent unless the broker confirmed it. Handlers see a neutral :class:`Delivery`, never a client
library's types.

Two implementations: :class:`coordinator.broker.rabbitmq.RabbitBroker` (aio-pika) and
:class:`coordinator.broker.memory.MemoryBroker` (in memory, with RabbitMQ's semantics where the
coordinator relies on them: redelivery of what a dead consumer held, dead-lettering with headers, the
``user_id`` check, single active consumers, the leader's exclusive queue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from schemas.documents import OutboxEntry


class NotLeader(Exception):
    """Another coordinator replica holds the leader lock."""


class BrokerUnreachable(Exception):
    """No connection could be made (the text says to where, without credentials)."""


class Unroutable(Exception):
    """A command no queue took (nobody consumes where it was addressed)."""


class QueueUnusable(Exception):
    """A service's queue cannot be declared as the topology says (it exists with other arguments, say);
    the text says why and what to do. The session is unharmed."""


class Delivery(Protocol):
    """One message taken from a queue, to be settled exactly once."""

    @property
    def body(self) -> bytes: ...

    @property
    def routing_key(self) -> str: ...

    @property
    def message_id(self) -> str | None: ...

    @property
    def correlation_id(self) -> str | None: ...

    @property
    def user_id(self) -> str | None:
        """The sender's broker user, vouched for by the broker (it refuses any other)."""

    @property
    def reply_to(self) -> str | None: ...

    @property
    def redelivered(self) -> bool: ...

    async def ack(self) -> None:
        """Done with: the broker forgets it."""

    async def requeue(self) -> None:
        """Not done with: the broker delivers it again (to this or another consumer)."""

    async def dead_letter(self, reason: str) -> None:
        """Refused: a copy goes to the dead-letter exchange with ``reason`` in its headers; then acked."""


Handler = Callable[[Delivery], Awaitable[None]]


class Session(Protocol):
    """One connection to the broker, held while this coordinator leads."""

    async def acquire_leadership(self) -> None:
        """Take the leader lock (an exclusive queue), or raise :class:`NotLeader`."""

    async def declare_topology(self) -> None:
        """Every exchange, and the queues the coordinator owns."""

    async def declare_task_queue(self, service: str) -> None:
        """Make commands to ``service`` routable even before the service first starts. Others can touch
        that queue, so it is declared where a failure harms nothing: :class:`QueueUnusable` says why."""

    async def consumer_counts(self, services: Sequence[str]) -> dict[str, int | None]:
        """Consumers on each service's queue (None if the queue does not exist)."""

    async def consume(self, queue: str, handler: Handler) -> None: ...

    async def publish(self, entry: OutboxEntry, release_id: str, *, routing_key: str | None = None) -> None:
        """Publish one outbox entry (to ``routing_key`` instead of its own, if given) and wait for the
        broker's confirmation; raise if it is not confirmed, :class:`Unroutable` if no queue took a
        command."""

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes, message_id: str) -> None:
        """An operator's answer, to the reply queue the request named."""

    async def closed(self) -> None:
        """Return once the connection is lost or closed."""

    async def close(self) -> None: ...


class Broker(Protocol):
    """Opens sessions."""

    #: Where it is, fit to log (no password).
    location: str

    async def connect(self, name: str) -> Session:
        """A new session, its connection named ``name``; :class:`BrokerUnreachable` if none can be made."""


#: Headers a message carries; values are what AMQP field tables hold.
Headers = Mapping[str, Any]
