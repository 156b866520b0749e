"""What only a real broker can show: message properties, and surviving a cut connection.

The service under test connects through :class:`tests._proxy.TcpProxy`, so the test can cut its
connection (and refuse reconnections for a while) in the middle of a step, as the chaos run does.

"Exactly once" here means what the coordinator sees after dropping duplicates by ``message_id``:
a reply may be published more than once (a confirm lost with the connection, a redelivered
command answered from the outcome store), but every copy is the very same message, so exactly one
distinct reply per command remains, and the handler's work ran once.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractConnection, AbstractQueue

from schemas.broker_url import broker_user
from schemas.enums import Action, Outcome
from schemas.messages import Command, Heartbeat, TaskReply, encode
from schemas.topology import SCHEMA_VERSION_HEADER, Topology
from task_sdk import Runner
from task_sdk.testing import Harness, make_release
from tests._proxy import TcpProxy
from tests.sdk._rabbit import consumers_of, waiting_in_queue
from tests.sdk.conftest import HarnessFactory
from tests.sdk.handlers import SERVICE, Recorder
from tests.sdk.test_scale import SlowToStop

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
        while await consumers_of(amqp_url, queue) != harness.settings.concurrency:  # one per free slot
            await harness.drain(0.2)

    assert (await harness.initialize(make_release())).outcome is Outcome.ACCEPTED


async def test_after_a_cut_the_service_queue_is_consumed_again_at_once_whatever_the_control_queue(
    make_harness: HarnessFactory, proxy: TcpProxy, amqp_url: str, namespace: str
) -> None:
    """Every connection is cut and refused for a second (as in the chaos run) while the instance processes
    a release. Until the broker notices that a lost connection is gone (its heartbeat timeout, a minute or
    more, when the network rather than the peer dropped it), it keeps that connection's exclusive queue,
    bound to the instance's cancel key, and declaring the control queue again fails with RESOURCE_LOCKED:
    the test holds the control queue's name the same way, and also the first two new names the instance
    takes instead (``.1``, ``.2``), so that its first tries fail. The service's queue must be consumed
    again within seconds all the same (it waited for the control queue before, as long as the broker held
    it), the heartbeat healthy and saying what is missing; the control queue comes back on a later try, and
    a cancel sent to the instance reaches it while the old queue is still held."""
    handler = SlowToStop()
    harness = make_harness(handler, amqp_url=through(proxy, amqp_url), reconnect_seconds=1.0)
    await harness.start(heartbeats=True)
    runner, release = harness.runner, make_release()
    await harness.send(harness.command(Action.START, release))
    await harness.wait_for(handler.running.is_set, "process() running")
    topology = Topology(namespace)
    control = topology.control_queue(runner.service, runner.instance_id)

    proxy.pause()
    proxy.cut()
    async with _held(amqp_url, namespace, control, runner) as held:
        await _declare_exclusive(held, f"{control}.1")  # the new name the instance tries first
        # and the next one: the control queue stays missing for two tries (2 s), long enough for several
        # heartbeats to say so (with one try missing, now and then none fell in between)
        await _declare_exclusive(held, f"{control}.2")
        await asyncio.sleep(1.0)
        proxy.resume()
        loop = asyncio.get_running_loop()
        back_at = loop.time()
        await _steadily_consuming(runner, within=10.0)
        initialize = harness.command(Action.INITIALIZE, make_release())
        await harness.send(initialize)
        assert (await harness.reply_to(initialize, within=10.0)).outcome is Outcome.ACCEPTED
        assert loop.time() - back_at < 10.0

        await _control_queue_back(runner, within=10.0)
        cancel = harness.command(Action.CANCEL, release)
        await _send_to_instance(amqp_url, namespace, runner, cancel)  # the held queue takes a copy too
        assert (await harness.reply_to(cancel)).outcome is Outcome.CANCELED
        assert handler.journal == ["process stopped", "cancel"]

    said = [b for b in harness.heartbeats if "control queue is not consumed yet" in (b.detail or "")]
    assert said, "no heartbeat said the control queue was missing"
    assert all(b.healthy for b in said)
    assert "RESOURCE_LOCKED" in (said[-1].detail or "")
    await harness.stop()


@contextlib.asynccontextmanager
async def _held(
    amqp_url: str, namespace: str, name: str, runner: Runner
) -> AsyncIterator[AbstractConnection]:
    """``name`` declared exclusive on a connection of the test's own and bound to the instance's cancel key,
    as the broker keeps a lost connection's queue (once it let go of the cut connection's); the connection,
    open until the block ends."""
    connection = await aio_pika.connect(amqp_url)
    try:
        queue = await _declare_exclusive(connection, name)
        key = Topology.control_key(runner.service, runner.instance_id)
        await queue.bind(Topology(namespace).commands_exchange, routing_key=key)
        yield connection
    finally:
        await connection.close()


async def _declare_exclusive(connection: AbstractConnection, name: str, within: float = 5.0) -> AbstractQueue:
    async with asyncio.timeout(within):
        while True:
            channel = await connection.channel()
            try:
                return await channel.declare_queue(
                    name, exclusive=True, arguments=Topology.control_queue_arguments()
                )
            except aiormq.exceptions.ChannelLockedResource:  # the cut connection's, not deleted yet
                await asyncio.sleep(0.05)


async def _steadily_consuming(runner: Runner, within: float, steady: float = 1.0) -> None:
    """Wait until the runner's transport has said "consuming" for ``steady`` seconds in a row."""
    loop = asyncio.get_running_loop()
    since: float | None = None
    async with asyncio.timeout(within):
        while since is None or loop.time() - since < steady:
            consuming = runner._transport.health().consuming
            since = (since or loop.time()) if consuming else None
            await asyncio.sleep(0.05)


async def _control_queue_back(runner: Runner, within: float) -> None:
    async with asyncio.timeout(within):
        while True:
            if "control queue" not in (runner._transport.health().detail or ""):
                return
            await asyncio.sleep(0.05)


async def _send_to_instance(amqp_url: str, namespace: str, runner: Runner, command: Command) -> None:
    key = Topology.control_key(runner.service, runner.instance_id)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        commands = await channel.get_exchange(Topology(namespace).commands_exchange)
        message = aio_pika.Message(
            encode(command), message_id=command.message_id, user_id=broker_user(amqp_url)
        )
        await commands.publish(message, routing_key=key, mandatory=True)
