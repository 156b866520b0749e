"""A broker in memory, with RabbitMQ's semantics where the coordinator relies on them.

It keeps exchanges (direct, topic, fanout, and the default exchange), queues and bindings as RabbitMQ
does, and behaves like it where a guarantee depends on it:

* a message whose ``user_id`` is not its connection's user is refused (``PublishRefused``);
* a ``mandatory`` message that no queue takes is refused (``Unroutable``);
* a queue with a single active consumer delivers to its first consumer only;
* what a consumer held unacknowledged goes back to its queue, marked redelivered, when its connection
  closes; past the queue's delivery limit it is dead-lettered instead;
* an exclusive queue belongs to one connection and disappears with it (the leader lock);
* a dead letter is a copy to the dead-letter exchange with the reason in its headers.

Confirmations are immediate; :attr:`MemoryBroker.refuse_publication` makes chosen publications fail, as
an unconfirmed one would. Tests use :meth:`MemoryBroker.connect` for the coordinator and
:meth:`MemoryBroker.connection` for the services and operators around it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from coordinator.broker._interface import Unroutable
from schemas.topology import DEAD_REASON_HEADER, Topology

if TYPE_CHECKING:
    from coordinator.broker._memory_session import MemorySession


class BrokerError(Exception):
    """What RabbitMQ would answer with a channel error."""


class PublishRefused(BrokerError):
    pass


@dataclass
class Message:
    body: bytes
    exchange: str = ""
    routing_key: str = ""
    message_id: str | None = None
    correlation_id: str | None = None
    user_id: str | None = None
    reply_to: str | None = None
    type: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    deliveries: int = 0


@dataclass
class _Consumer:
    connection: MemoryConnection
    handler: Callable[[MemoryDelivery], Awaitable[None]]
    prefetch: int
    unacked: int = 0


@dataclass
class _Queue:
    name: str
    arguments: dict[str, Any]
    owner: MemoryConnection | None = None
    messages: deque[Message] = field(default_factory=deque)
    consumers: list[_Consumer] = field(default_factory=list)

    @property
    def single_active(self) -> bool:
        return bool(self.arguments.get("x-single-active-consumer"))


class MemoryBroker:
    """The broker's state, shared by every connection made to it."""

    def __init__(self, topology: Topology, *, user: str = "rc-coordinator", prefetch: int = 512) -> None:
        self.topology = topology
        self.location = "memory"
        self.user = user
        self.prefetch = prefetch
        self.exchanges: dict[str, str] = {"": "direct"}
        self.queues: dict[str, _Queue] = {}
        self.bindings: list[tuple[str, str, str]] = []  # (exchange, queue, key)
        self.connections: list[MemoryConnection] = []
        #: Publications for which this returns True are refused, as an unconfirmed one would be.
        self.refuse_publication: Callable[[Message], bool] = lambda message: False
        self._names = itertools.count(1)

    async def connect(self, name: str) -> MemorySession:
        """A coordinator session (the :class:`coordinator.broker.Broker` interface), as :attr:`user`."""
        from coordinator.broker._memory_session import MemorySession

        return MemorySession(self.connection(self.user, name), self)

    def connection(self, user: str, name: str = "") -> MemoryConnection:
        connection = MemoryConnection(self, user, name or f"{user}-{next(self._names)}")
        self.connections.append(connection)
        return connection

    async def restart(self) -> None:
        """What a broker restart does to clients: every connection closes (durable queues keep messages)."""
        for connection in list(self.connections):
            await connection.close()

    # ------------------------------------------------------------------ routing

    def route(self, message: Message) -> list[_Queue]:
        if message.exchange == "":
            queue = self.queues.get(message.routing_key)
            return [queue] if queue else []
        kind = self.exchanges.get(message.exchange)
        if kind is None:
            raise BrokerError(f"NOT_FOUND - no exchange '{message.exchange}'")
        names = [
            queue
            for exchange, queue, key in self.bindings
            if exchange == message.exchange and _matches(kind, key, message.routing_key)
        ]
        return [self.queues[name] for name in dict.fromkeys(names) if name in self.queues]

    def enqueue(self, queue: _Queue, message: Message) -> None:
        queue.messages.append(message)
        self.dispatch(queue)

    def dispatch(self, queue: _Queue) -> None:
        """Hand waiting messages to consumers with room under their prefetch."""
        consumers = queue.consumers[:1] if queue.single_active else queue.consumers
        for consumer in itertools.cycle(consumers) if consumers else ():
            if not queue.messages or all(c.unacked >= c.prefetch for c in consumers):
                return
            if consumer.unacked >= consumer.prefetch:
                continue
            message = queue.messages.popleft()
            message.deliveries += 1
            consumer.unacked += 1
            delivery = MemoryDelivery(message, queue, consumer, self)
            consumer.connection.handed(delivery)
            task: asyncio.Future[None] = asyncio.ensure_future(consumer.handler(delivery))
            consumer.connection.tasks.add(task)
            task.add_done_callback(consumer.connection.tasks.discard)

    def give_back(self, delivery: MemoryDelivery) -> None:
        """An unacknowledged delivery returns to its queue (or, past the delivery limit, is dead-lettered)."""
        message, queue = delivery.message, delivery.queue
        limit = queue.arguments.get("x-delivery-limit")
        if limit is not None and message.deliveries > int(limit):
            self.dead_letter(message, queue, "delivery limit exceeded")
            return
        message.redelivered = True
        queue.messages.appendleft(message)

    def dead_letter(self, message: Message, queue: _Queue, reason: str) -> None:
        """``queue`` drops ``message``: a copy goes to the queue's dead-letter exchange, if it has one."""
        exchange = queue.arguments.get("x-dead-letter-exchange")
        if exchange:
            self.send_dead_copy(message, exchange, {**message.headers, "x-death-reason": reason})

    def send_dead_copy(self, message: Message, exchange: str, headers: dict[str, Any]) -> None:
        """Route a copy of ``message`` (its body, routing key, ids and type) with ``headers`` from the
        dead-letter exchange ``exchange``."""
        copy = Message(
            message.body,
            exchange=exchange,
            routing_key=message.routing_key,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            type=message.type,
            headers=headers,
        )
        for target in self.route(copy):
            self.enqueue(target, copy)


