"""Each client connects to the first reachable URL of its list and, when that connection is lost, moves to the
next one: the task SDK's robust connection, the coordinator's session and the operators' client.

Two TCP proxies in front of the local broker stand for two nodes (no cluster needed): which proxy a client
went through says which "node" it chose.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator

import aio_pika
import pytest

from coordinator.broker.rabbitmq import RabbitBroker
from rc_cli.client import AdminClient
from rc_dashboard.feed import BrokerFeed
from schemas.topology import Topology
from task_sdk._failover import connect_robust
from tests._cluster import wait_for
from tests._proxy import TcpProxy

DEAD_URL = "amqp://guest:guest@127.0.0.1:9/"


@pytest.fixture
async def nodes(amqp_url: str) -> AsyncIterator[tuple[TcpProxy, TcpProxy]]:
    parts = urllib.parse.urlsplit(amqp_url)
    first = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    second = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    async with first, second:
        yield first, second


def through(amqp_url: str, proxy: TcpProxy) -> str:
    parts = urllib.parse.urlsplit(amqp_url)
    return parts._replace(netloc=f"{parts.netloc.rsplit('@', 1)[0]}@127.0.0.1:{proxy.port}").geturl()


def lose(proxy: TcpProxy) -> None:
    """The node behind ``proxy`` goes away: its connections drop and new ones are refused."""
    proxy.pause()
    proxy.cut()


async def test_the_sdk_connection_skips_a_dead_node_and_moves_to_the_next_on_loss(
    amqp_url: str, nodes: tuple[TcpProxy, TcpProxy], namespace: str
) -> None:
    first, second = nodes
    urls = [DEAD_URL, through(amqp_url, first), through(amqp_url, second)]
    connection = await connect_robust(urls, timeout=5, reconnect_interval=0.2)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{namespace}.rotation", auto_delete=True)
        assert (first.connections_made, second.connections_made) == (1, 0)
        lose(first)
        await wait_for(lambda: second.connections_made == 1, 20, "reconnected through the second node")
        await wait_for(lambda: not channel.is_closed, 20, "the channel restored")
        await channel.default_exchange.publish(aio_pika.Message(b"after the switch"), routing_key=queue.name)
        message = await wait_for(lambda: queue.get(fail=False), 10, "the message, on the restored queue")
        assert message.body == b"after the switch"
        await message.ack()
    finally:
        await connection.close()


async def test_a_coordinator_session_after_a_loss_starts_on_the_next_node(
    amqp_url: str, nodes: tuple[TcpProxy, TcpProxy], namespace: str
) -> None:
    first, second = nodes
    urls = f"{through(amqp_url, first)},{through(amqp_url, second)}"
    broker = RabbitBroker(urls, Topology(namespace), publish_timeout=5, prefetch=1)
    session = await broker.connect("rotation-test")
    assert (first.connections_made, second.connections_made) == (1, 0)
    first.cut()  # the node is still there: the next session still moves on
    await asyncio.wait_for(session.closed(), 10)
    following = await broker.connect("rotation-test")
    try:
        assert (first.connections_made, second.connections_made) == (1, 1)
        assert following.node == broker.rotation.urls[1]
        standby = await broker.connect("rotation-test")  # closed by its owner, not lost: no move
        await standby.close()
        assert broker.rotation.current == broker.rotation.urls[1]
    finally:
        await following.close()


async def test_the_operators_client_reconnects_to_the_next_node(
    amqp_url: str, nodes: tuple[TcpProxy, TcpProxy], namespace: str
) -> None:
    first, second = nodes
    urls = f"{through(amqp_url, first)},{through(amqp_url, second)}"
    async with AdminClient(urls, namespace, timeout=5) as client:
        assert (first.connections_made, second.connections_made) == (1, 0)
        lose(first)
        await wait_for(lambda: not client._connected(), 10, "the connection seen lost")
        await client.connect()  # what every request does first when its connection is gone
        assert (first.connections_made, second.connections_made) == (1, 1)


class Connections:
    """A dashboard feed's listener that only keeps what the feed says of its connection."""

    def __init__(self) -> None:
        self.changes: list[bool] = []

    def observe(self, view: object, *, complete: bool = True) -> None: ...
    def hint(self, release_id: str, service: str | None = None, message_id: str | None = None) -> None: ...
    def progress(self, report: object) -> None: ...

    def connection_changed(self, connected: bool, text: str, *, progress_feed: bool = False) -> None:
        self.changes.append(connected)


async def test_the_dashboards_live_feed_moves_to_the_next_node(
    amqp_url: str, nodes: tuple[TcpProxy, TcpProxy], namespace: str
) -> None:
    first, second = nodes
    topology = Topology(namespace)
    connection = await aio_pika.connect(amqp_url)
    async with connection:  # the exchanges the feed binds to, as a coordinator would have declared them
        channel = await connection.channel()
        for name in (topology.events_exchange, topology.replies_exchange):
            await channel.declare_exchange(name, "topic", durable=True)
    listener = Connections()
    urls = f"{through(amqp_url, first)},{through(amqp_url, second)}"
    feed = BrokerFeed(urls, namespace, listener, reconnect_seconds=0.2)
    stop = asyncio.Event()
    running = asyncio.create_task(feed.run(stop))
    try:
        await wait_for(lambda: listener.changes == [True], 10, "live through the first node")
        lose(first)
        await wait_for(
            lambda: listener.changes[-1:] == [True] and len(listener.changes) >= 3, 20, "live again"
        )
        assert (first.connections_made, second.connections_made) == (1, 1)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
