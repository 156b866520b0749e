"""The RabbitMQ back end of the shared behaviour suite: the test plays the coordinator on a real broker.

Commands are published to ``<ns>.commands``; replies are read from a test queue bound to
``<ns>.replies`` with ``reply.<service>.*``; refused commands are read from ``<ns>.dead``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage

from schemas.broker_url import broker_user
from schemas.messages import Heartbeat, Progress, TaskReply, decode_any
from schemas.topology import Topology
from task_sdk._amqp import AmqpTransport
from task_sdk._settings import Settings
from task_sdk._transport import Outgoing, Transport

T = TypeVar("T")
M = TypeVar("M", Heartbeat, Progress, TaskReply)

#: The repository's root: the working directory of service subprocesses (``tests.sdk.handlers`` imports).
REPOSITORY = Path(__file__).resolve().parents[2]


def rc_task_command() -> list[str]:
    """The installed ``rc-task`` console script (the real entry point), next to this interpreter."""
    script = Path(sys.executable).with_name("rc-task")
    assert script.exists(), f"the rc-task entry point is not installed next to {sys.executable}"
    return [str(script)]


class RabbitBackend:
    """A :class:`task_sdk.testing.Backend` on RabbitMQ.

    ``settings.amqp_url`` is what the service under test connects to (maybe through a proxy);
    ``broker_url`` is what the test itself uses (always direct).
    """

    def __init__(self, settings: Settings, broker_url: str) -> None:
        self.settings = settings
        self.broker_url = broker_url
        self.topology = Topology(settings.namespace)
        #: AMQP properties of every message received from the service, by message id.
        self.properties: dict[str, AbstractIncomingMessage] = {}
        self._received: asyncio.Queue[Outgoing] = asyncio.Queue()
        self._dead: asyncio.Queue[bytes] = asyncio.Queue()
        self._connection: AbstractConnection | None = None
        self._commands: AbstractExchange | None = None

    def transport(self) -> Transport:
        return AmqpTransport(self.settings)

    async def open(self, service: str) -> None:
        self._connection = await aio_pika.connect(self.broker_url)
        channel = await self._connection.channel()
        for name, kind in self.topology.exchanges().items():
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType(kind), durable=True)
            if name == self.topology.commands_exchange:
                self._commands = exchange
        await self._consume_replies(channel, service)
        await self._consume_dead_letters(channel)

    async def _consume_replies(self, channel: AbstractChannel, service: str) -> None:
        queue = await channel.declare_queue(f"{self.topology.namespace}.test.replies", exclusive=True)
        await queue.bind(self.topology.replies_exchange, routing_key=f"reply.{service}.*")

        async def on_reply(message: AbstractIncomingMessage) -> None:
            decoded = decode_any(message.body, (TaskReply, Progress, Heartbeat))
            assert isinstance(decoded, TaskReply | Progress | Heartbeat)
            self.properties[decoded.message_id] = message
            self._received.put_nowait(decoded)

        await queue.consume(on_reply, no_ack=True)

    async def _consume_dead_letters(self, channel: AbstractChannel) -> None:
        queue = await channel.declare_queue(
            self.topology.dead_letter_queue,
            durable=True,
            arguments=self.topology.dead_letter_queue_arguments(),
        )
        await queue.bind(self.topology.dead_letter_exchange)

        async def on_dead(message: AbstractIncomingMessage) -> None:
            self._dead.put_nowait(message.body)

        await queue.consume(on_dead, no_ack=True)

    async def send(self, body: bytes, routing_key: str, *, redelivered: bool = False) -> None:
        assert self._commands is not None, "open() first"
        message = aio_pika.Message(
            body,
            message_id=_message_id(body),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            user_id=broker_user(self.broker_url),  # signed as the coordinator signs its commands
        )
        await self._commands.publish(message, routing_key=routing_key, mandatory=True)

    async def receive(self, within: float) -> Outgoing | None:
        return await _get_within(self._received, within)

    async def dead_lettered(self, within: float) -> bytes | None:
        return await _get_within(self._dead, within)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


def _message_id(body: bytes) -> str | None:
    try:
        message_id = json.loads(body).get("message_id")
    except (ValueError, AttributeError):
        return None
    return message_id if isinstance(message_id, str) else None


async def _get_within(queue: asyncio.Queue[T], seconds: float) -> T | None:
    try:
        async with asyncio.timeout(seconds):
            return await queue.get()
    except TimeoutError:
        return None


async def next_message(
    coordinator: RabbitBackend,
    kind: type[M],
    condition: Callable[[M], bool] = lambda _: True,
    within: float = 15.0,
) -> M:
    """The next message of ``kind`` the service sends that meets ``condition``."""
    async with asyncio.timeout(within):
        while True:
            message = await coordinator.receive(within)
            if isinstance(message, kind) and condition(message):
                return message


async def waiting_in_queue(amqp_url: str, queue: str) -> int:
    """Messages ready in ``queue`` (neither delivered nor acked)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        declared = await (await connection.channel()).declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def consumers_of(amqp_url: str, queue: str) -> int:
    """Consumers of ``queue`` (0 if it does not exist)."""
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        try:
            declared = await (await connection.channel()).declare_queue(queue, passive=True)
        except aio_pika.exceptions.ChannelNotFoundEntity:
            return 0
        return declared.declaration_result.consumer_count or 0
