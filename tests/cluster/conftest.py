"""Fixtures of the cluster tests: one three-node RabbitMQ cluster per session, started by
``scripts/rabbitmq-cluster.sh`` (ports ``$RC_TEST_CLUSTER_PORTS``, default 5721-5723) and stopped, with its
state deleted, at the end of the session whatever happened. A cluster that cannot start fails every test that
needs it, with the script's reason: never a skip.

The coordinators and task services run in the test's event loop (real ``Coordinator`` and ``task_sdk.serve``),
each with its own list of broker URLs, so a test decides which node each one is connected to first.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from coordinator.__main__ import broker_of
from coordinator.machine import Timeouts
from coordinator.service import Coordinator
from coordinator.store import Store, store_for
from rc_cli.client import AdminClient
from schemas.broker_url import broker_user
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState
from schemas.messages import (
    AdminOperation,
    AdminResult,
    CreateRelease,
    ListServices,
    ReleaseResult,
    RequireService,
    ServiceList,
    ShowRelease,
)
from task_sdk import ProgressReporter, Settings, TaskHandler, serve
from tests._cluster import Cluster, ClusterUnavailable, claim, wait_for
from tests.coordinator.fixtures import fast_settings

#: The AMQP ports of the test cluster: ``$RC_TEST_CLUSTER_PORTS``, else the first three free from 5721 on
#: (so that two test sessions on one machine each get a cluster of their own).
CONFIGURED_PORTS = os.environ.get("RC_TEST_CLUSTER_PORTS", "").split()


# ---------------------------------------------------------------------- the cluster


class _Starter:
    """Starts the cluster in a background thread as soon as the session knows it will need it."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.error: ClusterUnavailable | None = None
        self._thread: threading.Thread | None = None

    def begin(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._start, name="rabbitmq-cluster", daemon=True)
            self._thread.start()

    def _start(self) -> None:
        try:
            if CONFIGURED_PORTS:
                ports = [int(p) for p in CONFIGURED_PORTS]
                self.cluster = Cluster((ports[0], ports[1], ports[2]))
                self.cluster.clean()  # what an interrupted session may have left
            else:
                self.cluster = claim(5721)
            self.cluster.start()
        except (ClusterUnavailable, ValueError, IndexError) as error:
            self.error = ClusterUnavailable(str(error))

    def wait(self) -> Cluster:
        self.begin()
        assert self._thread is not None
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.cluster is not None
        return self.cluster

    def clean(self) -> list[str]:
        """Stop the cluster and delete its state; what of it still runs afterwards (nothing, or a bug)."""
        if self.cluster is None:
            return []
        with contextlib.suppress(ClusterUnavailable):
            self.cluster.clean()
        return self.cluster.leftovers()


_STARTER = _Starter()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any("cluster" in getattr(item, "fixturenames", ()) for item in items):
        _STARTER.begin()  # in the background while the tests before these run


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    try:
        try:
            started = _STARTER.wait()
        except ClusterUnavailable as error:
            pytest.fail(f"the three-node RabbitMQ cluster did not start: {error}", pytrace=False)
        yield started
    finally:
        left = _STARTER.clean()
        if left:  # the script's stop must leave no node behind, whatever the tests did to the nodes
            pytest.fail(f"rabbitmq-cluster.sh left nodes running: {', '.join(left)}", pytrace=False)


@pytest.fixture
async def cluster_namespace(cluster: Cluster) -> AsyncIterator[str]:
    name = f"rctest-{uuid.uuid4().hex[:8]}"
    yield name
    with contextlib.suppress(Exception):  # a node stopped by a failed test must not hide its failure
        await cluster.delete_namespace(name)


# ---------------------------------------------------------------------- coordinators


@dataclass
class RunningCoordinator:
    coordinator: Coordinator
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


StartCoordinator = Callable[..., Awaitable[RunningCoordinator]]


@pytest.fixture
async def coordinators(store_url: str, cluster_namespace: str) -> AsyncIterator[StartCoordinator]:
    """``await start(amqp_url, wait_active=True, **settings)``: a coordinator in this event loop. The
    coordinators of one test share one store (the suite's ``store_url``)."""
    running: list[RunningCoordinator] = []
    stores: list[Store] = []

    async def start(amqp_url: str, *, wait_active: bool = True, **overrides: Any) -> RunningCoordinator:
        timeouts = Timeouts(
            initialize=timedelta(seconds=20),
            process=timedelta(seconds=90),
            publish=timedelta(seconds=30),
            cancel=timedelta(seconds=20),
        )
        values: dict[str, Any] = {"timeouts": timeouts, "heartbeat_timeout": timedelta(seconds=20)}
        settings = fast_settings(amqp_url, store_url, cluster_namespace, **(values | overrides))
        if not stores:
            store = store_for(settings.store, settings.database)
            await store.open()
            stores.append(store)
        instance = RunningCoordinator(Coordinator(settings, stores[0], broker_of(settings)))
        instance.task = asyncio.create_task(instance.coordinator.run(instance.stop))
        running.append(instance)
        if wait_active:
            await asyncio.wait_for(instance.coordinator.active.wait(), 30)
        return instance

    yield start
    for instance in running:
        instance.stop.set()
    await asyncio.gather(*(i.task for i in running if i.task), return_exceptions=True)
    for store in stores:
        await store.drop()


