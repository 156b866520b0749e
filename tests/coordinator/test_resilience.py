"""What others do to the broker cannot stop the coordinator (on a real RabbitMQ).

A service's queue redeclared with other arguments used to close the coordinator's shared channel: every
later publication failed while the coordinator still claimed to be active, and after a restart it never
became active again. A channel closed under the coordinator (an exchange deleted, say) used to leave it
publishing into nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta

import aio_pika
import pytest
from prometheus_client import REGISTRY

from coordinator.broker import Broker, Session
from coordinator.settings import Settings
from coordinator.store import Store
from schemas.enums import Action, ReleaseState
from schemas.messages import ListReleases, ListServices, PublishRelease, ReleasePage, RequireService
from schemas.topology import Topology
from tests.coordinator.fixtures import Asks, Running, wait_for_state, wait_until
from tests.coordinator.simulated import SimulatedService
from tests.coordinator.test_releases import call, create

StartService = Callable[..., Awaitable[SimulatedService]]


async def redeclare_as_classic(amqp_url: str, queue: str, exchange: str, key: str) -> None:
    """What a service user with configure rights could do: delete its quorum queue, make a classic one."""
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(queue, if_unused=False, if_empty=False)
        classic = await channel.declare_queue(queue, durable=True)
        await classic.bind(exchange, key)


async def test_a_queue_redeclared_with_other_arguments_harms_only_its_service(
    settings: Settings,
    start_coordinator: Callable[[Settings], Awaitable[Running]],
    admin: Asks,
    services: StartService,
    store: Store,
    amqp_url: str,
    namespace: str,
) -> None:
    topology = Topology(namespace)
    first = await start_coordinator(settings)
    await services("portal")
    await admin.request(RequireService(service="portal"))
    await first.shutdown()
    await redeclare_as_classic(
        amqp_url, topology.task_queue("portal"), topology.commands_exchange, topology.task_binding("portal")
    )

    await start_coordinator(settings)  # becomes active: the bad queue is reported, not fatal
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert "portal (its queue" in (canceled.state_reason or "")
    assert "PRECONDITION_FAILED - inequivalent arg" in (canceled.state_reason or "")
    answer = await admin.request(ListReleases())
    assert isinstance(answer.result, ReleasePage)
    assert [r.id for r in answer.result.releases] == [release_id]  # one create, one release
    refused = await admin.request(RequireService(service="portal"))
    assert not refused.ok
    assert (refused.error or "").startswith("cannot require portal: its queue")
    assert (await admin.request(ListServices())).ok  # and it goes on answering


async def test_a_channel_closed_under_the_coordinator_starts_a_new_session(
    settings: Settings,
    start_coordinator: Callable[[Settings], Awaitable[Running]],
    coordinator_broker: Broker,
    admin: Asks,
    services: StartService,
    store: Store,
    amqp_url: str,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deleting the announcements exchange makes the next announcement close the publishing channel: the
    session ends, a new one declares the topology again, and the release goes on. While the session is
    down (the test holds the next one back), ``rc_coordinator_active`` reads 0; once the new one is active,
    1. (Portal holds its publication: the publish deadline is a minute, so that a loaded machine does not
    fail the release before the new session has sent the announcement.)"""
    reconnect = asyncio.Event()
    monkeypatch.setattr(coordinator_broker, "connect", _held_after_the_first(coordinator_broker, reconnect))
    timeouts = dataclasses.replace(settings.timeouts, publish=timedelta(minutes=1))
    coordinator = await start_coordinator(dataclasses.replace(settings, timeouts=timeouts))
    for name in ("portal", "search-index"):
        await services(name, behaviour={Action.PUBLISH: None} if name == "portal" else None)
        await admin.request(RequireService(service=name))
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.exchange_delete(Topology(namespace).events_exchange)
    publishing = asyncio.create_task(call(admin, PublishRelease(release_id=release_id)))
    await wait_for_state(store, release_id, ReleaseState.PUBLISHING)
    await _eventually_active_reads(0)  # the session ended, and the next one is held back
    assert not coordinator.coordinator.active.is_set()
    reconnect.set()
    await _eventually_active_reads(1)
    await publishing
    await _eventually_no_outbox(store, release_id)  # the announcement went out on the new session
    # search-index's reply is stored within the reply write delay (portal's publication is held)
    stored = await wait_until(store, release_id, lambda r: r.tasks["search-index"].state.value == "published")
    assert stored.state is ReleaseState.PUBLISHING
    assert coordinator.coordinator.active.is_set()


async def test_a_consumer_the_broker_cancels_starts_a_new_session(
    settings: Settings,
    start_coordinator: Callable[[Settings], Awaitable[Running]],
    admin: Asks,
    services: StartService,
    store: Store,
    amqp_url: str,
    namespace: str,
) -> None:
    """Deleting the coordinator's reply queue makes the broker cancel its consumer (the connection and the
    channel stay open): the session ends, a new one declares the queue again and consumes it, and a
    release's replies are taken. A session that went on without its consumer would never take a reply."""
    topology = Topology(namespace)
    coordinator = await start_coordinator(settings)
    await services("portal")
    await admin.request(RequireService(service="portal"))
    async with await aio_pika.connect(amqp_url) as connection:
        channel = await connection.channel()
        await channel.queue_delete(topology.replies_queue, if_unused=False, if_empty=False)
        await _eventually_consumed(connection, topology.replies_queue)
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    assert coordinator.coordinator.active.is_set()


def _held_after_the_first(broker: Broker, reconnect: asyncio.Event) -> Callable[[str], Awaitable[Session]]:
    """``broker.connect``, but every session after the first waits for ``reconnect``."""
    connect = broker.connect
    made = 0

    async def connect_when_let(name: str) -> Session:
        nonlocal made
        made += 1
        if made > 1:
            await reconnect.wait()
        return await connect(name)

    return connect_when_let


async def _eventually_active_reads(expected: float, within: float = 15) -> None:
    """Until the coordinator's ``rc_coordinator_active`` gauge, as the metrics endpoint serves it, reads
    ``expected``."""
    deadline = asyncio.get_running_loop().time() + within
    while (found := REGISTRY.get_sample_value("rc_coordinator_active")) != expected:
        assert asyncio.get_running_loop().time() < deadline, f"rc_coordinator_active reads {found}"
        await asyncio.sleep(0.02)


async def _eventually_consumed(connection: aio_pika.abc.AbstractConnection, queue: str) -> None:
    """Until ``queue`` exists again with a consumer (a passive declare of a missing queue closes the
    channel that asked: one channel per try)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        channel = await connection.channel()
        try:
            found = await channel.declare_queue(queue, passive=True)
            if found.declaration_result.consumer_count:
                return
        except aio_pika.exceptions.ChannelNotFoundEntity:
            pass
        finally:
            if not channel.is_closed:
                await channel.close()
        assert asyncio.get_running_loop().time() < deadline, f"nobody consumes {queue} again"
        await asyncio.sleep(0.2)


async def _eventually_no_outbox(store: Store, release_id: str, within: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        release = await store.get(release_id)
        if release is not None and not release.outbox:
            return
        assert asyncio.get_running_loop().time() < deadline, f"still undelivered: {release}"
        await asyncio.sleep(0.1)
