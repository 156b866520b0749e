"""Fixtures of a real coordinator (a plugin of the suite, see ``tests/conftest.py``): its settings, its
store (SQLite, or MongoDB with ``BROKERS_AND_ENGINES``), its broker (RabbitMQ, or in memory with
``BOTH_BROKERS``), simulated services and an operator."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Protocol

import pytest

from coordinator.__main__ import broker_of
from coordinator.broker import Broker
from coordinator.broker.memory import MemoryBroker
from coordinator.hooks import Hooks
from coordinator.machine import Timeouts
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import Store, store_for
from rc_cli.client import AdminClient
from schemas.documents import Release
from schemas.enums import ReleaseState
from schemas.messages import AdminAnswer, AdminOperation
from schemas.topology import Topology
from tests._harness import delete_namespace
from tests.coordinator.peers import AdminPeer, AmqpPeer, MemoryPeer, Peer
from tests.coordinator.simulated import SimulatedService

SERVICES = ("file-service", "portal", "search-index")


def fast_settings(amqp_url: str, store_url: str, namespace: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "amqp_url": amqp_url,
        "store_url": store_url,
        "namespace": namespace,
        "timeouts": Timeouts(
            initialize=timedelta(seconds=5),
            process=timedelta(seconds=5),
            publish=timedelta(seconds=5),
            cancel=timedelta(seconds=3),
        ),
        "heartbeat_timeout": timedelta(seconds=5),
        "trusted_users": frozenset({"guest"}),
        "metrics_port": 0,
        "prefetch": 16,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


#: The brokers the behaviour tests run on: ``pytestmark = BOTH_BROKERS`` in a module runs each test on both.
BOTH_BROKERS = pytest.mark.parametrize("broker_kind", ["memory", "rabbitmq"], indirect=True)
#: Both brokers on the default store engine, and the MongoDB engine on the in-memory broker: each test of a
#: module with ``pytestmark = BROKERS_AND_ENGINES`` runs three times. The broker and the store engine meet
#: nowhere in such a test, so MongoDB on RabbitMQ would add time and no case (the crash tests of
#: ``test_faults.py`` run MongoDB on RabbitMQ).
BROKERS_AND_ENGINES = pytest.mark.parametrize(
    ("broker_kind", "engine"),
    [("memory", "sqlite"), ("rabbitmq", "sqlite"), ("memory", "mongodb")],
    indirect=True,
)
#: The broker user of the tests (a trusted one: it may answer for every service).
USER = "guest"


@pytest.fixture
def broker_kind(request: pytest.FixtureRequest) -> str:
    """``rabbitmq`` (a real broker) unless parametrized with :data:`BOTH_BROKERS`."""
    return str(getattr(request, "param", "rabbitmq"))


@pytest.fixture
def memory_broker(namespace: str) -> MemoryBroker:
    return MemoryBroker(Topology(namespace), user=USER, prefetch=16)


@pytest.fixture
async def broker_url(broker_kind: str, namespace: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The real broker's URL (its queues of the namespace deleted afterwards), or a placeholder in memory."""
    if broker_kind == "memory":
        yield f"amqp://{USER}:{USER}@memory.invalid/"
        return
    url = str(request.getfixturevalue("amqp_url"))
    yield url
    await delete_namespace(url, namespace)


@pytest.fixture
def settings(broker_url: str, store_url: str, namespace: str) -> Settings:
    return fast_settings(broker_url, store_url, namespace)


@pytest.fixture
def coordinator_broker(broker_kind: str, settings: Settings, request: pytest.FixtureRequest) -> Broker:
    if broker_kind == "memory":
        broker: MemoryBroker = request.getfixturevalue("memory_broker")
        return broker
    return broker_of(settings)


