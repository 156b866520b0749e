"""An installation as ``rc-admin-setup --apply`` makes it, on the real RabbitMQ: a fresh vhost with its
topology (the services' queues and bindings included), one broker user per process with the permissions
it grants, and a break-glass administrator (a user that may publish anything, as ``guest`` may in
development). Deleted, vhost and users, at the end of the module."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aio_pika
import pytest
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from deploy.definitions import Installation, build_definitions
from schemas.topology import Topology
from task_sdk import Settings
from tests.deploy.test_permissions import Broker, broker
from tests.sdk.handlers import Recorder

__all__ = ["Installed", "broker", "installed", "recorder", "take"]

TIMEOUT = 10.0


@dataclass(frozen=True)
class Installed:
    broker: Broker
    installation: Installation
    passwords: dict[str, str]

    @property
    def topology(self) -> Topology:
        return self.installation.topology

    @property
    def service(self) -> str:
        return self.installation.services[0]

    @property
    def other(self) -> str:
        return self.installation.services[1]

    @property
    def coordinator(self) -> str:
        return self.installation.coordinator_user

    @property
    def operator(self) -> str:
        return self.installation.operator_user

    @property
    def admin(self) -> str:
        assert self.installation.admin_user is not None
        return self.installation.admin_user

    def url(self, user: str) -> str:
        return self.broker.url_for(user, self.passwords[user], self.installation.vhost)

    def settings(self, user: str, **changes: Any) -> Settings:
        """A task service's settings: logged in as ``user``, commanded by the installation's coordinator."""
        values: dict[str, Any] = {
            "amqp_url": self.url(user),
            "namespace": self.installation.namespace,
            "coordinator_user": self.coordinator,
            "heartbeat_seconds": 0.3,
            "shutdown_timeout": 2.0,
            "publish_timeout": 3.0,
            "reconnect_seconds": 0.3,
        }
        return Settings(**(values | changes))

    @asynccontextmanager
    async def connect(self, user: str) -> AsyncIterator[AbstractConnection]:
        connection = await aio_pika.connect(self.url(user), timeout=TIMEOUT)
        try:
            yield connection
        finally:
            await connection.close()

    async def publish(self, user: str, exchange: str, routing_key: str, message: aio_pika.Message) -> None:
        """Publish as ``user`` with confirms (a refusal raises)."""
        async with self.connect(user) as connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            target = await channel.get_exchange(exchange, ensure=False)
            await asyncio.wait_for(target.publish(message, routing_key, mandatory=True), TIMEOUT)


@pytest.fixture(scope="module")
async def installed(broker: Broker) -> AsyncIterator[Installed]:
    tag = uuid.uuid4().hex[:8]
    installation = Installation(
        services=(f"portal-{tag}", f"search-index-{tag}"),
        namespace=f"rcsec-{tag}",
        vhost=f"rcsec-{tag}",
        coordinator_user=f"rc-coordinator-{tag}",
        operator_user=f"rc-operator-{tag}",
        admin_user=f"rc-admin-{tag}",
    )
    passwords = {user: secrets.token_urlsafe(16) for user in installation.users()}
    await asyncio.to_thread(broker.apply, build_definitions(installation, passwords))
    try:
        yield Installed(broker, installation, passwords)
    finally:
        await asyncio.to_thread(broker.delete, installation)


async def take(connection: AbstractConnection, queue_name: str, count: int) -> list[AbstractIncomingMessage]:
    """Consume ``count`` messages of ``queue_name`` (acknowledged), or fail saying how many came."""
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name, ensure=False)
    received: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def on_message(message: AbstractIncomingMessage) -> None:
        await message.ack()
        await received.put(message)

    tag = await queue.consume(on_message)
    try:
        return [await asyncio.wait_for(received.get(), TIMEOUT) for _ in range(count)]
    except TimeoutError:
        raise AssertionError(f"only {received.qsize()} of {count} messages arrived on {queue_name}") from None
    finally:
        await queue.cancel(tag)
        await channel.close()


def recorder(service: str) -> Recorder:
    """A :class:`~tests.sdk.handlers.Recorder` (it counts its calls) serving ``service``."""
    handler: Recorder = type("ServiceRecorder", (Recorder,), {"service": service})()
    return handler
