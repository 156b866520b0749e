"""The broker seam's publishing contract, on RabbitMQ and in memory alike."""

from __future__ import annotations

import pytest

from coordinator.broker import Broker, Unroutable
from schemas.documents import OutboxEntry
from schemas.enums import MessageKind
from tests.coordinator.fixtures import BOTH_BROKERS

pytestmark = BOTH_BROKERS


def cancel(message_id: str) -> OutboxEntry:
    return OutboxEntry(
        message_id=message_id,
        exchange="commands",
        routing_key="task.portal.cancel",
        kind=MessageKind.COMMAND,
        body="{}",
    )


async def test_a_command_no_queue_takes_is_refused_as_unroutable(coordinator_broker: Broker) -> None:
    """The outbox sends a cancel to an instance's own queue and falls back to the service's queue only when
    the broker says no queue took it: a silently dropped command here would leave a release canceling."""
    session = await coordinator_broker.connect("rc-test")
    try:
        await session.declare_topology()
        await session.declare_task_queue("portal")
        await session.publish(cancel("routed"), "RE_1")  # the service's queue takes it
        with pytest.raises(Unroutable):
            await session.publish(cancel("unrouted"), "RE_1", routing_key="task.portal.cancel.nobody")
        await session.publish(cancel("after"), "RE_1")  # the session stays usable
    finally:
        await session.close()