@pytest.fixture
def connect_peer(
    broker_kind: str, broker_url: str, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[Peer]]:
    """Connects a test's service or operator to the test's broker, as broker user :data:`USER`."""
    if broker_kind == "memory":
        broker: MemoryBroker = request.getfixturevalue("memory_broker")

        async def in_memory() -> Peer:
            return MemoryPeer(broker, USER)

        return in_memory

    async def over_amqp() -> Peer:
        return await AmqpPeer.connect(broker_url)

    return over_amqp


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    """The store the coordinators of the test use (opened here; its data is dropped at the end)."""
    store = store_for(settings.store, settings.database)
    await store.open()
    yield store
    await store.drop()


class Running:
    """A coordinator running in this test's event loop."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(coordinator.run(self.stop))

    async def started(self) -> Running:
        await asyncio.wait_for(self.coordinator.active.wait(), 15)
        return self

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 15)


@pytest.fixture
async def start_coordinator(
    store: Store, coordinator_broker: Broker
) -> AsyncIterator[Callable[[Settings], Awaitable[Running]]]:
    running: list[Running] = []

    async def start(settings: Settings, hooks: Hooks | None = None) -> Running:
        instance = Running(Coordinator(settings, store, coordinator_broker, hooks=hooks))
        running.append(instance)
        return await instance.started()

    yield start
    for instance in running:
        await instance.shutdown()


@pytest.fixture
async def coordinator(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> Running:
    return await start_coordinator(settings)


@pytest.fixture
async def patient_coordinator(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> Running:
    """A coordinator whose initialization and processing deadlines leave room for a slow test (several
    ``rc`` processes, or broker administration, while a release waits on a service, on a loaded machine)."""
    timeouts = dataclasses.replace(
        settings.timeouts, initialize=timedelta(minutes=5), process=timedelta(minutes=5)
    )
    return await start_coordinator(dataclasses.replace(settings, timeouts=timeouts))


@pytest.fixture
async def impatient_coordinator(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> Running:
    """A coordinator whose processing deadline is 2 s: for tests of a deadline that must pass (a silent
    service), which need not wait the usual 5 s."""
    timeouts = dataclasses.replace(settings.timeouts, process=timedelta(seconds=2))
    return await start_coordinator(dataclasses.replace(settings, timeouts=timeouts))


class Asks(Protocol):
    """What tests ask the coordinator through: ``rc``'s own client, or :class:`AdminPeer` in memory."""

    async def request(self, operation: AdminOperation, *, wait: float | None = None) -> AdminAnswer: ...


@pytest.fixture
async def admin(
    broker_kind: str, broker_url: str, namespace: str, connect_peer: Callable[[], Awaitable[Peer]]
) -> AsyncIterator[Asks]:
    if broker_kind == "memory":
        peer = await AdminPeer(await connect_peer(), namespace).start()
        yield peer
        await peer.close()
        return
    async with AdminClient(broker_url, namespace, timeout=10, operator="tester") as client:
        yield client


@pytest.fixture
async def services(
    connect_peer: Callable[[], Awaitable[Peer]], namespace: str
) -> AsyncIterator[Callable[..., Awaitable[SimulatedService]]]:
    started: list[SimulatedService] = []

    async def start(name: str, **options: object) -> SimulatedService:
        service = await SimulatedService(connect_peer, namespace, name, **options).start()  # type: ignore[arg-type]
        started.append(service)
        return service

    yield start
    for service in started:
        await service.stop()


async def wait_until(
    store: Store, release_id: str, condition: Callable[[Release], bool], within: float = 15
) -> Release:
    """Poll the store until the release meets ``condition``."""
    deadline = asyncio.get_running_loop().time() + within
    while (release := await store.get(release_id)) is None or not condition(release):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{release_id} never met the condition: {release}")
        await asyncio.sleep(0.05)
    return release


async def wait_for_state(store: Store, release_id: str, *states: ReleaseState, within: float = 15) -> Release:
    """Poll the store until the release is in one of ``states``."""
    deadline = asyncio.get_running_loop().time() + within
    release = await store.get(release_id)
    while release is None or release.state not in states:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"{release_id} is {release.state if release else 'missing'}, wanted {states}"
            )
        await asyncio.sleep(0.05)
        release = await store.get(release_id)
    return release
