from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest

from coordinator.__main__ import broker_of
from coordinator.machine import Timeouts
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import Store, store_for
from rc_cli.client import AdminClient
from schemas.documents import Release
from schemas.enums import ReleaseState
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


@pytest.fixture
def settings(amqp_url: str, store_url: str, namespace: str) -> Settings:
    return fast_settings(amqp_url, store_url, namespace)


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
async def start_coordinator(store: Store) -> AsyncIterator[Callable[[Settings], Awaitable[Running]]]:
    running: list[Running] = []

    async def start(settings: Settings) -> Running:
        instance = Running(Coordinator(settings, store, broker_of(settings)))
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
async def admin(amqp_url: str, namespace: str) -> AsyncIterator[AdminClient]:
    async with AdminClient(amqp_url, namespace, timeout=10, operator="tester") as client:
        yield client


@pytest.fixture
async def services(
    amqp_url: str, namespace: str
) -> AsyncIterator[Callable[..., Awaitable[SimulatedService]]]:
    started: list[SimulatedService] = []

    async def start(name: str, **options: object) -> SimulatedService:
        service = await SimulatedService(amqp_url, namespace, name, **options).start()  # type: ignore[arg-type]
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
