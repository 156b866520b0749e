"""Issue 21, item 1: a task service's broker user cannot break its own queue (and so the coordinator's
declare of it); ``rc-admin-setup`` creates the queue, and the SDK only checks it."""

from __future__ import annotations

from typing import Any

import aiormq.exceptions
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection

from task_sdk import Runner
from task_sdk._amqp import AmqpTransport
from tests.security.conftest import Installed, recorder

pytestmark = pytest.mark.integration

CLASSIC: dict[str, Any] = {"x-queue-type": "classic"}


async def _refused(connection: AbstractConnection, action: str, queue: str) -> bool:
    """Whether the broker refuses ``action`` (delete, or declare as a classic queue) on a fresh channel."""
    channel: AbstractChannel = await connection.channel()
    try:
        if action == "delete":
            await channel.queue_delete(queue)
        else:
            await channel.declare_queue(queue, durable=True, arguments=CLASSIC)
    except aiormq.exceptions.ChannelAccessRefused:
        return True
    await channel.close()
    return False


async def test_a_service_user_cannot_delete_or_redeclare_its_queue(installed: Installed) -> None:
    queue = installed.topology.task_queue(installed.service)
    async with installed.connect(installed.service) as connection:
        assert await _refused(connection, "delete", queue), "the service deleted its own queue"
        assert await _refused(connection, "declare", queue), "the service declared its queue again"
    async with installed.connect(installed.coordinator) as connection:  # its queue is as it was made
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments=installed.topology.task_queue_arguments())


async def test_the_sdk_reports_a_missing_queue_in_one_line_that_names_the_fix(installed: Installed) -> None:
    """The SDK checks its queue passively; missing, it may not create it, and says to run rc-admin-setup."""
    service = installed.other
    queue = installed.topology.task_queue(service)
    async with installed.connect(installed.coordinator) as connection:
        await (await connection.channel()).queue_delete(queue)
    settings = installed.settings(service)
    runner = Runner(recorder(service), AmqpTransport(settings), settings)
    with pytest.raises(RuntimeError) as raised:  # QueueUnusable
        await runner.start(heartbeats=False)
    message = str(raised.value)
    assert "\n" not in message
    assert f"queue {queue} does not exist" in message
    assert f"run rc-admin-setup for service {service!r}" in message


async def test_the_sdk_reports_a_queue_it_may_not_read_in_one_line_that_names_the_fix(
    installed: Installed,
) -> None:
    """A service started on another service's broker user finds that queue but may not consume it."""
    service, user = installed.service, installed.other
    settings = installed.settings(user)
    runner = Runner(recorder(service), AmqpTransport(settings), settings)
    with pytest.raises(RuntimeError) as raised:  # QueueUnusable
        await runner.start(heartbeats=False)
    message = str(raised.value)
    assert "\n" not in message
    queue = installed.topology.task_queue(service)
    expected = f"broker user {user!r} may not read queue {queue}: run rc-admin-setup for service {service!r}"
    assert expected in message
