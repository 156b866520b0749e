"""The instance's own control queue on RabbitMQ, kept up apart from aio-pika's restore of the rest.

After a reconnection, aio-pika's robust connection declares every channel's queues again and restores
their consumers; if one of them fails, it closes the whole new connection and tries again later. The
control queue is exclusive, and the broker keeps a lost connection's exclusive queue (bound, with its
dead consumer) until it has noticed that connection is gone, which after a network cut takes its
heartbeat timeout (a minute or more): declaring it again fails with RESOURCE_LOCKED until then.
Restored with the others, it kept the service's queue unconsumed all that time, and a cancel routed to
it meanwhile was lost with it.

So the control queue lives on a plain channel that aio-pika does not restore. :class:`ControlConsumer`
consumes it again after a reconnection, and whenever it finds it not consumed, on a new channel: the same
queue if the broker lets it (a queue of this connection keeps the commands it holds), else, when the
broker still holds that name for a lost connection, a new one, ``<ns>.control.<service>.<instance>.<n>``,
bound to the same ``task.<service>.cancel.<instance>`` key: a cancel sent to the instance reaches it
there even while the old queue lingers (which gets a copy that goes nowhere). A failed try is tried
again every ``retry_seconds``; the service's queue is consumed meanwhile, and
:meth:`ControlConsumer.detail` says what is missing (the instance's heartbeat carries it). While no
control queue of the instance is bound, the coordinator's cancel for it is unroutable and goes to the
service's queue instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import aio_pika
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection
from aiormq.exceptions import ChannelLockedResource

from schemas.topology import Topology
from task_sdk._amqp_probes import connection_lost, consumer_registered

log = structlog.get_logger("task_sdk")

Deliver = Callable[[AbstractIncomingMessage], Awaitable[None]]


class ControlConsumer:
    """Consumes the instance's control queue (exclusive, bound to the instance's cancel key)."""

    def __init__(
        self,
        connection: AbstractRobustConnection,
        topology: Topology,
        service: str,
        instance_id: str,
        *,
        prefetch: int,
        retry_seconds: float,
        attempt_timeout: float,
    ) -> None:
        self._connection = connection
        self._topology = topology
        self._first_name = topology.control_queue(service, instance_id)
        #: The queue consumed last (the first name until the broker held it for a lost connection).
        self.name = self._first_name
        self._renamed = 0
        self._key = topology.control_key(service, instance_id)
        self._prefetch = prefetch
        self._retry = retry_seconds
        self._attempt_timeout = attempt_timeout
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        #: Why the last attempt to consume a control queue failed (None: it did not fail).
        self._failure: str | None = None
        self._wake = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    async def open(self, deliver: Deliver) -> None:
        """Declare, bind and consume the queue (an error raises: the instance does not start without
        it), then keep one consumed."""
        await self._consume(deliver, self.name)
        self._keeper = asyncio.create_task(self._keep(deliver), name=f"control-queue-{self.name}")

    def reconnected(self) -> None:
        """The connection is back: consume a control queue again at once (the lost connection took it)."""
        self._wake.set()

    def detail(self) -> str | None:
        """What the heartbeat should say about the control queue: None while one is consumed."""
        if self._keeper is None or self.consumed():
            return None
        why = f"; last try: {self._failure}" if self._failure else ""
        return f"this instance's control queue is not consumed yet, retrying every {self._retry:g} s{why}"

    def consumed(self) -> bool:
        channel = self._channel
        if channel is None or channel.is_closed or self._tag is None:
            return False
        return consumer_registered(channel, self._tag)

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)

    async def _keep(self, deliver: Deliver) -> None:
        """Every ``retry_seconds``, or at once after a reconnection: consume a control queue if none is."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry):
                    await self._wake.wait()
            self._wake.clear()
            if self.consumed() or not self._connected():
                continue  # (while the connection is down, its return wakes this up)
            try:
                async with asyncio.timeout(self._attempt_timeout):
                    await self._consume_again(deliver)
            except Exception as error:
                failure = _describe(error)
                if failure != self._failure:  # said once, not at every try
                    log.warning(
                        "control_queue.not_consumed", queue=self.name, error=failure, retry=self._retry
                    )
                self._failure = failure
            else:
                self._failure = None
                log.info("control_queue.consumed_again", queue=self.name)

    def _connected(self) -> bool:
        return not self._connection.is_closed and not connection_lost(self._connection)

    async def _consume_again(self, deliver: Deliver) -> None:
        """The last queue, else (the broker holds it for a lost connection) a new one."""
        try:
            await self._consume(deliver, self.name)
        except ChannelLockedResource:
            self._renamed += 1
            await self._consume(deliver, f"{self._first_name}.{self._renamed}")

    async def _consume(self, deliver: Deliver, name: str) -> None:
        """Declare, bind and consume ``name`` on a new plain channel (a failed declaration closes that
        channel, and only it)."""
        old, self._channel, self._tag = self._channel, None, None
        if old is not None and not old.is_closed:
            with contextlib.suppress(Exception):
                await old.close()
        channel = aio_pika.Channel(self._connection, publisher_confirms=False)
        await channel.initialize()
        try:
            await channel.set_qos(prefetch_count=self._prefetch)
            queue = await channel.declare_queue(
                name, exclusive=True, arguments=self._topology.control_queue_arguments()
            )
            await queue.bind(self._topology.commands_exchange, routing_key=self._key)
            tag = await queue.consume(deliver)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        self._channel, self._tag, self.name = channel, tag, name


def _describe(error: Exception) -> str:
    if isinstance(error, ChannelLockedResource):
        return "RESOURCE_LOCKED (the broker holds a queue of that name for another connection)"
    return f"{type(error).__name__}: {error}"[:200]
