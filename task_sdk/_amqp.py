"""The RabbitMQ :class:`~task_sdk._transport.Transport` (aio-pika, robust connection).

Three channels: one consumes the service's queue (one consumer per free process slot, each with a
prefetch of 1: no consumer while every slot is busy, so the work waits for an idle instance;
:mod:`task_sdk._amqp_work`), one consumes the instance's own control
queue (exclusive, bound to ``task.<service>.cancel.<instance>``), one publishes with publisher confirms
and ``on_return_raises`` so an unroutable reply is an error, not a silent drop.
aio-pika's robust connection reconnects and restores the channels, the declarations, the prefetch and
the consumers of the service's queue; it does not re-send publications that failed during an outage,
which is why the runner retries replies until they are confirmed. The control queue is not part of that
restore: after it, in the background, a new one is declared and consumed (the broker may still hold the
lost connection's for a minute or more), so the control queue never keeps the service's queue waiting
(:mod:`task_sdk._amqp_control`). With
several broker URLs (a cluster's nodes), each reconnection goes to the next node (:mod:`task_sdk._failover`).
"""

from __future__ import annotations

import asyncio
import contextlib

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aiormq.exceptions import ChannelAccessRefused, ChannelClosed, ChannelNotFoundEntity

from schemas.broker_url import split_urls
from schemas.enums import ReplyKind
from schemas.messages import SCHEMA_VERSION, encode
from schemas.topology import SCHEMA_VERSION_HEADER, Topology
from task_sdk._amqp_control import ControlConsumer
from task_sdk._amqp_probes import connection_lost
from task_sdk._amqp_work import WorkConsumers
from task_sdk._failover import connect_robust
from task_sdk._settings import Settings, hostname
from task_sdk._transport import BUSY, Delivery, DeliveryHandler, Health, Outgoing, PublishFailed
from task_sdk._version import APP_ID

log = structlog.get_logger("task_sdk")


class QueueUnusable(RuntimeError):
    """The service's queue is missing or unusable, and the message says what to do."""


class AmqpDelivery:
    """A command delivered by RabbitMQ."""

    def __init__(self, message: AbstractIncomingMessage) -> None:
        self._message = message

    @property
    def body(self) -> bytes:
        return self._message.body

    @property
    def user_id(self) -> str | None:
        return self._message.user_id

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def consumer_tag(self) -> str | None:
        """The consumer it came to (one per free process slot)."""
        return self._message.consumer_tag

    async def ack(self) -> None:
        await self._message.ack()

    async def dead_letter(self) -> None:
        await self._message.reject(requeue=False)


