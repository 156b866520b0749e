"""What a test's services and operators need from a broker, on RabbitMQ and in memory alike.

The coordinator's behaviour tests run twice, once on a real RabbitMQ and once on
:class:`coordinator.broker.memory.MemoryBroker` (FastStream's approach: one suite, two brokers). The
services and operators around the coordinator talk to either through a :class:`Peer`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from coordinator.broker.memory import MemoryBroker, MemoryConnection, MemoryDelivery, Message
from schemas.messages import SCHEMA_VERSION, AdminAnswer, AdminOperation, AdminRequest, decode, encode
from schemas.topology import SCHEMA_VERSION_HEADER, Topology


@dataclass(frozen=True)
class Received:
    body: bytes
    message_id: str | None
    correlation_id: str | None
    routing_key: str
    headers: dict[str, Any] = field(default_factory=dict)


Consumer = Callable[[Received], Awaitable[None]]


class Peer(Protocol):
    """A client connection as one broker user."""

    user: str

    async def declare_exchange(self, name: str, kind: str) -> None: ...

    async def declare_queue(
        self, name: str, arguments: dict[str, Any], *, exclusive: bool = False
    ) -> str: ...

    async def bind(self, queue: str, exchange: str, key: str) -> None: ...

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        correlation_id: str | None = None,
        kind: str | None = None,
        user_id: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        """Publish, confirmed; ``user_id`` defaults to the peer's own user."""

    async def consume(self, queue: str, consumer: Consumer) -> None:
        """Each message is acknowledged once ``consumer`` returns."""

    async def get(self, queue: str) -> Received | None: ...

    async def close(self) -> None: ...


class AmqpPeer:
    def __init__(self, connection: AbstractRobustConnection, channel: AbstractChannel, user: str) -> None:
        self._connection, self._channel, self.user = connection, channel, user

    @classmethod
    async def connect(cls, url: str) -> AmqpPeer:
        connection = await aio_pika.connect_robust(url)
        channel = await connection.channel(publisher_confirms=True)
        return cls(connection, channel, unquote(urlparse(url).username or "guest"))

    async def declare_exchange(self, name: str, kind: str) -> None:
        await self._channel.declare_exchange(name, kind, durable=True)

    async def declare_queue(self, name: str, arguments: dict[str, Any], *, exclusive: bool = False) -> str:
        queue = await self._channel.declare_queue(
            name or None, durable=not exclusive, exclusive=exclusive, arguments=arguments
        )
        return queue.name

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        found = await self._channel.get_queue(queue, ensure=False)
        await found.bind(exchange, key)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        correlation_id: str | None = None,
        kind: str | None = None,
        user_id: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            type=kind,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            user_id=user_id or self.user,
            reply_to=reply_to,
        )
        target = (
            self._channel.default_exchange if not exchange else await self._channel.get_exchange(exchange)
        )
        await target.publish(message, routing_key=routing_key, timeout=10)

    async def consume(self, queue: str, consumer: Consumer) -> None:
        found = await self._channel.get_queue(queue, ensure=False)

        async def on_message(incoming: AbstractIncomingMessage) -> None:
            await consumer(_received(incoming))
            await incoming.ack()

        await found.consume(on_message)

    async def get(self, queue: str) -> Received | None:
        found = await self._channel.get_queue(queue, ensure=False)
        message = await found.get(fail=False, no_ack=True)
        return None if message is None else _received(message)

    async def close(self) -> None:
        await self._connection.close()


def _received(message: AbstractIncomingMessage) -> Received:
    return Received(
        message.body,
        message.message_id,
        message.correlation_id,
        message.routing_key or "",
        dict(message.headers),
    )


class MemoryPeer:
    def __init__(self, broker: MemoryBroker, user: str) -> None:
        self._connection: MemoryConnection = broker.connection(user)
        self.user = user

    async def declare_exchange(self, name: str, kind: str) -> None:
        self._connection.declare_exchange(name, kind)

    async def declare_queue(self, name: str, arguments: dict[str, Any], *, exclusive: bool = False) -> str:
        return self._connection.declare_queue(name, arguments, exclusive=exclusive)

    async def bind(self, queue: str, exchange: str, key: str) -> None:
        self._connection.bind(queue, exchange, key)

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str,
        correlation_id: str | None = None,
        kind: str | None = None,
        user_id: str | None = None,
        reply_to: str | None = None,
    ) -> None:
        await asyncio.sleep(0)  # a publication is never synchronous with its delivery
        self._connection.publish(
            Message(
                body,
                exchange=exchange,
                routing_key=routing_key,
                message_id=message_id,
                correlation_id=correlation_id,
                type=kind,
                user_id=user_id or self.user,
                reply_to=reply_to,
                headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            )
        )

    async def consume(self, queue: str, consumer: Consumer) -> None:
        async def on_delivery(delivery: MemoryDelivery) -> None:
            message = delivery.message
            await consumer(
                Received(
                    message.body,
                    message.message_id,
                    message.correlation_id,
                    message.routing_key,
                    message.headers,
                )
            )
            await delivery.ack()

        self._connection.consume(queue, on_delivery, prefetch=16)

    async def get(self, queue: str) -> Received | None:
        message = self._connection.get(queue)
        if message is None:
            return None
        return Received(
            message.body, message.message_id, message.correlation_id, message.routing_key, message.headers
        )

    async def close(self) -> None:
        await self._connection.close()


class AdminPeer:
    """An operator's requests over a :class:`Peer` (what ``rc`` does with aio-pika)."""

    def __init__(self, peer: Peer, namespace: str, operator: str = "tester", timeout: float = 10) -> None:
        self.peer = peer
        self.topology = Topology(namespace)
        self.operator = operator
        self.timeout = timeout
        self._answers: dict[str, asyncio.Future[AdminAnswer]] = {}
        self._reply_queue = ""

    async def start(self) -> AdminPeer:
        self._reply_queue = await self.peer.declare_queue("", {}, exclusive=True)
        await self.peer.consume(self._reply_queue, self._on_answer)
        return self

    async def _on_answer(self, message: Received) -> None:
        answer = decode(message.body, AdminAnswer)
        future = self._answers.pop(message.correlation_id or "", None)
        if future is not None and not future.done():
            future.set_result(answer)

    async def request(self, operation: AdminOperation, *, wait: float | None = None) -> AdminAnswer:
        request = AdminRequest(
            message_id=uuid.uuid4().hex,
            sent_at=datetime.now(UTC),
            operator=self.operator,
            operation=operation,
        )
        return await self.send(request, wait=wait)

    async def send(self, request: AdminRequest, *, wait: float | None = None) -> AdminAnswer:
        """Send this very request (its message id, as the broker would deliver it again) and wait."""
        future: asyncio.Future[AdminAnswer] = asyncio.get_running_loop().create_future()
        correlation = uuid.uuid4().hex  # one per delivery, so that each answer finds its own waiter
        self._answers[correlation] = future
        await self.peer.publish(
            self.topology.admin_exchange,
            self.topology.admin_routing_key,
            encode(request),
            message_id=request.message_id,
            correlation_id=correlation,
            kind=request.kind.value,
            reply_to=self._reply_queue,
        )
        return await asyncio.wait_for(future, wait or self.timeout)

    async def close(self) -> None:
        await self.peer.close()