def _matches(kind: str, pattern: str, key: str) -> bool:
    if kind == "fanout":
        return True
    if kind == "direct":
        return pattern == key
    return _topic(pattern.split("."), key.split("."))


def _topic(pattern: Sequence[str], words: Sequence[str]) -> bool:
    if not pattern:
        return not words
    if pattern[0] == "#":
        return any(_topic(pattern[1:], words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (pattern[0] in ("*", words[0])) and _topic(pattern[1:], words[1:])


@dataclass(eq=False)
class MemoryDelivery:
    """A message handed to a consumer (the :class:`coordinator.broker.Delivery` interface)."""

    message: Message
    queue: _Queue
    consumer: _Consumer
    broker: MemoryBroker
    settled: bool = False

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def routing_key(self) -> str:
        return self.message.routing_key

    @property
    def message_id(self) -> str | None:
        return self.message.message_id

    @property
    def correlation_id(self) -> str | None:
        return self.message.correlation_id

    @property
    def user_id(self) -> str | None:
        return self.message.user_id

    @property
    def reply_to(self) -> str | None:
        return self.message.reply_to

    @property
    def headers(self) -> dict[str, Any]:
        return self.message.headers

    @property
    def redelivered(self) -> bool:
        return self.message.redelivered

    async def ack(self) -> None:
        self._settle()

    async def requeue(self) -> None:
        self._settle()
        self.broker.give_back(self)
        self.broker.dispatch(self.queue)

    async def dead_letter(self, reason: str) -> None:
        message = self.message
        headers = {
            **message.headers,
            DEAD_REASON_HEADER: reason[:1000],
            "x-rc-original-exchange": message.exchange,
            "x-rc-original-routing-key": message.routing_key,
        }
        if message.user_id:
            headers["x-rc-original-user-id"] = message.user_id
        self.broker.send_dead_copy(message, self.broker.topology.dead_letter_exchange, headers)
        self._settle()

    def _settle(self) -> None:
        if self.settled:
            raise BrokerError("PRECONDITION_FAILED - unknown delivery tag (settled twice)")
        self.settled = True
        self.consumer.unacked -= 1
        self.consumer.connection.held.pop(self, None)
        self.broker.dispatch(self.queue)


class MemoryConnection:
    """One client connection as broker user ``user``: declares, publishes (signed), consumes."""

    def __init__(self, broker: MemoryBroker, user: str, name: str) -> None:
        self.broker = broker
        self.user = user
        self.name = name
        self.open = True
        #: Deliveries handed and not yet settled, in the order they were handed.
        self.held: dict[MemoryDelivery, None] = {}
        self.tasks: set[asyncio.Future[None]] = set()
        self.lost = asyncio.Event()

    def handed(self, delivery: MemoryDelivery) -> None:
        self.held[delivery] = None

    def declare_exchange(self, name: str, kind: str) -> None:
        existing = self.broker.exchanges.setdefault(name, kind)
        if existing != kind:
            raise BrokerError(f"PRECONDITION_FAILED - exchange '{name}' is a {existing} exchange")

    def declare_queue(
        self, name: str = "", arguments: dict[str, Any] | None = None, *, exclusive: bool = False
    ) -> str:
        name = name or f"amq.gen-{next(self.broker._names)}"
        queue = self.broker.queues.get(name)
        if queue is None:
            self.broker.queues[name] = _Queue(name, dict(arguments or {}), owner=self if exclusive else None)
            return name
        if queue.owner is not None and queue.owner is not self:
            raise BrokerError(f"RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '{name}'")
        if queue.arguments != dict(arguments or {}):
            raise BrokerError(f"PRECONDITION_FAILED - inequivalent arguments for queue '{name}'")
        return name

    def bind(self, queue: str, exchange: str, key: str) -> None:
        if (exchange, queue, key) not in self.broker.bindings:
            self.broker.bindings.append((exchange, queue, key))

    def consumer_count(self, queue: str) -> int | None:
        found = self.broker.queues.get(queue)
        return None if found is None else len(found.consumers)

    def publish(self, message: Message, *, mandatory: bool = False) -> None:
        if not self.open:
            raise BrokerError("the connection is closed")
        if message.user_id is not None and message.user_id != self.user:
            raise PublishRefused(
                f"PRECONDITION_FAILED - user_id property set to '{message.user_id}' but "
                f"authenticated user was '{self.user}'"
            )
        if self.broker.refuse_publication(message):
            raise BrokerError("publication not confirmed (refused on purpose)")
        targets = self.broker.route(message)
        if mandatory and not targets:
            raise Unroutable(f"NO_ROUTE - {message.exchange} {message.routing_key}")
        for queue in targets:
            self.broker.enqueue(queue, Message(**{**message.__dict__, "headers": dict(message.headers)}))

    def consume(
        self, queue: str, handler: Callable[[MemoryDelivery], Awaitable[None]], prefetch: int
    ) -> None:
        found = self.broker.queues.get(queue)
        if found is None:
            raise BrokerError(f"NOT_FOUND - no queue '{queue}'")
        found.consumers.append(_Consumer(self, handler, prefetch))
        self.broker.dispatch(found)

    def get(self, queue: str) -> Message | None:
        """Take one waiting message (``basic.get`` with auto-ack)."""
        found = self.broker.queues.get(queue)
        return found.messages.popleft() if found and found.messages else None

    async def close(self) -> None:
        if not self.open:
            return
        self.open = False
        broker = self.broker
        for queue in list(broker.queues.values()):
            queue.consumers = [c for c in queue.consumers if c.connection is not self]
            if queue.owner is self:
                del broker.queues[queue.name]
        for delivery in reversed(list(self.held)):  # back at the head of the queue, in their order
            delivery.settled = True
            broker.give_back(delivery)
        self.held.clear()  # handlers still running find their deliveries settled: their acks fail
        if self in broker.connections:
            broker.connections.remove(self)
        for queue in list(broker.queues.values()):
            broker.dispatch(queue)
        self.lost.set()
