"""The RabbitMQ broker of the coordinator (aio-pika; publications and deliveries straight on its aiormq
channels).

One plain (non-robust) connection per session: if it drops, the session ends and the coordinator starts
a new one, replaying its outbox from the store. That keeps reconnection simple and correct: nothing is
assumed to have been sent unless the broker confirmed it.

Leadership: the active coordinator holds an exclusive queue ``<ns>.coordinator.leader``. Only one
connection can hold it; the broker deletes it the moment that connection dies, and a standby replica
that keeps trying to declare it takes over.

Several broker nodes (``RC_AMQP_URL`` listing a cluster's nodes): a session connects to the first node
of the broker's :class:`~schemas.broker_url.Rotation` that answers; when its connection is lost, the next
session starts with the next node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import (
    AMQPConnectionError,
    ChannelAccessRefused,
    ChannelLockedResource,
    ChannelNotFoundEntity,
    ChannelPreconditionFailed,
)
from pamqp.commands import Basic

from coordinator.broker._acks import CoalescedAcks
from coordinator.broker._channel import Nacked, send_confirmed, underlay_of
from coordinator.broker._interface import BrokerUnreachable, Handler, NotLeader, QueueUnusable
from schemas.broker_url import Rotation, broker_user, mask_url, split_urls
from schemas.documents import OutboxEntry
from schemas.enums import MessageKind
from schemas.messages import SCHEMA_VERSION
from schemas.topology import DEAD_REASON_HEADER, SCHEMA_VERSION_HEADER, Topology

log = structlog.get_logger("coordinator")
#: Channels the health check at initialization asks queues' consumer counts on, at once.
COUNTING_CHANNELS = 16


class RabbitBroker:
    def __init__(self, url: str, topology: Topology, *, publish_timeout: float, prefetch: int) -> None:
        self.url = url
        self.location = mask_url(url)
        #: The nodes (one URL, or several comma-separated), the one to try first in front; kept across
        #: sessions, so that a session after a lost connection starts with the next node.
        self.rotation = Rotation(split_urls(url))
        self.topology = topology
        self.publish_timeout = publish_timeout
        self.prefetch = prefetch

    async def connect(self, name: str) -> RabbitSession:
        connection, node = await self._connect_first(name)
        session = RabbitSession(self, connection, name, node)
        try:
            await session.open()
        except BaseException:
            await session.close()
            raise
        return session

    async def _connect_first(self, name: str) -> tuple[AbstractConnection, str]:
        """A connection to the first node of the rotation that answers, and its URL; else BrokerUnreachable
        with the last node's error."""
        several = len(self.rotation.urls) > 1
        failure: BrokerUnreachable | None = None
        for url in self.rotation.order():
            try:
                connection = await aio_pika.connect(
                    url, client_properties={"connection_name": name}, timeout=10
                )
            except (TimeoutError, OSError, ConnectionError, AMQPConnectionError) as error:
                if several:
                    log.warning("broker node unreachable", url=mask_url(url), error=str(error))
                self.rotation.lost(url)
                failure = BrokerUnreachable(f"{mask_url(url)}: {error!r}")
                failure.__cause__ = error
                continue
            if self.rotation.connected(url) and several:
                log.info("broker node", url=mask_url(url))
            return connection, url
        assert failure is not None
        raise failure


@dataclass
class RabbitDelivery:
    """A :class:`coordinator.broker.Delivery` over a message as aiormq delivers it, settled once."""

    message: DeliveredMessage
    session: RabbitSession
    acks: CoalescedAcks
    settled: bool = False

    @property
    def body(self) -> bytes:
        return self.message.body

    @property
    def routing_key(self) -> str:
        return self.message.routing_key or ""

    @property
    def message_id(self) -> str | None:
        return self.message.header.properties.message_id

    @property
    def correlation_id(self) -> str | None:
        return self.message.header.properties.correlation_id

    @property
    def user_id(self) -> str | None:
        return self.message.header.properties.user_id

    @property
    def reply_to(self) -> str | None:
        return self.message.header.properties.reply_to

    @property
    def redelivered(self) -> bool:
        return bool(self.message.redelivered)

    async def ack(self) -> None:
        await self.acks.ack(self._settle())

    async def requeue(self) -> None:
        await self.acks.requeue(self._settle())

    async def dead_letter(self, reason: str) -> None:
        await self.session.dead_letter(self.message, reason)
        await self.acks.ack(self._settle())

    def _settle(self) -> int:
        """The delivery tag, once: a second settlement of one delivery would make the broker close the
        channel (``unknown delivery tag``), so it is refused here."""
        if self.settled:
            raise RuntimeError(f"delivery {self.message_id} is already settled")
        self.settled = True
        return _tag(self.message)


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    if tag is None:  # only messages got with basic.get or returned have none; consumers see neither
        raise TypeError(f"not a consumed delivery: {message.delivery!r}")
    return tag


