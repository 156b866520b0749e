"""What only a real broker can show: message properties, and surviving a cut connection.

The service under test connects through :class:`tests._proxy.TcpProxy`, so the test can cut its
connection (and refuse reconnections for a while) in the middle of a step.

"Exactly once" here means what the coordinator sees after dropping duplicates by ``message_id``:
a reply may be published more than once (a confirm lost with the connection, a redelivered
command answered from the outcome store), but every copy is the very same message, so exactly one
distinct reply per command remains, and the handler's work ran once.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator

import aio_pika
import pytest

from schemas.enums import Action, Outcome
from schemas.messages import Heartbeat, TaskReply
from schemas.topology import SCHEMA_VERSION_HEADER, Topology
from task_sdk.testing import Harness, make_release
from tests._proxy import TcpProxy
from tests.sdk._rabbit import consumers_of, waiting_in_queue
from tests.sdk.conftest import HarnessFactory
from tests.sdk.handlers import SERVICE, Recorder

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("backend_kind", ["rabbitmq"], indirect=True)]


def through(proxy: TcpProxy, amqp_url: str) -> str:
    parts = urllib.parse.urlsplit(amqp_url)
    credentials = parts.netloc.rsplit("@", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{credentials}@127.0.0.1:{proxy.port}"))


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[TcpProxy]:
    parts = urllib.parse.urlsplit(amqp_url)
    async with TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as running:
        yield running


async def test_every_message_carries_the_contract_properties(make_harness: HarnessFactory) -> None:
    async with make_harness(Recorder()) as harness:
        result = await harness.run_release()
        await harness.wait_for(lambda: len(harness.heartbeats) >= 1, "a heartbeat")

    properties = harness.backend.properties  # type: ignore[attr-defined]
    sent = [*result.replies, *result.progress, harness.heartbeats[0]]
    for message in sent:
        amqp = properties[message.message_id]
        assert amqp.content_type == "application/json"
        assert amqp.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert amqp.type == message.kind.value
        assert amqp.headers[SCHEMA_VERSION_HEADER] == 1
        assert amqp.user_id == "guest"
        assert (amqp.app_id or "").startswith("task_sdk/")
        expected_correlation = None if isinstance(message, Heartbeat) else result.release.id
        assert amqp.correlation_id == expected_correlation
        assert amqp.routing_key == f"reply.{SERVICE}.{message.kind.value}"


async def test_a_connection_cut_during_a_quick_step_still_replies_exactly_once(
    make_harness: HarnessFactory, proxy: TcpProxy, amqp_url: str, namespace: str
) -> None:
    handler = Recorder(initialize_seconds=1.0)
    harness = make_harness(handler, amqp_url=through(proxy, amqp_url))
    initialize = harness.command(Action.INITIALIZE, make_release())
    await harness.send(initialize)
    assert await asyncio.to_thread(handler.initialize_started.wait, 5)

    proxy.cut()  # the delivery is unacked: the broker requeues it and redelivers it after the reconnection
    reply = await harness.reply_to(initialize, within=15)
    await harness.drain(1.5)
    await harness.stop()

    assert reply.outcome is Outcome.ACCEPTED
    assert _distinct_replies(harness, initialize.message_id) == 1
    assert handler.calls["initialize"] == 1  # the redelivery was answered, not re-run
    assert proxy.connections_made >= 2
    assert await waiting_in_queue(amqp_url, Topology(namespace).task_queue(SERVICE)) == 0  # and acked


async def test_a_connection_cut_during_processing_still_replies_exactly_once(
    make_harness: HarnessFactory, proxy: TcpProxy, amqp_url: str
) -> None:
    handler = Recorder(process_seconds=1.0, steps=10)
    harness = make_harness(handler, amqp_url=through(proxy, amqp_url))
    start = harness.command(Action.START, make_release())
    await harness.send(start)
    await harness.wait_for(lambda: len(harness.reports(start)) > 0, "progress from process()")

    proxy.pause()
    proxy.cut()  # processing goes on; its reply is published during the outage, fails, and is retried
    assert await asyncio.to_thread(handler.process_done.wait, 10)
    await asyncio.sleep(0.5)
    proxy.resume()
    reply = await harness.reply_to(start, within=15)
    await harness.drain(1.0)

    assert reply.outcome is Outcome.STAGED
    assert _distinct_replies(harness, start.message_id) == 1
    assert handler.calls["process"] == 1
    # The consumer was restored on the new connection: the service takes commands again.
    assert (await harness.initialize(make_release())).outcome is Outcome.ACCEPTED


def _distinct_replies(harness: Harness, command_id: str) -> int:
    replies: list[TaskReply] = [reply for reply in harness.replies if reply.in_reply_to == command_id]
    return len({reply.message_id for reply in replies})


async def test_the_consumer_comes_back_after_the_broker_cancelled_it(
    make_harness: HarnessFactory, amqp_url: str, namespace: str
) -> None:
    harness = make_harness(Recorder())
    assert (await harness.initialize(make_release())).outcome is Outcome.ACCEPTED
    queue = Topology(namespace).task_queue(SERVICE)

    async with await aio_pika.connect(amqp_url) as connection:
        await (await connection.channel()).queue_delete(queue)  # the broker cancels the service's consumer
    async with asyncio.timeout(10):
        while await consumers_of(amqp_url, queue) != 1:
            await harness.drain(0.2)

    assert (await harness.initialize(make_release())).outcome is Outcome.ACCEPTED
