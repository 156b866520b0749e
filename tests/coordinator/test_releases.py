"""The release lifecycle: a coordinator driving simulated services, on a real RabbitMQ and on the in-memory
broker (SQLite store), and on the MongoDB engine (in-memory broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence

import pytest

from coordinator.store import Store
from schemas.documents import AuditEvent, OutboxEntry, Release
from schemas.enums import Action, EventKind, Outcome, ReleaseState, TaskState
from schemas.messages import (
    BUSY_DETAIL,
    AdminOperation,
    CancelRelease,
    CreateRelease,
    HoldRelease,
    PublishRelease,
    ReleaseResult,
    RequireService,
    ShowRelease,
    UnholdRelease,
)
from tests.coordinator.fixtures import (
    BROKERS_AND_ENGINES,
    SERVICES,
    Asks,
    Running,
    wait_for_state,
    wait_until,
)
from tests.coordinator.simulated import SimulatedService
from tests.sabotage.plugin import caught_by

StartService = Callable[..., Awaitable[SimulatedService]]
#: Every test here runs on SQLite with a real RabbitMQ and with the in-memory broker, and on MongoDB with the
#: in-memory broker.
pytestmark = BROKERS_AND_ENGINES


async def call(admin: Asks, operation: AdminOperation) -> ReleaseResult:
    answer = await admin.request(operation)
    assert answer.ok, answer.error
    assert isinstance(answer.result, ReleaseResult)
    return answer.result


async def refusal(admin: Asks, operation: AdminOperation) -> str:
    answer = await admin.request(operation)
    assert not answer.ok
    assert answer.error is not None
    return answer.error


async def setup(
    admin: Asks, services: StartService, **behaviours: dict[str, object]
) -> list[SimulatedService]:
    started = []
    for name in SERVICES:
        await admin.request(RequireService(service=name))
        started.append(await services(name, **behaviours.get(name.replace("-", "_"), {})))
    return started


async def create(admin: Asks, *, major: bool = False) -> str:
    result = await call(admin, CreateRelease(name="Fall release", studies=("SD_ABCDEFGH",), is_major=major))
    return result.release.id


async def test_three_services_publish_with_the_right_versions(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    sims = await setup(admin, services)
    first = await create(admin)
    staged = await wait_for_state(store, first, ReleaseState.STAGED)
    assert staged.tentative_version == "0.0.1"
    await call(admin, PublishRelease(release_id=first))
    published = await wait_for_state(store, first, ReleaseState.PUBLISHED)
    assert published.final_version == "0.1.0"
    assert all(t.state is TaskState.PUBLISHED for t in published.tasks.values())
    for sim in sims:
        assert sim.actions(first) == [Action.INITIALIZE, Action.START, Action.PUBLISH]

    second = await create(admin, major=True)
    assert (await store.get(second)).tentative_version == "0.1.1"  # type: ignore[union-attr]
    await wait_for_state(store, second, ReleaseState.STAGED)
    await call(admin, PublishRelease(release_id=second))
    assert (await wait_for_state(store, second, ReleaseState.PUBLISHED)).final_version == "1.0.0"
    shown = await call(admin, ShowRelease(release_id=second, events=50))
    kinds = [e.kind for e in shown.events]
    assert EventKind.TRANSITION in kinds
    for release_id in (first, second):  # every command is confirmed and removed soon after
        settled = await wait_until(store, release_id, lambda r: not r.outbox)
        assert not settled.outbox


async def test_a_new_release_is_stored_begun_in_one_write_with_both_events(
    coordinator: Running, admin: Asks, services: StartService, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The health check comes before the insert: a release whose services are each known healthy or not
    is stored initializing (or canceled), never ``waiting`` first, and its trail still says both."""
    inserted: list[Release] = []
    insert = store.insert

    async def noted(release: Release, events: Sequence[AuditEvent]) -> None:
        inserted.append(release)
        await insert(release, events)

    monkeypatch.setattr(store, "insert", noted)
    await setup(admin, services, search_index={"consume": False, "heartbeat": None})
    release_id = await create(admin)  # search-index, never heard of, has no consumer: canceled at once
    assert [r.state for r in inserted] == [ReleaseState.CANCELED]
    shown = await call(admin, ShowRelease(release_id=release_id, events=10))
    changes = [(e.kind, e.state_before, e.state_after) for e in reversed(shown.events)]
    assert changes[:2] == [
        (EventKind.CREATED, None, ReleaseState.WAITING),
        (EventKind.TRANSITION, ReleaseState.WAITING, ReleaseState.CANCELED),
    ]


