"""Unique versions under concurrency: many publications at once through one coordinator, and two
coordinators that both believe they lead (a forced split) on one store, where the store's unique index
and the ``VersionTaken`` retry keep every version distinct and increasing. Both on each store engine."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta

import pytest

from coordinator.broker.memory import MemoryBroker
from coordinator.hooks import Hooks
from coordinator.machine import Timeouts
from coordinator.service import Coordinator
from coordinator.settings import Settings
from coordinator.store import Store, VersionTaken, store_for
from rc_cli.client import AdminClient
from schemas.documents import AuditEvent, Release
from schemas.enums import ReleaseState
from schemas.messages import PublishRelease
from schemas.topology import Topology
from tests.cli.conftest import run_rc
from tests.coordinator.fixtures import USER, Asks, Running, wait_for_state
from tests.coordinator.peers import AdminPeer, MemoryPeer
from tests.coordinator.simulated import SimulatedService
from tests.coordinator.test_releases import call, create, setup
from tests.sabotage.plugin import caught_by

StartService = Callable[..., Awaitable[SimulatedService]]
PUBLICATIONS = 20


def as_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def publishing_order(releases: Sequence[Release], events: dict[str, list[AuditEvent]]) -> list[str]:
    """The releases' final versions in the order of their publications' times (the transition's, taken as
    the request arrived, before the coordinator's one-at-a-time publish lock). Publications with the same
    time (MongoDB keeps milliseconds) are in no order the store can tell: those are sorted by version."""

    def published_at(release: Release) -> tuple[datetime, tuple[int, ...]]:
        moved = [
            e
            for e in events[release.id]
            if e.state_before is ReleaseState.STAGED and e.state_after is ReleaseState.PUBLISHING
        ]
        assert len(moved) == 1, f"{release.id} went to publishing {len(moved)} times"
        return moved[0].at, as_tuple(release.final_version or "")

    return [r.final_version or "" for r in sorted(releases, key=published_at)]


@pytest.mark.parametrize("engine", ["sqlite", "mongodb"], indirect=True)
async def test_twenty_publications_at_once_get_distinct_increasing_versions(
    settings: Settings,
    start_coordinator: Callable[..., Awaitable[Running]],
    admin: Asks,
    services: StartService,
    store: Store,
    amqp_url: str,
    namespace: str,
) -> None:
    """Four ``rc`` processes and four operators' clients publish 20 staged releases at once."""
    patient = timedelta(minutes=5)  # 20 releases at once on a loaded machine: no deadline may interfere
    timeouts = Timeouts(initialize=patient, process=patient, publish=patient, cancel=patient)
    await start_coordinator(dataclasses.replace(settings, timeouts=timeouts))
    await setup(admin, services)
    ids = [await create(admin) for _ in range(PUBLICATIONS)]
    for release_id in ids:
        await wait_for_state(store, release_id, ReleaseState.STAGED, within=60)
    by_rc, by_clients = ids[:4], ids[4:]
    env = {"RC_AMQP_URL": amqp_url, "RC_NAMESPACE": namespace, "RC_OPERATOR": "tester", "RC_TIMEOUT": "60"}

    async def client_publishes(chunk: list[str]) -> None:
        async with AdminClient(amqp_url, namespace, timeout=60, operator="tester") as client:
            answers = await asyncio.gather(*(client.request(PublishRelease(release_id=r)) for r in chunk))
        assert all(a.ok for a in answers), [a.error for a in answers]

    outcomes = await asyncio.gather(
        *(run_rc("release", "publish", r, env=env, limit=120) for r in by_rc),
        *(client_publishes(by_clients[i::4]) for i in range(4)),
    )
    for outcome in outcomes[:4]:
        assert outcome is not None
        assert outcome.code == 0, outcome
    published = [await wait_for_state(store, r, ReleaseState.PUBLISHED, within=60) for r in ids]
    events = {r: (await store.event_page(r, 200)).items for r in ids}
    versions = publishing_order(published, events)
    assert sorted(versions, key=as_tuple) == [f"0.{n}.0" for n in range(1, PUBLICATIONS + 1)]
    assert versions == sorted(versions, key=as_tuple)  # a later publication never has a lower version


class SlowToWrite:
    """A second coordinator's store handle whose first write of a publication waits until ``go`` is set:
    it decided its final version before the other coordinator stored the same one."""

    def __init__(self, store: Store, go: asyncio.Event) -> None:
        self.store = store
        self.go = go
        self.waiting = asyncio.Event()
        self.version_taken = 0

    def install(self) -> None:
        write = self.store.compare_and_set

        async def compare_and_set(before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
            if after.state is ReleaseState.PUBLISHING and not self.waiting.is_set():
                self.waiting.set()
                await self.go.wait()
            try:
                await write(before, after, events)
            except VersionTaken:
                self.version_taken += 1
                raise

        self.store.compare_and_set = compare_and_set  # type: ignore[method-assign]


@pytest.mark.parametrize("broker_kind", ["memory"], indirect=True)
@pytest.mark.parametrize("engine", ["sqlite", "mongodb"], indirect=True)
@caught_by("skip-unique-check")
async def test_two_coordinators_that_both_lead_never_store_one_version_twice(
    settings: Settings,
    start_coordinator: Callable[..., Awaitable[Running]],
    admin: Asks,
    services: StartService,
    store: Store,
    namespace: str,
) -> None:
    """A split: coordinator B runs on a broker of its own (so it leads there too) and on the same store.
    B decides ``0.1.0`` for one release, A stores ``0.1.0`` for another before B writes: B's write is
    refused (VersionTaken), B decides again from the stored highest version and stores ``0.2.0``."""
    stored_by_a = asyncio.Event()

    async def note_publication(release: Release) -> None:
        if release.state is ReleaseState.PUBLISHING:
            stored_by_a.set()

    await start_coordinator(settings, Hooks(stored=note_publication))
    await setup(admin, services)
    first, second = await create(admin), await create(admin)
    for release_id in (first, second):
        await wait_for_state(store, release_id, ReleaseState.STAGED)

    other_broker = MemoryBroker(Topology(namespace), user=USER, prefetch=16)
    other_store = store_for(settings.store, settings.database)
    await other_store.open()
    slow = SlowToWrite(other_store, stored_by_a)
    slow.install()
    b = await Running(Coordinator(settings, other_store, other_broker)).started()
    b_admin = await AdminPeer(MemoryPeer(other_broker, USER), namespace).start()
    try:
        by_b = asyncio.create_task(b_admin.request(PublishRelease(release_id=second), wait=30))
        await asyncio.wait_for(slow.waiting.wait(), 15)  # B decided its version, and waits to write it
        await call(admin, PublishRelease(release_id=first))
        answer = await by_b
        assert answer.ok, answer.error
    finally:
        await b_admin.close()
        await b.shutdown()
        await other_store.close()
    assert slow.version_taken == 1  # the retry path ran once
    a_release, b_release = await store.get(first), await store.get(second)
    assert a_release is not None
    assert b_release is not None
    assert (a_release.final_version, b_release.final_version) == ("0.1.0", "0.2.0")
    moves = [(e.state_before, e.state_after) for e in (await store.event_page(second, 100)).items]
    assert moves.count((ReleaseState.STAGED, ReleaseState.PUBLISHING)) == 1
