"""Reconnections on a real broker, one after the other, while the SDK's own checks run at full pace.

After a reconnection, aio-pika's robust connection restores each channel (reopens it, declares its
queues again, consumes again) before it calls the reconnect callbacks. Meanwhile the channels are
closed, and the heartbeat, which checks the consumer, sees the consumer channel closed and asks the
transport to recover it. Whatever the SDK does then must not race with aio-pika's own restore.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator

import pytest

from schemas.enums import Action, Outcome
from task_sdk.testing import make_release
from tests._proxy import TcpProxy
from tests.sdk.conftest import HarnessFactory
from tests.sdk.handlers import Recorder
from tests.sdk.test_rabbitmq import through

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend_kind", ["rabbitmq"], indirect=True)]

#: Cuts in a row: one was enough to stall the reconnection about 3 times in 4 on the code this test fixed.
CUTS = 20


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    parts = urllib.parse.urlsplit(amqp_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as running:
        yield running


async def test_every_reconnection_is_restored_while_the_heartbeat_checks_the_consumer(
    make_harness: HarnessFactory, proxy: TcpProxy, amqp_url: str
) -> None:
    """The heartbeat (every 10 ms here) finds the consumer channel closed while aio-pika restores it,
    and the transport's recovery used to reopen that channel itself, alongside aio-pika's restore: the
    two consumed under the same tag on one channel (the broker closes it, "DuplicateConsumerTag") or
    closed each other's channel, and aio-pika's restore then waited for the closed channel's callback,
    which waited for the restore. The connection was never restored again: after the next loss every
    reply and heartbeat failed with "channel closed", for good (a chaos run saw a service cut off)."""
    harness = make_harness(Recorder(), amqp_url=through(proxy, amqp_url), heartbeat_seconds=0.01)
    await harness.start(heartbeats=True)
    for cut in range(CUTS):
        reply = await harness.step(Action.INITIALIZE, make_release(), within=10)
        assert reply.outcome is Outcome.ACCEPTED, f"after {cut} cuts"
        proxy.cut()
    assert (await harness.step(Action.INITIALIZE, make_release(), within=10)).outcome is Outcome.ACCEPTED
    beats = len(harness.heartbeats)
    await harness.drain(0.5)
    assert len(harness.heartbeats) > beats
    assert proxy.connections_made > CUTS


async def test_a_consumer_channel_the_broker_closes_is_consumed_again(make_harness: HarnessFactory) -> None:
    """The connection stays up: the channel is restored (by aio-pika, or by the heartbeat's recovery)."""
    harness = make_harness(Recorder())
    await harness.start(heartbeats=True)
    assert (await harness.step(Action.INITIALIZE, make_release())).outcome is Outcome.ACCEPTED
    channel = harness.runner._transport._consume_channel  # type: ignore[attr-defined]
    underlay = await channel.get_underlay_channel()
    await underlay.basic_ack(delivery_tag=999_999)  # an unknown tag: the broker closes the channel (406)
    async with asyncio.timeout(5):
        await asyncio.wait({underlay.closing})
    assert "PRECONDITION_FAILED" in str(underlay.closing.exception())
    assert (await harness.step(Action.INITIALIZE, make_release(), within=10)).outcome is Outcome.ACCEPTED
    assert harness.runner._transport.health().consuming
