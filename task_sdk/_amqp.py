"""The RabbitMQ :class:`~task_sdk._transport.Transport` (aio-pika, robust connection).

Three channels: one consumes the service's queue (prefetch = the free process slots; no consumer while
every slot is busy, so the work waits for an idle instance), one consumes the instance's own control
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
from collections.abc import Awaitable, Callable

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
from task_sdk._amqp_probes import connection_lost, consumer_registered
from task_sdk._failover import connect_robust
from task_sdk._settings import Settings, hostname
from task_sdk._transport import BUSY, DeliveryHandler, Health, Outgoing, PublishFailed
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
        self._tag = ""
        self._consumer_tag: str | None = None
        self._resubscribed = 0
        self._consuming = False
        self._deliver: Callable[[AbstractIncomingMessage], Awaitable[None]] | None = None
        #: The work consumer's prefetch: the free process slots (0: not consuming, every slot busy).
        self._window = settings.concurrency
        self._wanted = settings.concurrency
        self._window_lock = asyncio.Lock()
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
        await self._consume_channel.set_qos(prefetch_count=self._settings.concurrency)
        self._queue = await self._task_queue(self._consume_channel, service)

        async def deliver(message: AbstractIncomingMessage) -> None:
            await on_delivery(AmqpDelivery(message))

        self._deliver = deliver
        self._connection.reconnect_callbacks.add(self._on_reconnected)
        self._tag = consumer_tag
        try:
            self._consumer_tag = await self._queue.consume(deliver, consumer_tag=consumer_tag)
        except ChannelAccessRefused:
            raise QueueUnusable(
                f"broker user {self._user!r} may not read queue {self._queue.name}: run rc-admin-setup for "
                f"service {service!r} (it grants each service its own queue)"
            ) from None
        self._consuming = True

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

    async def set_work_window(self, free_slots: int) -> None:
        async with self._window_lock:
            self._wanted = free_slots
            await self._apply_window()

    def _on_reconnected(self, *_: object) -> None:
        """The channels and the consumers that were on at the loss are restored: if the window changed
        while the connection was down, apply it now; and consume the control queue again."""
        self._reapplying = asyncio.get_running_loop().create_task(self._reapply_window())
        if self._control is not None:
            self._control.reconnected()

    async def _reapply_window(self) -> None:
        async with self._window_lock:
            await self._apply_window()

    async def _apply_window(self) -> None:
        """Consume with the wanted prefetch (not at all if 0). Never raises: if the channel is down, the
        consumer is gone with it, :meth:`health` says so and :meth:`recover` applies the window later."""
        if not self._consuming or self._queue is None or self._deliver is None:
            return
        if self._wanted == self._window and (self._window == 0) == (self._consumer_tag is None):
            return
        try:
            if self._consumer_tag is not None:
                tag, self._consumer_tag = self._consumer_tag, None
                await self._queue.cancel(tag)  # nothing more comes to it once this returns
            self._window = self._wanted
            if self._wanted > 0 and self._consume_channel is not None:
                await self._consume_channel.set_qos(prefetch_count=self._wanted)
                self._resubscribed += 1  # a new tag each time (RabbitMQ 3.10 <= 3.10.8, quorum queues:
                # a consume that reuses a cancelled consumer's tag while its deliveries are in flight crashes
                # the channel, and the connection with it: rabbitmq-server issue 5927, seen in a chaos run)
                tag = f"{self._tag}.{self._resubscribed}"
                self._consumer_tag = await self._queue.consume(self._deliver, consumer_tag=tag)
        except Exception as error:
            reason = f"{type(error).__name__}: {error}"
            log.warning("work_window.not_applied", wanted=self._wanted, error=reason)

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
        async with self._window_lock:
            self._consuming = False
            if self._queue is not None and self._consumer_tag is not None:
                tag, self._consumer_tag = self._consumer_tag, None
                await self._queue.cancel(tag)

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
        if not self._consuming:
            return Health(False, "consumer cancelled")
        if self._wanted == 0 and self._window == 0:
            return BUSY
        if self._consumer_tag is None:
            return Health(False, "not consuming the service's queue, trying again")
        if not self._consumer_registered():
            return Health(False, "the broker cancelled the consumer")
        return Health(True)

    def _lost(self) -> bool:
        return connection_lost(self._connection)

    def _consumer_registered(self) -> bool:
        """Whether the open consumer channel still has our consumer."""
        return consumer_registered(self._consume_channel, self._consumer_tag)

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
        if not channel.is_closed:
            await self._reapply_window()

    async def close(self) -> None:
        self._consuming = False
        if self._control is not None:
            await self._control.close()
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