class RabbitSession:
    """One connection: a confirming channel for publications, one channel per consumer."""

    def __init__(self, broker: RabbitBroker, connection: AbstractConnection, name: str, node: str) -> None:
        self.broker = broker
        #: The URL of the node this session is connected to.
        self.node = node
        self.topology = broker.topology
        self.name = name
        self.user = broker_user(broker.url)
        self._connection = connection
        self._publish_channel: AbstractChannel | None = None
        self._closing = False
        self._closed_here = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: Channels of the health check's passive declares, kept across releases.
        self._counting: dict[int, AbstractChannel] = {}
        self._counting_lock = asyncio.Lock()
        #: The acknowledgements of each consumed queue (read by tests and benchmarks).
        self.acks: dict[str, CoalescedAcks] = {}
        connection.close_callbacks.add(self._on_connection_closed)

    def _on_connection_closed(self, *_: object) -> None:
        """Lost (not closed by :meth:`close`): the next session starts with the next node."""
        if not self._closed_here:
            self.broker.rotation.lost(self.node)

    async def open(self) -> None:
        self._publish_channel = await self._connection.channel(publisher_confirms=True, on_return_raises=True)
        self._publish_channel.close_callbacks.add(self._on_channel_closed)

    def _on_channel_closed(self, _channel: object, error: BaseException | None = None) -> None:
        """A channel this session needs closed under it: end the session (a new one starts clean)."""
        self._end(error)

    def _end(self, error: BaseException | None) -> None:
        """Close the connection under the session: the coordinator starts a new one, which declares the
        topology again and replays the outbox."""
        if not self._closing and not self._connection.is_closed:
            self._closing = True
            task = asyncio.get_running_loop().create_task(self._connection.close(error or ConnectionError))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def closed(self) -> None:
        connection = self._connection
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_close(*_: object) -> None:
            if not lost.done():
                lost.set_result(None)

        connection.close_callbacks.add(on_close)
        if connection.is_closed:
            return
        await lost

    async def close(self) -> None:
        self._closing = self._closed_here = True
        if not self._connection.is_closed:
            await self._connection.close()

    async def acquire_leadership(self) -> None:
        channel = await self._connection.channel()
        try:
            await channel.declare_queue(f"{self.topology.namespace}.coordinator.leader", exclusive=True)
        except ChannelLockedResource as error:
            raise NotLeader(str(error)) from None

    # ------------------------------------------------------------------ topology

    async def declare_topology(self) -> None:
        channel = self._channel()
        t = self.topology
        for name, kind in t.exchanges().items():
            await channel.declare_exchange(name, kind, durable=True)
        for name, (arguments, exchange, key) in t.coordinator_queues().items():
            queue = await channel.declare_queue(name, durable=True, arguments=arguments)
            await queue.bind(exchange, routing_key=key)

    async def declare_task_queue(self, service: str) -> None:
        t = self.topology
        name = t.task_queue(service)
        channel = await self._connection.channel()  # a refused declare closes this channel, and only it
        try:
            queue = await channel.declare_queue(name, durable=True, arguments=t.task_queue_arguments())
            await queue.bind(t.commands_exchange, routing_key=t.task_binding(service))
        except (ChannelPreconditionFailed, ChannelAccessRefused, ChannelLockedResource) as error:
            raise QueueUnusable(
                f"its queue {name} cannot be declared as a quorum queue ({_reason(error)}): delete it and "
                "run rc-admin-setup again (or restart the coordinator, which declares it)"
            ) from None
        finally:
            if not channel.is_closed:
                await channel.close()

    async def consumer_counts(self, services: Sequence[str]) -> dict[str, int | None]:
        """Each service's consumer count (None: no queue), asked on up to :data:`COUNTING_CHANNELS`
        channels at once: one passive declare per service, so the round trips of a release of hundreds
        of services overlap instead of adding up. The channels stay open for the next release."""
        shares = [services[i::COUNTING_CHANNELS] for i in range(min(COUNTING_CHANNELS, len(services)))]
        async with self._counting_lock:  # a missing queue closes its channel: never under another's declare
            counted = await asyncio.gather(
                *(self._count_consumers(n, share) for n, share in enumerate(shares))
            )
        found = {service: count for share in counted for service, count in share.items()}
        return {service: found[service] for service in services}

    async def _count_consumers(self, slot: int, services: Sequence[str]) -> dict[str, int | None]:
        counts: dict[str, int | None] = {}
        for service in services:
            channel = self._counting.get(slot)
            if channel is None or channel.is_closed:  # a missing queue closes the channel that asked
                channel = self._counting[slot] = await self._connection.channel()
            try:
                queue = await channel.declare_queue(self.topology.task_queue(service), passive=True)
            except ChannelNotFoundEntity:
                counts[service] = None
                continue
            counts[service] = int(queue.declaration_result.consumer_count or 0)
        return counts

    async def consume(self, queue: str, handler: Handler) -> None:
        """Consume straight on the AMQP channel (aiormq's), as publishing does: aiormq starts one task per
        delivery, in order, without aio-pika's message object and second task in between."""
        channel = await self._connection.channel()
        channel.close_callbacks.add(self._on_channel_closed)
        await channel.set_qos(prefetch_count=self.broker.prefetch)
        underlay = await underlay_of(channel)
        acks = self.acks[queue] = CoalescedAcks(underlay)

        async def deliver(message: DeliveredMessage) -> None:
            acks.received(_tag(message))
            await handler(RabbitDelivery(message, self, acks))

        tag = f"{self.name}:{queue}"

        def cancelled(frame: Basic.Cancel) -> None:
            """The broker stopped this consumer (its queue was deleted, say): a session that no longer
            consumes must not go on as if it did."""
            if frame.consumer_tag == tag:
                log.warning("the broker cancelled a consumer; starting a new session", queue=queue)
                self._end(ConnectionError(f"the broker cancelled the consumer of {queue}"))

        underlay.on_consumer_cancel_callbacks.add(cancelled)
        await underlay.basic_consume(queue, deliver, consumer_tag=tag)

    # ------------------------------------------------------------------ publishing

    async def publish(self, entry: OutboxEntry, release_id: str, *, routing_key: str | None = None) -> None:
        exchange = {
            "commands": self.topology.commands_exchange,
            "events": self.topology.events_exchange,
        }[entry.exchange]
        key = routing_key or entry.routing_key
        properties = self._properties(entry.message_id, entry.kind, correlation_id=release_id)
        mandatory = entry.exchange == "commands"
        await self._send(exchange, key, entry.body.encode(), properties, mandatory=mandatory)

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes, message_id: str) -> None:
        properties = self._properties(message_id, MessageKind.ADMIN_ANSWER, correlation_id=correlation_id)
        properties.delivery_mode = aio_pika.DeliveryMode.NOT_PERSISTENT.value
        await self._send("", reply_to, body, properties, mandatory=False)

    async def dead_letter(self, incoming: DeliveredMessage, reason: str) -> None:
        """Copy a refused message to ``<ns>.dlx`` with the reason in its headers (the caller then acks)."""
        received = incoming.header.properties
        headers: dict[str, Any] = dict(received.headers or {})
        headers[DEAD_REASON_HEADER] = reason[:1000]
        headers["x-rc-original-exchange"] = incoming.exchange or ""
        headers["x-rc-original-routing-key"] = incoming.routing_key or ""
        if received.user_id:
            headers["x-rc-original-user-id"] = received.user_id
        properties = Basic.Properties(
            content_type=received.content_type,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
            headers=headers,
            message_id=received.message_id,
            correlation_id=received.correlation_id,
            message_type=received.message_type,
        )
        exchange = self.topology.dead_letter_exchange
        await self._send(exchange, incoming.routing_key or "", incoming.body, properties, mandatory=False)

    async def _send(
        self, exchange: str, routing_key: str, body: bytes, properties: Basic.Properties, *, mandatory: bool
    ) -> None:
        within = self.broker.publish_timeout
        await send_confirmed(
            self._channel(), exchange, routing_key, body, properties, mandatory=mandatory, within=within
        )

    def _properties(
        self, message_id: str, kind: MessageKind, *, correlation_id: str | None
    ) -> Basic.Properties:
        return Basic.Properties(
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
            message_id=message_id,
            correlation_id=correlation_id,
            message_type=kind.value,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            user_id=self.user,
            app_id="rc-coordinator",
        )

    def _channel(self) -> AbstractChannel:
        if self._publish_channel is None:
            raise RuntimeError("not connected")
        return self._publish_channel


def _reason(error: BaseException) -> str:
    """The broker's own words (``PRECONDITION_FAILED - inequivalent arg ...``), without the frame details."""
    text = str(error.args[0] if error.args else error)
    return text.split(", ", 1)[0] if text.startswith("(") else text


__all__ = ["Nacked", "RabbitBroker", "RabbitDelivery", "RabbitSession", "send_confirmed"]
