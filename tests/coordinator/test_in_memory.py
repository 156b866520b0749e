"""Guarantees shown on the in-memory broker, where a connection can be cut at the exact moment that
matters (on RabbitMQ the same guarantees are shown with SIGKILLed coordinators: test_faults.py)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest

from coordinator.broker.memory import MemoryBroker
from coordinator.hooks import Hooks
from coordinator.machine import Input, ReplyReceived
from coordinator.settings import Settings
from coordinator.store import Store, StoreUnavailable
from schemas.documents import AuditEvent, Release
from schemas.enums import Action, Outcome, ReleaseState, ReplyKind
from schemas.messages import (
    AdminRequest,
    CancelRelease,
    Command,
    Heartbeat,
    ListServices,
    PublishRelease,
    ReleaseResult,
    RequireService,
    decode,
    encode,
)
from schemas.topology import DEAD_REASON_HEADER, Topology
from tests.coordinator.fixtures import Asks, Running, wait_for_state, wait_until
from tests.coordinator.peers import AdminPeer, Peer, Received
from tests.coordinator.simulated import SimulatedService
from tests.coordinator.test_releases import create, setup
from tests.sabotage.plugin import caught_by
from tests.unit.releases import T0

pytestmark = pytest.mark.parametrize("broker_kind", ["memory"], indirect=True)
StartCoordinator = Callable[..., Awaitable[Running]]


@caught_by("ack-before-store")
async def test_replies_received_by_a_session_lost_before_storing_them_are_delivered_again(
    settings: Settings,
    start_coordinator: StartCoordinator,
    memory_broker: MemoryBroker,
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
) -> None:
    """The coordinator's connection drops after it received the ``staged`` replies and before it stored
    them: unacknowledged, they go back to the queue, and the next session applies them."""
    cut = 0
    running: list[Running] = []

    async def cut_the_connection_once(release_id: str, inputs: Sequence[Input]) -> None:
        nonlocal cut
        if not cut and any(isinstance(i, ReplyReceived) and i.reply.action is Action.START for i in inputs):
            cut += 1
            session = running[0].coordinator.session
            assert session is not None
            await session.close()  # as if the broker went away now
            raise ConnectionError("connection lost (injected)")

    running.append(await start_coordinator(settings, Hooks(storing=cut_the_connection_once)))
    sims = await setup(admin, services)
    release_id = await create(admin)
    ended = await wait_for_state(store, release_id, ReleaseState.STAGED, ReleaseState.FAILED, within=30)
    assert ended.state is ReleaseState.STAGED, ended.state_reason  # failed: the replies were lost
    assert cut == 1
    staged = ended
    assert all(task.state.value == "staged" for task in staged.tasks.values())
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START]  # nothing had to be redone


@caught_by("ack-held-replies")
async def test_replies_held_for_a_shared_write_that_fails_are_delivered_again(
    settings: Settings,
    start_coordinator: StartCoordinator,
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two ``initialized`` replies wait in memory for the third (one write for the step); that write fails.
    None of the three was acknowledged, so all come back and the release goes on; had the two waiting ones
    been acknowledged on arrival, they would be lost and the release canceled at its deadline."""
    failed: list[Release] = []
    compare_and_set = store.compare_and_set

    async def fail_the_write_that_starts(
        before: Release, after: Release, events: Sequence[AuditEvent]
    ) -> None:
        if not failed and before.state is ReleaseState.INITIALIZING and after.state is ReleaseState.RUNNING:
            failed.append(after)
            raise StoreUnavailable("the disk is full (injected)")
        await compare_and_set(before, after, events)

    monkeypatch.setattr(store, "compare_and_set", fail_the_write_that_starts)
    # The three failures are logged with their tracebacks, which takes seconds in a test's console: the
    # step's deadline leaves room for that (the release is canceled at it only if replies were lost).
    timeouts = dataclasses.replace(settings.timeouts, initialize=timedelta(seconds=15))
    await start_coordinator(dataclasses.replace(settings, reply_write_delay=60.0, timeouts=timeouts))
    sims = await setup(admin, services, search_index={"delay": {Action.INITIALIZE: 0.5}})
    release_id = await create(admin)
    ended = await wait_for_state(store, release_id, ReleaseState.STAGED, ReleaseState.CANCELED, within=40)
    assert ended.state is ReleaseState.STAGED, ended.state_reason
    assert len(failed) == 1
    assert {name for name, task in failed[0].tasks.items() if task.state.value == "running"} == set(
        ended.tasks
    )
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START]


