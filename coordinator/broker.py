"""The RabbitMQ adapter of the coordinator (aio-pika).

One plain (non-robust) connection per *active session*: if it drops, the session ends and the
coordinator starts a new one, replaying its outbox from the store. That keeps reconnection
simple and correct: nothing is assumed to have been sent unless the broker confirmed it.

Leadership: the active coordinator holds an exclusive queue ``<ns>.coordinator.leader``. Only
one connection can hold it; the broker deletes it the moment that connection dies, and a
standby replica that keeps trying to declare it takes over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aiormq.exceptions import ChannelLockedResource, ChannelNotFoundEntity

from schemas.broker_url import broker_user
from schemas.documents import OutboxEntry
from schemas.enums import MessageKind
from schemas.messages import SCHEMA_VERSION
from schemas.topology import DEAD_REASON_HEADER, SCHEMA_VERSION_HEADER, Topology

Handler = Callable[[AbstractIncomingMessage], Awaitable[None]]


class NotLeader(Exception):
    """Another coordinator replica holds the leader lock."""


class Broker:
    def __init__(
        self, url: str, topology: Topology, *, publish_timeout: float, prefetch: int, name: str
    ) -> None:
        self.url = url
        self.topology = topology
        self.publish_timeout = publish_timeout
        self.prefetch = prefetch
        self.name = name
        self.user = broker_user(url)
        self._connection: AbstractConnection | None = None
        self._publish_channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        self._connection = await aio_pika.connect(
            self.url, client_properties={"connection_name": self.name}, timeout=10
        )
        self._publish_channel = await self._connection.channel(publisher_confirms=True)

    @property
    def connection(self) -> AbstractConnection:
        if self._connection is None:
            raise RuntimeError("not connected")
        return self._connection

    async def closed(self) -> None:
        """Wait until the connection is lost or closed."""
        connection = self.connection
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        connection.close_callbacks.add(on_close)
        if connection.is_closed:
            return
        await lost

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()
        self._connection = None

    async def acquire_leadership(self) -> AbstractChannel:
        """Declare the exclusive leader queue, or raise NotLeader if another replica holds it."""
        channel = await self.connection.channel()
        try:
            await channel.declare_queue(f"{self.topology.namespace}.coordinator.leader", exclusive=True)
        except ChannelLockedResource as error:
            raise NotLeader(str(error)) from None
        return channel

    # ------------------------------------------------------------------ topology

    async def declare_topology(self) -> None:
        channel = self._channel()
        t = self.topology
        for name, kind in t.exchanges().items():
            self._exchanges[name] = await channel.declare_exchange(name, kind, durable=True)
        for name, (arguments, exchange, key) in t.coordinator_queues().items():
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            await queue.bind(exchange, routing_key=key)

    async def declare_task_queue(self, service: str) -> None:
        """Make commands to ``service`` routable even before the service first starts."""
        t = self.topology
        queue = await self._channel().declare_queue(
            t.task_queue(service), durable=True, arguments=t.task_queue_arguments()
        )
        await queue.bind(t.commands_exchange, routing_key=t.task_binding(service))

    async def consumer_counts(self, services: Sequence[str]) -> dict[str, int | None]:
        """Consumers on each service's queue (None if the queue does not exist), over one channel."""
        counts: dict[str, int | None] = {}
        channel = await self.connection.channel()
        try:
            for service in services:
                if channel.is_closed:  # a missing queue closes the channel
                    channel = await self.connection.channel()
                try:
                    queue = await channel.declare_queue(self.topology.task_queue(service), passive=True)
                except ChannelNotFoundEntity:
                    counts[service] = None
                    continue
                counts[service] = int(queue.declaration_result.consumer_count or 0)
        finally:
            if not channel.is_closed:
                await channel.close()
        return counts

    async def consume(self, queue_name: str, handler: Handler) -> AbstractQueue:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.get_queue(queue_name, ensure=False)
        await queue.consume(handler, consumer_tag=f"{self.name}:{queue_name}")
        return queue

    # ------------------------------------------------------------------ publishing

    async def publish_entry(self, entry: OutboxEntry, release_id: str) -> None:
        exchange = {
            "commands": self.topology.commands_exchange,
            "events": self.topology.events_exchange,
        }[entry.exchange]
        message = self._message(entry.body.encode(), entry.message_id, entry.kind, correlation_id=release_id)
        await self._exchanges[exchange].publish(
            message,
            routing_key=entry.routing_key,
            mandatory=entry.exchange == "commands",
            timeout=self.publish_timeout,
        )

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes, message_id: str) -> None:
        message = self._message(body, message_id, MessageKind.ADMIN_ANSWER, correlation_id=correlation_id)
        message.delivery_mode = aio_pika.DeliveryMode.NOT_PERSISTENT
        await self._channel().default_exchange.publish(
            message, routing_key=reply_to, mandatory=False, timeout=self.publish_timeout
        )

    async def dead_letter(self, incoming: AbstractIncomingMessage, reason: str) -> None:
        """Copy a refused message to ``rc.dlx`` with the reason in its headers (then the caller acks)."""
        headers: dict[str, Any] = dict(incoming.headers or {})
        headers[DEAD_REASON_HEADER] = reason[:1000]
        headers["x-rc-original-exchange"] = incoming.exchange or ""
        headers["x-rc-original-routing-key"] = incoming.routing_key or ""
        if incoming.user_id:
            headers["x-rc-original-user-id"] = incoming.user_id
        copy = aio_pika.Message(
            incoming.body,
            headers=headers,
            content_type=incoming.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=incoming.message_id,
            correlation_id=incoming.correlation_id,
            type=incoming.type,
        )
        await self._exchanges[self.topology.dead_letter_exchange].publish(
            copy, routing_key=incoming.routing_key or "", timeout=self.publish_timeout
        )

    def _message(
        self, body: bytes, message_id: str, kind: MessageKind, *, correlation_id: str | None
    ) -> aio_pika.Message:
        return aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
            correlation_id=correlation_id,
            type=kind.value,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            user_id=self.user,
            app_id="rc-coordinator",
        )

    def _channel(self) -> AbstractChannel:
        if self._publish_channel is None:
            raise RuntimeError("not connected")
        return self._publish_channel