# ---------------------------------------------------------------------- task services


class Recording(TaskHandler):
    """Counts the steps it ran; ``process`` waits for :attr:`go` once it has begun (the test sets it)."""

    service = "recording"

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.processing = asyncio.Event()
        self.go = asyncio.Event()

    @classmethod
    def named(cls, name: str) -> Recording:
        subclass: type[Recording] = type(f"Recording_{name.replace('-', '_')}", (cls,), {"service": name})
        return subclass()

    async def initialize(self, release: Any) -> None:
        self.calls["initialize"] += 1

    async def process(self, release: Any, progress: ProgressReporter) -> None:
        self.calls["process"] += 1
        self.processing.set()
        await self.go.wait()

    async def publish(self, release: Any) -> None:
        self.calls["publish"] += 1

    async def cancel(self, release: Any) -> None:
        self.calls["cancel"] += 1


StartService = Callable[[str, str], Awaitable[Recording]]


@pytest.fixture
async def services(cluster_namespace: str) -> AsyncIterator[StartService]:
    """``await start(name, amqp_url)``: a real task service (``task_sdk.serve``) in this event loop."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def start(name: str, amqp_url: str) -> Recording:
        handler = Recording.named(name)
        settings = Settings(
            amqp_url=amqp_url,
            coordinator_user=broker_user(amqp_url),  # the coordinator of these tests
            namespace=cluster_namespace,
            heartbeat_seconds=0.5,
            reconnect_seconds=0.3,
            publish_timeout=30.0,
            shutdown_timeout=3.0,
        )
        tasks.append(asyncio.create_task(serve(handler, settings, stop=stop)))
        return handler

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)


# ---------------------------------------------------------------------- the operator


@pytest.fixture
async def operator(cluster: Cluster, cluster_namespace: str) -> AsyncIterator[AdminClient]:
    """An operator's client; node 3 first (the tests stop nodes 1 and 2)."""
    async with AdminClient(
        cluster.urls([3, 2, 1]), cluster_namespace, timeout=10, operator="tester"
    ) as client:
        yield client


async def ask(admin: AdminClient, operation: AdminOperation) -> AdminResult | None:
    """The coordinator's answer to ``operation`` (asked again while no coordinator answers)."""
    answer = await wait_for(lambda: _answer(admin, operation), 60, f"an answer to {operation.op}")
    assert answer.ok, answer.error
    return answer.result  # type: ignore[no-any-return]


async def _answer(admin: AdminClient, operation: AdminOperation) -> Any:
    try:
        return await admin.request(operation, wait=5)
    except Exception:
        return None


async def require_healthy(admin: AdminClient, names: list[str]) -> None:
    """Require the services, then wait until the coordinator has a heartbeat from each."""
    for name in names:
        await ask(admin, RequireService(service=name))

    async def all_beating() -> bool:
        result = await ask(admin, ListServices())
        assert isinstance(result, ServiceList)
        beating = {s.name for s in result.services if s.last_heartbeat_at is not None and s.healthy}
        return set(names) <= beating

    await wait_for(all_beating, 30, f"heartbeats from {names}")


async def create_release(admin: AdminClient) -> str:
    result = await ask(admin, CreateRelease(name="Cluster release", studies=("SD_ABCDEFGH",)))
    assert isinstance(result, ReleaseResult)
    return result.release.id


async def release_in(
    admin: AdminClient, release_id: str, *states: ReleaseState, within: float = 60
) -> ReleaseView:
    """Wait until the release is in one of ``states`` (AssertionError with its state otherwise)."""
    seen: list[ReleaseView] = []

    async def reached() -> ReleaseView | None:
        result = await ask(admin, ShowRelease(release_id=release_id, events=0))
        assert isinstance(result, ReleaseResult)
        seen.append(result.release)
        return result.release if result.release.state in states else None

    try:
        view: ReleaseView = await wait_for(reached, within, f"{release_id} in {[s.value for s in states]}")
    except AssertionError:
        last = seen[-1] if seen else None
        raise AssertionError(
            f"{release_id} is {last.state if last else 'unknown'} ({last.state_reason if last else ''}), "
            f"wanted {[s.value for s in states]}"
        ) from None
    return view