@caught_by("answer-twice")
async def test_an_operator_request_delivered_twice_is_carried_out_once(
    coordinator: Running,
    connect_peer: Callable[[], Awaitable[Peer]],
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
    namespace: str,
) -> None:
    """The broker may deliver a request again (a coordinator died before acknowledging it): the second
    delivery is answered from what the first did, never executed again."""
    sims = await setup(admin, services)
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    operator = await AdminPeer(await connect_peer(), namespace).start()
    request = AdminRequest(
        message_id="publish-once",
        sent_at=T0,
        operator="tester",
        operation=PublishRelease(release_id=release_id),
    )
    first, again = await operator.send(request), await operator.send(request)
    assert first.ok, first.error
    assert again.ok, again.error  # answered from what the first did (the release, as it is by then)
    assert isinstance(first.result, ReleaseResult)
    assert isinstance(again.result, ReleaseResult)
    assert again.result.release.id == first.result.release.id == release_id
    assert again.result.release.final_version == first.result.release.final_version == "0.1.0"
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED)
    for sim in sims:
        assert sim.actions(release_id) == [Action.INITIALIZE, Action.START, Action.PUBLISH]
    published = [e for e in (await store.event_page(release_id, 100)).items if e.message_id == "publish-once"]
    assert len(published) == 1
    refused = request.model_copy(update={"message_id": "refused-once"})
    denied, denied_again = await operator.send(refused), await operator.send(refused)
    assert (denied.ok, denied_again.ok) == (False, False)
    assert (
        denied.error == denied_again.error == "only a staged release can be published; this one is published"
    )
    await operator.close()


@caught_by("answer-any-queue")
async def test_answers_go_only_to_reply_queues_an_operator_may_own(
    coordinator: Running,
    connect_peer: Callable[[], Awaitable[Peer]],
    store: Store,
    namespace: str,
) -> None:
    """A request naming another queue (a service's task queue, here) as its reply_to is refused, with the
    reason, and nothing is published there."""
    topology = Topology(namespace)
    peer = await connect_peer()
    victim = await peer.declare_queue(topology.task_queue("portal"), topology.task_queue_arguments())
    request = AdminRequest(message_id="aimed", sent_at=T0, operator="mallory", operation=ListServices())
    await peer.publish(
        topology.admin_exchange,
        topology.admin_routing_key,
        encode(request),
        message_id=request.message_id,
        correlation_id=request.message_id,
        reply_to=victim,
    )
    dead = await _eventually(lambda: peer.get(topology.dead_letter_queue))
    assert "is not a reply queue an operator may own" in str(dead.headers[DEAD_REASON_HEADER])
    assert await peer.get(victim) is None


async def _eventually(get: Callable[[], Awaitable[Received | None]], within: float = 10) -> Received:
    deadline = asyncio.get_running_loop().time() + within
    while (found := await get()) is None:
        assert asyncio.get_running_loop().time() < deadline, "nothing arrived"
        await asyncio.sleep(0.05)
    return found


async def test_a_service_on_a_shared_broker_user_is_told_why_its_heartbeats_do_not_count(
    settings: Settings,
    start_coordinator: StartCoordinator,
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
) -> None:
    """A service run as ``guest`` with no trusted users: its heartbeats are refused, and the release is
    canceled with that cause and its fix, not a bare 'never sent a heartbeat'."""
    await start_coordinator(dataclasses.replace(settings, trusted_users=frozenset()))
    await services("kf-reference")
    await admin.request(RequireService(service="kf-reference"))
    release_id = await create(admin)
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert canceled.state_reason == (
        "unhealthy at initialization: kf-reference (heartbeats refused: broker user 'guest' may not answer "
        "for 'kf-reference' (connect it as its own broker user, which rc-admin-setup makes; or, for "
        "development only, name that user in RC_TRUSTED_USERS))"
    )


async def test_work_whose_instance_stopped_heartbeating_is_started_again(
    patient_coordinator: Running,
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
) -> None:
    """The instance that took ``start`` (its progress said so) stops heartbeating: after the heartbeat
    timeout ``start`` goes to the service again, any instance takes it, and the audit trail says so."""
    portal = await services("portal", behaviour={Action.START: None}, progress_as="portal-doomed")
    await admin.request(RequireService(service="portal"))
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.RUNNING)
    starts = await _eventually_n(
        lambda: [c for c in portal.received if c.action is Action.START], 2, within=30
    )
    assert starts[0].message_id != starts[1].message_id
    await portal.answer(starts[1], Outcome.STAGED)
    staged = await wait_for_state(store, release_id, ReleaseState.STAGED)
    assert staged.tasks["portal"].starts == 2
    trail = (await store.event_page(release_id, 100)).items
    reasons = [e.reason for e in trail]
    waited = (
        "start to be sent again to portal in 1s (attempt 2 of 3): instance portal-doomed of portal stopped"
    )
    assert any(r.startswith(waited) for r in reasons), reasons
    assert "start sent again to portal (attempt 2 of 3)" in reasons


