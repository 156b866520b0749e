"""Clients switch nodes: a publication whose confirm was lost in the switch is sent again on the next node,
and message-id deduplication makes the second copy harmless; the command line tries each node in turn.

The loss is made exact with a proxy in front of node 1 that, once told to hold, still forwards what the client
publishes (the broker routes it) but keeps back what the broker answers (its confirm); cutting the proxy then
makes the client switch nodes with that confirm lost.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from rc_cli.client import AdminClient
from schemas.enums import EventKind, ReleaseState
from schemas.messages import EventPage, ListEvents, PublishRelease
from schemas.topology import Topology
from tests._cluster import Cluster, wait_for
from tests.cluster.conftest import (
    StartCoordinator,
    StartService,
    ask,
    create_release,
    release_in,
    require_healthy,
)
from tests.cluster.holding_proxy import HoldingProxy

#: Nothing listens there: the first URL of a list that must be skipped.
DEAD_URL = "amqp://guest:guest@127.0.0.1:9/"


async def events_of(admin: AdminClient, release_id: str) -> EventPage:
    page = await ask(admin, ListEvents(release_id=release_id, limit=500))
    assert isinstance(page, EventPage)
    return page


async def test_a_reply_whose_confirm_was_lost_in_the_switch_is_sent_again_and_counted_once(
    cluster: Cluster, coordinators: StartCoordinator, services: StartService, operator: AdminClient
) -> None:
    async with HoldingProxy("127.0.0.1", cluster.port(1)) as proxy:
        await coordinators(cluster.urls([2]))
        via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        # The first URL is dead: the service starts on the proxy (node 1); node 3 is next.
        portal = await services("portal", f"{DEAD_URL},{via_proxy},{cluster.url(3)}")
        await require_healthy(operator, ["portal"])
        release_id = await create_release(operator)
        await wait_for(portal.processing.is_set, 30, "process() begun")

        proxy.hold()
        portal.go.set()  # the staged reply goes out; the broker routes it, its confirm is held
        staged = await release_in(operator, release_id, ReleaseState.STAGED)
        assert staged.state is ReleaseState.STAGED
        proxy.cut()  # the service loses node 1 without the confirm, and moves to node 3

        page = await events_of(operator, release_id)
        (transition,) = [
            e
            for e in page.events
            if e.state_after is ReleaseState.STAGED and e.state_before is ReleaseState.RUNNING
        ]
        assert transition.message_id is not None

        async def sent_again() -> bool:
            events = (await events_of(operator, release_id)).events
            return any(
                e.kind is EventKind.REFUSED
                and e.message_id == transition.message_id
                and "duplicate" in e.reason
                for e in events
            )

        await wait_for(sent_again, 60, "the same reply (same message id) received again, as a duplicate")
        await ask(operator, PublishRelease(release_id=release_id))
        await release_in(operator, release_id, ReleaseState.PUBLISHED)
        assert portal.calls == Counter(initialize=1, process=1, publish=1)
        transitions = [
            e for e in (await events_of(operator, release_id)).events if e.kind is EventKind.TRANSITION
        ]
        assert [e.state_after for e in transitions].count(ReleaseState.STAGED) == 1
        await wait_for(
            lambda: cluster.nodes_of_connections("portal@") == [3], 30, "portal connected to node 3"
        )


async def test_a_command_whose_confirm_was_lost_in_the_switch_is_sent_again_and_runs_once(
    cluster: Cluster,
    coordinators: StartCoordinator,
    services: StartService,
    operator: AdminClient,
    cluster_namespace: str,
) -> None:
    topology = Topology(cluster_namespace)
    # The proxy holds as soon as the coordinator publishes a start command (its routing key goes by).
    async with HoldingProxy("127.0.0.1", cluster.port(1), hold_after=b".start") as proxy:
        via_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        await coordinators(f"{via_proxy},{cluster.url(2)}", broker_publish_timeout=120.0)
        async with CommandTap(cluster.url(3), topology) as seen:
            handlers = {name: await services(name, cluster.url(3)) for name in ("portal", "search-index")}
            await require_healthy(operator, list(handlers))
            release_id = await create_release(operator)
            for name, handler in handlers.items():
                await wait_for(handler.processing.is_set, 30, f"{name}: process() begun")
            assert proxy.holding.is_set()  # the start commands were routed; their confirms are held

            def started() -> dict[tuple[str, str], int]:
                return {key: count for key, count in seen.items() if key[0].endswith(".start")}

            starts = await wait_for(lambda: len(started()) == 2 and started(), 10, "both start commands seen")
            assert sorted(starts.values()) == [1, 1]

            proxy.cut()  # the coordinator loses node 1 and starts a new session on node 2

            def each_start_sent_twice() -> bool:
                again = started()
                return again.keys() == starts.keys() and all(count == 2 for count in again.values())

            await wait_for(each_start_sent_twice, 60, "each start command (same message id) published again")
            for handler in handlers.values():
                handler.go.set()
            await release_in(operator, release_id, ReleaseState.STAGED)
            await ask(operator, PublishRelease(release_id=release_id))
            await release_in(operator, release_id, ReleaseState.PUBLISHED)
            for handler in handlers.values():
                assert handler.calls == Counter(initialize=1, process=1, publish=1)


class CommandTap:
    """Counts every command published on the commands exchange, by (routing key, message id)."""

    def __init__(self, url: str, topology: Topology) -> None:
        self.url = url
        self.topology = topology
        self.seen: Counter[tuple[str, str]] = Counter()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> Counter[tuple[str, str]]:
        self._connection = await aio_pika.connect(self.url)
        channel = await self._connection.channel()
        exchange = await channel.declare_exchange(self.topology.commands_exchange, "topic", durable=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "task.#")

        async def count(message: AbstractIncomingMessage) -> None:
            self.seen[(message.routing_key or "", message.message_id or "")] += 1

        await queue.consume(count, no_ack=True)
        return self.seen

    async def __aexit__(self, *_: object) -> None:
        if self._connection is not None:
            await self._connection.close()


async def test_rc_tries_each_node_in_turn(
    cluster: Cluster, coordinators: StartCoordinator, cluster_namespace: str
) -> None:
    await coordinators(cluster.urls([2]))
    urls = f"{DEAD_URL},{cluster.url(2)}"
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "rc_cli",
            "--amqp-url",
            urls,
            "--namespace",
            cluster_namespace,
            "service",
            "list",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "rc_cli", "--amqp-url", "amqp://a:b@h1/,amqp://c:d@h2/", "service", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert refused.stderr == (
        "rc: the broker URL (--amqp-url, RC_AMQP_URL): "
        "every URL must log in as the same broker user, not a, c\n"
    )
