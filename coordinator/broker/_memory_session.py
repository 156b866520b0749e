"""The coordinator's session on a :class:`coordinator.broker.memory.MemoryBroker`."""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.broker._interface import Handler, NotLeader, QueueUnusable
from coordinator.broker.memory import BrokerError, MemoryBroker, MemoryConnection, Message
from schemas.documents import OutboxEntry
from schemas.enums import MessageKind
from schemas.messages import SCHEMA_VERSION
from schemas.topology import SCHEMA_VERSION_HEADER


class MemorySession:
    """The coordinator's session on a :class:`MemoryBroker` (the :class:`coordinator.broker.Session`)."""

    def __init__(self, connection: MemoryConnection, broker: MemoryBroker) -> None:
        self.connection = connection
        self.broker = broker
        self.topology = broker.topology

    async def acquire_leadership(self) -> None:
        try:
            self.connection.declare_queue(f"{self.topology.namespace}.coordinator.leader", exclusive=True)
        except BrokerError as error:
            raise NotLeader(str(error)) from None

    async def declare_topology(self) -> None:
        for name, kind in self.topology.exchanges().items():
            self.connection.declare_exchange(name, kind)
        for name, (arguments, exchange, key) in self.topology.coordinator_queues().items():
            self.connection.declare_queue(name, arguments)
            self.connection.bind(name, exchange, key)

    async def declare_task_queue(self, service: str) -> None:
        try:
            self._declare_task_queue(service)
        except BrokerError as error:
            raise QueueUnusable(f"its queue cannot be declared as a quorum queue ({error})") from None

    def _declare_task_queue(self, service: str) -> None:
        queue = self.connection.declare_queue(
            self.topology.task_queue(service), self.topology.task_queue_arguments()
        )
        self.connection.bind(queue, self.topology.commands_exchange, self.topology.task_binding(service))

    async def consumer_counts(self, services: Sequence[str]) -> dict[str, int | None]:
        return {s: self.connection.consumer_count(self.topology.task_queue(s)) for s in services}

    async def consume(self, queue: str, handler: Handler) -> None:
        self.connection.consume(queue, handler, self.broker.prefetch)

    async def publish(self, entry: OutboxEntry, release_id: str, *, routing_key: str | None = None) -> None:
        exchange = {"commands": self.topology.commands_exchange, "events": self.topology.events_exchange}
        message = self._message(entry.body.encode(), entry.message_id, entry.kind, release_id)
        message.exchange, message.routing_key = exchange[entry.exchange], routing_key or entry.routing_key
        self.connection.publish(message, mandatory=entry.exchange == "commands")

    async def answer(self, reply_to: str, correlation_id: str | None, body: bytes, message_id: str) -> None:
        message = self._message(body, message_id, MessageKind.ADMIN_ANSWER, correlation_id)
        message.routing_key = reply_to
        self.connection.publish(message)

    async def closed(self) -> None:
        await self.connection.lost.wait()

    async def close(self) -> None:
        await self.connection.close()

    def _message(
        self, body: bytes, message_id: str, kind: MessageKind, correlation_id: str | None
    ) -> Message:
        return Message(
            body,
            message_id=message_id,
            correlation_id=correlation_id,
            user_id=self.connection.user,
            type=kind.value,
            headers={SCHEMA_VERSION_HEADER: SCHEMA_VERSION},
        )