async def test_a_cancel_goes_to_the_instance_processing_the_release(
    coordinator: Running,
    connect_peer: Callable[[], Awaitable[Peer]],
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
    namespace: str,
) -> None:
    """While the instance processing a release is alive, the cancel reaches its own queue, not the
    service's shared queue (which would give it to any instance); once that instance is gone, the
    service's queue gets it."""
    topology = Topology(namespace)
    portal = await services("portal", behaviour={Action.START: None}, progress_as="portal-busy")
    instance = await connect_peer()  # the instance doing the work: its own queue, its heartbeats
    control = await instance.declare_queue(
        topology.control_queue("portal", "portal-busy"), {}, exclusive=True
    )
    await instance.bind(control, topology.commands_exchange, topology.control_key("portal", "portal-busy"))
    await portal.send(_beat("portal", "portal-busy"), ReplyKind.HEARTBEAT)
    await admin.request(RequireService(service="portal"))
    release_id = await create(admin)
    await wait_until(store, release_id, lambda r: r.tasks["portal"].instance == "portal-busy")
    await admin.request(CancelRelease(release_id=release_id, reason="wrong data"))
    cancel = await _eventually(lambda: instance.get(control))
    assert decode(cancel.body, Command).action is Action.CANCEL
    assert Action.CANCEL not in portal.actions(release_id)  # the shared queue did not get it


@caught_by("ignore-stray-instance")
async def test_an_instance_still_processing_a_canceled_release_is_sent_the_cancel_itself(
    coordinator: Running,
    connect_peer: Callable[[], Awaitable[Peer]],
    admin: Asks,
    services: Callable[..., Awaitable[SimulatedService]],
    store: Store,
    namespace: str,
) -> None:
    """The cancel went to the service's shared queue (no instance had reported progress yet), and another
    instance answered it. The instance that had really taken ``start`` then reports progress: it gets a
    cancel of its own, so that it stops and discards what it staged; the audit trail says why."""
    topology = Topology(namespace)
    portal = await services("portal", behaviour={Action.START: None, Action.CANCEL: Outcome.CANCELED})
    late = await connect_peer()
    control = await late.declare_queue(topology.control_queue("portal", "portal-late"), {}, exclusive=True)
    await late.bind(control, topology.commands_exchange, topology.control_key("portal", "portal-late"))
    await admin.request(RequireService(service="portal"))
    release_id = await create(admin)
    await wait_for_state(store, release_id, ReleaseState.RUNNING)
    (start,) = await _eventually_n(lambda: [c for c in portal.received if c.action is Action.START], 1, 10)
    await admin.request(CancelRelease(release_id=release_id, reason="wrong data"))
    await wait_for_state(store, release_id, ReleaseState.CANCELED)
    assert await late.get(control) is None  # the first cancel went to the shared queue

    canceled = await store.get(release_id)
    await portal.report(start, 40, "portal-late")
    cancel = decode((await _eventually(lambda: late.get(control))).body, Command)
    assert (cancel.action, cancel.release_id) == (Action.CANCEL, release_id)
    trail = (await store.event_page(release_id, 100)).items
    assert any("instance portal-late is processing a release that is canceled" in e.reason for e in trail)

    await portal.report(start, 50, "portal-gone")  # an instance whose queue is gone, and it with it
    async with asyncio.timeout(10):
        while not any("portal-gone" in e.reason for e in (await store.event_page(release_id, 100)).items):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert await store.get(release_id) == canceled  # an ended release never changes


async def _eventually_n(get: Callable[[], list[Command]], count: int, within: float) -> list[Command]:
    deadline = asyncio.get_running_loop().time() + within
    while len(found := get()) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(found)} of {count} arrived"
        await asyncio.sleep(0.05)
    return found


def _beat(service: str, instance_id: str) -> Heartbeat:
    return Heartbeat(
        message_id=uuid.uuid4().hex,
        sent_at=datetime.now(UTC),
        service=service,
        instance_id=instance_id,
        sdk_version="test",
        healthy=True,
    )