class AmqpTransport:
    """Consumes ``<ns>.task.<service>`` and publishes to ``<ns>.replies``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._topology = Topology(settings.namespace)
        self._user = settings.broker_user
        self._connection: AbstractRobustConnection | None = None
        self._consume_channel: AbstractRobustChannel | None = None
        self._publish_channel: AbstractRobustChannel | None = None
        self._replies: AbstractExchange | None = None
        self._queue: AbstractRobustQueue | None = None
        #: The consumers of the service's queue, one per free process slot.
        self._work: WorkConsumers | None = None
        self._reapplying: asyncio.Task[None] | None = None
        self._control: ControlConsumer | None = None

    async def open(self, service: str, consumer_tag: str, on_delivery: DeliveryHandler) -> None:
        self._connection = await connect_robust(
            split_urls(self._settings.connection_url()),
            client_properties={"connection_name": f"{service}@{hostname()}"},
            reconnect_interval=self._settings.reconnect_seconds,
            timeout=self._settings.publish_timeout,
        )
        await self._ensure_exchanges()
        self._publish_channel = await self._open_channel(publisher_confirms=True)
        self._replies = await self._publish_channel.get_exchange(
            self._topology.replies_exchange, ensure=False
        )
        self._consume_channel = await self._open_channel(publisher_confirms=False)
        self._queue = await self._task_queue(self._consume_channel, service)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_delivery(AmqpDelivery(message))

        self._connection.reconnect_callbacks.add(self._on_reconnected)
        self._work = WorkConsumers(self._consume_channel, self._queue, consumer_tag)
        try:
            await self._work.open(self._settings.concurrency, deliver)
        except ChannelAccessRefused:
            raise QueueUnusable(
                f"broker user {self._user!r} may not read queue {self._queue.name}: run rc-admin-setup for "
                f"service {service!r} (it grants each service its own queue)"
            ) from None

    async def open_control(self, service: str, instance_id: str, on_delivery: DeliveryHandler) -> None:
        assert self._connection is not None
        self._control = ControlConsumer(
            self._connection,
            self._topology,
            service,
            instance_id,
            prefetch=self._settings.concurrency,
            retry_seconds=self._settings.reconnect_seconds,
            attempt_timeout=self._settings.publish_timeout,
        )

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_delivery(AmqpDelivery(message))

        await self._control.open(deliver)

    async def set_work_window(self, free_slots: int, taken: Delivery | None = None) -> None:
        if self._work is not None:
            taken_by = taken.consumer_tag if isinstance(taken, AmqpDelivery) else None
            await self._work.follow(free_slots, taken_by)

    def _on_reconnected(self, *_: object) -> None:
        """The channels and the consumers that were on at the loss are restored: open the ones the free
        slots call for now (they changed while the connection was down); and consume the control queue
        again."""
        if self._work is not None:
            self._reapplying = asyncio.get_running_loop().create_task(self._work.reapply())
        if self._control is not None:
            self._control.reconnected()

    async def _open_channel(self, *, publisher_confirms: bool) -> AbstractRobustChannel:
        assert self._connection is not None
        channel = await self._connection.channel(
            publisher_confirms=publisher_confirms, on_return_raises=publisher_confirms
        )
        return channel

    async def _ensure_exchanges(self) -> None:
        """Check that the exchanges the service uses exist, without needing permission to declare them.

        A passive declare needs no permission, so a least-privilege service user (``rc-admin-setup``)
        passes. If one is missing (no coordinator has run yet), declare it, which a development user
        may do; a service user is refused that, and the error says what to do.
        """
        assert self._connection is not None
        types = self._topology.exchanges()
        for name in (self._topology.commands_exchange, self._topology.replies_exchange):
            channel = await self._connection.channel()
            try:
                await channel.declare_exchange(
                    name, aio_pika.ExchangeType(types[name]), durable=True, passive=True
                )
            except ChannelNotFoundEntity:
                channel = await self._connection.channel()
                try:
                    await channel.declare_exchange(name, aio_pika.ExchangeType(types[name]), durable=True)
                except ChannelAccessRefused:
                    raise RuntimeError(
                        f"exchange {name!r} does not exist and broker user {self._user!r} may not create it: "
                        "start the coordinator first (it declares the topology), or check RC_NAMESPACE"
                    ) from None
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()

    async def _task_queue(self, channel: AbstractRobustChannel, service: str) -> AbstractRobustQueue:
        """The service's queue, checked passively (which needs no permission).

        ``rc-admin-setup`` creates it with its binding, and the coordinator declares it too; a service
        user has no right to declare, bind or delete it. Only when it does not exist is it declared and
        bound here, which only a development user (``guest``) may do: a service user gets an error that
        says what to run. A queue declared here is declared again, with its binding, when the robust
        channel is restored (as before); one found is only checked again.
        """
        t = self._topology
        name = t.task_queue(service)
        if await self._queue_exists(name):
            return await channel.declare_queue(name, passive=True)
        await self._declare_missing_queue(service)
        queue = await channel.declare_queue(name, durable=True, arguments=t.task_queue_arguments())
        await queue.bind(t.commands_exchange, routing_key=t.task_binding(service))
        return queue

    async def _queue_exists(self, name: str) -> bool:
        assert self._connection is not None
        channel = await self._connection.channel()  # a failed check closes this channel, and only it
        try:
            await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            return False
        except ChannelClosed as error:
            raise QueueUnusable(
                f"queue {name} cannot be used ({error}): delete it and run rc-admin-setup again"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await channel.close()
        return True

    async def _declare_missing_queue(self, service: str) -> None:
        assert self._connection is not None
        t = self._topology
        channel = await self._connection.channel()
        try:
            queue = await channel.declare_queue(
                t.task_queue(service), durable=True, arguments=t.task_queue_arguments()
            )
            await queue.bind(t.commands_exchange, routing_key=t.task_binding(service))
        except ChannelAccessRefused:
            raise QueueUnusable(
                f"queue {t.task_queue(service)} does not exist and broker user {self._user!r} may not "
                f"create it: run rc-admin-setup for service {service!r} (it makes the queue and its binding)"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    async def stop_consuming(self) -> None:
        if self._work is not None:
            await self._work.stop()

    async def publish(self, message: Outgoing) -> None:
        if self._replies is None:
            raise PublishFailed("the transport is not open")
        routing_key = self._topology.reply_key(message.service, ReplyKind(message.kind.value))
        try:
            await self._replies.publish(
                self._amqp_message(message),
                routing_key=routing_key,
                mandatory=True,
                timeout=self._settings.publish_timeout,
            )
        except Exception as error:
            raise PublishFailed(f"{type(error).__name__}: {error}") from error

    def _amqp_message(self, message: Outgoing) -> aio_pika.Message:
        return aio_pika.Message(
            body=encode(message),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message.message_id,
            correlation_id=getattr(message, "release_id", None),
            type=message.kind.value,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
            user_id=self._user,
            app_id=APP_ID,
            timestamp=message.sent_at,
        )

    async def wait_ready(self) -> None:
        if self._publish_channel is not None:
            await self._publish_channel.ready()

    def health(self) -> Health:
        """Whether the service's queue is consumed; a control queue not consumed yet does not change that
        (the work goes on), it is only said."""
        work = self._work_health()
        control = self._control.detail() if self._control is not None else None
        if not work.consuming or control is None:
            return work
        # The work's detail first: the coordinator recognizes a busy instance by how the detail begins.
        return Health(True, "; ".join(detail for detail in (work.detail, control) if detail))

    def _work_health(self) -> Health:
        if self._connection is None or self._consume_channel is None:
            return Health(False, "not connected yet")
        if self._connection.is_closed:
            return Health(False, "connection closed")
        if self._consume_channel.is_closed:
            return Health(
                False, "connection lost, reconnecting" if self._lost() else "consumer channel closed"
            )
        work = self._work
        if work is None or not work.consuming:
            return Health(False, "consumer cancelled")
        if work.wanted == 0 and not work.tags:
            return BUSY
        if len(work.tags) < work.wanted:
            consumed = f"{len(work.tags)} of {work.wanted}"
            return Health(False, f"consuming the service's queue for {consumed} free slots, trying again")
        if not work.registered():
            return Health(False, "the broker cancelled the consumer")
        return Health(True)

    def _lost(self) -> bool:
        return connection_lost(self._connection)

    async def recover(self) -> None:
        """Re-open a consumer channel the broker closed while the connection stayed up.

        Through aio-pika's ``restore()``, never ``reopen()``: the heartbeat calls this whenever it finds the
        channel closed, which it is too while aio-pika restores it after a reconnection. ``restore()`` waits
        for that restore and does nothing once the channel is restored; ``reopen()`` ran alongside it, the
        two consumed under one tag on one channel or closed each other's, and aio-pika's restore then
        waited for ever on the closed channel's callback, which waited for the restore: the connection was
        never restored again, and after the next loss every reply and heartbeat failed, for good.
        """
        channel = self._consume_channel
        if self._connection is None or self._connection.is_closed or channel is None:
            return
        if channel.is_closed and not self._lost():
            await channel.restore()
        if not channel.is_closed and self._work is not None:
            await self._work.reapply()

    async def close(self) -> None:
        if self._work is not None:
            self._work.consuming = False
        if self._control is not None:
            await self._control.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