async def test_a_rejecting_service_cancels_the_release_and_is_named(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    sims = await setup(
        admin,
        services,
        portal={"behaviour": {Action.INITIALIZE: Outcome.REJECTED}, "reason": "unknown study"},
    )
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert canceled.state_reason == "portal rejected the release: unknown study"
    assert canceled.tasks["portal"].state is TaskState.REJECTED
    for sim in sims:
        if sim.name != "portal":
            assert Action.CANCEL in sim.actions(release_id)


async def test_a_service_without_consumer_is_unhealthy_and_cancels(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    await setup(admin, services, search_index={"consume": False})
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert "search-index (no consumer on its queue: start it, or rc service unrequire search-index)" in (
        canceled.state_reason or ""
    )


async def test_a_queue_left_by_an_instance_that_just_went_busy_is_asked_again_before_canceling(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    """An instance says it is busy just before its consumer goes, but that heartbeat may still wait in
    the replies queue when a release is created: the coordinator asks again before it cancels."""
    sims = await setup(admin, services, search_index={"consume": False, "heartbeat": None})
    search_index = next(sim for sim in sims if sim.name == "search-index")
    await search_index.beat()  # healthy and idle, as its last word before its slots filled
    await _heartbeat_recorded(store, "search-index")
    creating = asyncio.create_task(create(admin))
    waiting = await _release_created(store)
    await search_index.beat(detail=f"{BUSY_DETAIL}: new commands wait in the queue for a free one")
    assert await creating == waiting.id
    begun = await wait_until(store, waiting.id, lambda r: r.state is not ReleaseState.WAITING)
    assert begun.state is ReleaseState.INITIALIZING, begun.state_reason


async def _heartbeat_recorded(store: Store, service: str) -> None:
    for _ in range(200):
        if (record := (await store.services_named([service])).get(service)) and record.last_heartbeat_at:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no heartbeat of {service} recorded")


async def _release_created(store: Store) -> Release:
    for _ in range(500):
        if (release := await store.last_created()) is not None:
            return release
        await asyncio.sleep(0.01)
    raise AssertionError("no release created")


async def test_a_failure_during_processing_fails_the_release(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    sims = await setup(
        admin, services, file_service={"behaviour": {Action.START: Outcome.FAILED}, "reason": "disk full"}
    )
    release_id = await create(admin)
    failed = await wait_for_state(store, release_id, ReleaseState.FAILED)
    assert failed.state_reason == "file-service failed during processing: disk full"
    for sim in sims:
        assert Action.PUBLISH not in sim.actions(release_id)


async def test_a_silent_service_fails_processing_by_deadline(
    impatient_coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    await setup(admin, services, portal={"behaviour": {Action.START: None}})
    release_id = await create(admin)
    failed = await wait_for_state(store, release_id, ReleaseState.FAILED, within=20)
    assert (failed.state_reason or "").startswith("no progress during processing for 2s from: portal (")


async def test_deadlines_still_fire_after_a_sweep_failed(
    impatient_coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    """The sweeper (deadlines, retries) survives an error: the store unreachable for a moment."""
    compare_and_set = store.compare_and_set
    failed_sweeps = 0

    async def flaky(before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
        nonlocal failed_sweeps
        if after.state is ReleaseState.FAILED and not failed_sweeps:  # the deadline's transition, once
            failed_sweeps += 1
            raise ConnectionError("store unreachable (injected)")
        await compare_and_set(before, after, events)

    store.compare_and_set = flaky  # type: ignore[method-assign]
    await setup(admin, services, portal={"behaviour": {Action.START: None}})
    release_id = await create(admin)
    failed = await wait_for_state(store, release_id, ReleaseState.FAILED, within=20)
    assert failed_sweeps == 1
    assert (failed.state_reason or "").startswith("no progress during processing for 2s from: portal (")


@caught_by("ignore-hold")
async def test_hold_blocks_publish_until_unhold(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    await setup(admin, services)
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    held = await call(admin, HoldRelease(release_id=release_id))
    assert held.release.held
    assert (await store.get(release_id)).held  # type: ignore[union-attr]  # stored, not only remembered
    assert "on hold" in await refusal(admin, PublishRelease(release_id=release_id))
    await call(admin, UnholdRelease(release_id=release_id))
    assert not (await store.get(release_id)).held  # type: ignore[union-attr]
    await call(admin, PublishRelease(release_id=release_id))
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED)


@caught_by("skip-discard")
async def test_cancel_reaches_every_service(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    sims = await setup(admin, services)
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    await call(admin, CancelRelease(release_id=release_id, reason="bad data"))
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert all(t.state is TaskState.CANCELED for t in canceled.tasks.values())
    for sim in sims:
        cancel = [c for c in sim.received if c.release_id == release_id and c.action is Action.CANCEL]
        assert cancel
        assert cancel[0].reason == "canceled by tester: bad data"


async def test_duplicate_replies_change_nothing(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    await setup(admin, services, portal={"duplicate_replies": True})
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    await call(admin, PublishRelease(release_id=release_id))
    published = await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    for _ in range(100):  # the copy of the last reply may still be on its way
        events = (await store.event_page(release_id, 500)).items
        duplicates = [e for e in events if e.kind is EventKind.REFUSED and e.reason.startswith("duplicate")]
        if len(duplicates) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(duplicates) == 3  # one per step, each recorded and ignored
    published = await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    transitions = [e.state_after for e in events if e.kind is EventKind.TRANSITION]
    assert transitions.count(ReleaseState.PUBLISHED) == 1
    # revision: begin + 3 answers x 3 steps + publish = 11 changes, duplicates added none
    assert published.revision == 11


async def test_operator_refusals_are_clear(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    await setup(admin, services, portal={"behaviour": {Action.START: None}})
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.RUNNING)
    assert await refusal(admin, PublishRelease(release_id=release_id)) == (
        "only a staged release can be published; this one is running"
    )
    assert await refusal(admin, ShowRelease(release_id="RE_ZZZZZZZZ")) == "unknown release RE_ZZZZZZZZ"


async def test_commands_of_a_stored_transition_are_sent_even_if_its_first_delivery_fails(
    coordinator: Running, admin: Asks, services: StartService, store: Store
) -> None:
    """The transition to running is stored, then both publishing its start commands and telling the store
    what was delivered fail once: the commands must still go out (the sweeper retries), not wait for a
    restart."""
    sims = await setup(admin, services)
    session = coordinator.coordinator.session
    assert session is not None
    publish_entry, delivered = session.publish, store.delivered
    failures = {"publish": 0, "delivered": 0}
    refused: set[str] = set()

    async def flaky_publish(entry: OutboxEntry, release_id: str, *, routing_key: str | None = None) -> None:
        if ".start." in entry.message_id and entry.message_id not in refused:  # every start, once
            refused.add(entry.message_id)
            failures["publish"] += 1
            raise TimeoutError("no confirm (injected)")
        await publish_entry(entry, release_id, routing_key=routing_key)

    async def flaky_delivered(release_id: str, message_ids: Collection[str]) -> None:
        if failures["publish"] and not failures["delivered"]:  # right after the start commands failed
            failures["delivered"] += 1
            raise ConnectionError("store unreachable (injected)")
        await delivered(release_id, message_ids)

    session.publish = flaky_publish  # type: ignore[method-assign]
    store.delivered = flaky_delivered  # type: ignore[method-assign]
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    assert failures == {"publish": len(SERVICES), "delivered": 1}
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START]
