"""Several instances of one task service, a real coordinator, real RabbitMQ (issue 19).

The instances are subprocesses (``tests/integration/scale_service.py``) with concurrency 1 that journal
what they did; the coordinator runs in the test with short deadlines and a 2 s heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aio_pika
import aiormq
import pytest

from coordinator.settings import Settings
from coordinator.store import Store
from rc_cli.client import AdminClient
from schemas.broker_url import broker_user
from schemas.documents import Release
from schemas.enums import ReleaseState
from schemas.messages import (
    CancelRelease,
    CreateRelease,
    PublishRelease,
    ReleaseResult,
    RequireService,
    ShowRelease,
)
from schemas.topology import Topology
from tests.coordinator.fixtures import Asks, Running, wait_for_state, wait_until
from tests.integration.scale_service import SERVICE, read_journal
from tests.sdk._rabbit import REPOSITORY, consumers_of

pytestmark = pytest.mark.integration


@dataclass
class Instance:
    process: asyncio.subprocess.Process
    journal: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def events(self, release_id: str) -> list[str]:
        return [str(e["event"]) for e in read_journal(self.journal) if e["release"] == release_id]

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()


Launch = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def coordinator(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> Running:
    """Instances silent for 2 s are lost; a retried start has 15 s to report progress."""
    timeouts = dataclasses.replace(settings.timeouts, process=timedelta(seconds=15))
    quick = dataclasses.replace(settings, heartbeat_timeout=timedelta(seconds=2), timeouts=timeouts)
    return await start_coordinator(quick)


@pytest.fixture
async def launch(
    broker_url: str, namespace: str, tmp_path: Path, store: Store, admin: Asks
) -> AsyncIterator[Launch]:
    """Starts an instance of ``portal`` (required); waits until it consumes and the coordinator heard it."""
    await admin.request(RequireService(service=SERVICE))
    started: list[Instance] = []

    async def start(work_seconds: float) -> Instance:
        journal = tmp_path / f"journal-{len(started)}.jsonl"
        env = os.environ | {
            "RC_AMQP_URL": broker_url,
            "RC_NAMESPACE": namespace,
            "RC_COORDINATOR_USER": broker_user(broker_url),  # the test's coordinator connects as it too
            "RC_TASK_CONCURRENCY": "1",
            "RC_HEARTBEAT_SECONDS": "0.3",
            "SCALE_WORK_SECONDS": str(work_seconds),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.integration.scale_service", str(journal), env=env, cwd=REPOSITORY
        )
        instance = Instance(process, journal)
        started.append(instance)
        queue = Topology(namespace).task_queue(SERVICE)
        running = sum(i.process.returncode is None for i in started)
        await _poll(lambda: _consumers_are(broker_url, queue, running))
        await _poll(lambda: _heard(store))
        return instance

    yield start
    for instance in started:
        await instance.kill()


async def _poll(condition: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    """Poll ``condition`` (state of the broker or the store, which sends no event) until it holds."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def _consumers_are(amqp_url: str, queue: str, count: int) -> bool:
    return await consumers_of(amqp_url, queue) == count


async def _heard(store: Store) -> bool:
    record = (await store.services_named([SERVICE])).get(SERVICE)
    return record is not None and record.last_heartbeat_at is not None


async def _create(broker_url: str, namespace: str) -> str:
    async with AdminClient(broker_url, namespace, timeout=10, operator="tester") as client:
        answer = await client.request(CreateRelease(name="Scale", studies=("SD_ABCDEFGH",)))
    assert answer.ok, answer.error
    assert isinstance(answer.result, ReleaseResult)
    return answer.result.release.id


async def _processor(store: Store, release_id: str, instances: list[Instance]) -> Instance:
    """The instance the coordinator heard processing the release (its instance id is host:pid:random)."""
    release = await wait_until(store, release_id, lambda r: r.tasks[SERVICE].instance is not None)
    pid = int((release.tasks[SERVICE].instance or "").split(":")[1])
    (processor,) = [i for i in instances if i.pid == pid]
    return processor


async def _retried(admin: Asks, release_id: str) -> bool:
    """Whether the audit trail records ``start`` sent again (the coordinator's retry)."""
    answer = await admin.request(ShowRelease(release_id=release_id, events=200))
    assert isinstance(answer.result, ReleaseResult)
    return any(event.reason.startswith(f"start sent again to {SERVICE}") for event in answer.result.events)


def _busy_intervals(instance: Instance) -> list[tuple[str, float, float]]:
    """(release, began, ended) of every process() the instance ran to its end."""
    began: dict[str, float] = {}
    intervals = []
    for entry in read_journal(instance.journal):
        release, at = str(entry["release"]), float(str(entry["at"]))
        if entry["event"] == "begin":
            began[release] = at
        elif entry["event"] == "staged":
            intervals.append((release, began[release], at))
    return intervals


async def test_no_release_waits_while_an_instance_is_idle(
    coordinator: Running, launch: Launch, store: Store, broker_url: str, namespace: str
) -> None:
    """A (3 s per release) and B (1 s), concurrency 1 each, three releases at once: the third waits
    only until the first instance frees, B, and B takes it; A never holds it while B idles."""
    slow = await launch(work_seconds=3)
    fast = await launch(work_seconds=1)
    release_ids = await asyncio.gather(*(_create(broker_url, namespace) for _ in range(3)))
    for release_id in release_ids:
        await wait_for_state(store, release_id, ReleaseState.STAGED, within=40)

    runs = {name: _busy_intervals(i) for name, i in (("slow", slow), ("fast", fast))}
    assert sorted(len(r) for r in runs.values()) == [1, 2]
    freed_first = min(runs, key=lambda name: runs[name][0][2])
    last = max((run for r in runs.values() for run in r), key=lambda run: run[1])
    assert last in runs[freed_first], f"the last release waited behind a busy instance: {runs}"
    assert last[1] >= runs[freed_first][0][2]


async def test_a_cancel_stops_the_instance_processing_the_release(
    coordinator: Running, launch: Launch, store: Store, admin: Asks, broker_url: str, namespace: str
) -> None:
    instances = [await launch(work_seconds=60), await launch(work_seconds=60)]
    release_id = await _create(broker_url, namespace)
    processor = await _processor(store, release_id, instances)
    (other,) = [i for i in instances if i is not processor]
    await wait_until(store, release_id, lambda r: (r.tasks[SERVICE].progress or 0) > 0)

    await admin.request(CancelRelease(release_id=release_id, reason="changed our minds"))
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)

    assert "no answer to cancel" not in (canceled.state_reason or "")
    assert processor.events(release_id) == ["begin", "stopped", "discarded"]  # cancel() after it stopped
    assert other.events(release_id) == []


async def test_a_cancel_after_the_processing_instance_was_killed(
    coordinator: Running, launch: Launch, store: Store, admin: Asks, broker_url: str, namespace: str
) -> None:
    """B, processing, is killed; once its heartbeats stop the coordinator sends ``start`` again and A takes
    it; the cancel sent then reaches A, which stops its processing and runs ``cancel()`` after it."""
    instances = [await launch(work_seconds=60), await launch(work_seconds=60)]
    release_id = await _create(broker_url, namespace)
    processor = await _processor(store, release_id, instances)
    (survivor,) = [i for i in instances if i is not processor]
    instance_id = (await _release(store, release_id)).tasks[SERVICE].instance or ""
    await processor.kill()
    control = Topology(namespace).control_queue(SERVICE, instance_id)
    await _poll(lambda: _queue_gone(broker_url, control))  # the broker saw the connection close
    await _poll(lambda: _retried(admin, release_id))  # the heartbeat timeout passed: start sent again
    await _poll(lambda: _began(survivor, release_id))
    await _processor_is(store, release_id, survivor)  # the coordinator heard A's progress

    await admin.request(CancelRelease(release_id=release_id, reason="changed our minds"))
    canceled = await wait_for_state(store, release_id, ReleaseState.CANCELED)

    assert "no answer to cancel" not in (canceled.state_reason or ""), canceled.state_reason
    assert survivor.events(release_id) == ["begin", "stopped", "discarded"]  # cancel() after it stopped
    assert processor.events(release_id) == ["begin"]
    assert await _cancel_replies_counted(admin, release_id) == 1


async def _cancel_replies_counted(admin: Asks, release_id: str) -> int:
    """The replies to cancel from the service that the coordinator counted (the one that ended the release;
    a second would be in the audit trail too, refused as a duplicate or as stale)."""
    answer = await admin.request(ShowRelease(release_id=release_id, events=200))
    assert isinstance(answer.result, ReleaseResult)
    from_service = [e for e in answer.result.events if e.service == SERVICE]
    counted = [e for e in from_service if e.state_after is ReleaseState.CANCELED]
    refused = [e for e in from_service if "answered cancel" in e.reason or "cancel reply" in e.reason]
    assert not refused, [e.reason for e in refused]
    return len(counted)


async def _began(instance: Instance, release_id: str) -> bool:
    return "begin" in instance.events(release_id)


async def _processor_is(store: Store, release_id: str, instance: Instance) -> None:
    def heard(release: Release) -> bool:
        heard_from = release.tasks[SERVICE].instance or ""
        return heard_from.split(":")[1:2] == [str(instance.pid)]

    await wait_until(store, release_id, heard)


async def test_work_of_a_killed_instance_is_done_by_the_other(
    coordinator: Running, launch: Launch, store: Store, admin: Asks, broker_url: str, namespace: str
) -> None:
    instances = [await launch(work_seconds=4), await launch(work_seconds=4)]
    release_id = await _create(broker_url, namespace)
    processor = await _processor(store, release_id, instances)
    (survivor,) = [i for i in instances if i is not processor]
    await processor.kill()

    await wait_for_state(store, release_id, ReleaseState.STAGED, within=40)
    assert await _retried(admin, release_id)
    assert survivor.events(release_id) == ["begin", "staged"]


async def test_work_of_a_single_instance_killed_and_restarted_is_done(
    coordinator: Running, launch: Launch, store: Store, admin: Asks, broker_url: str, namespace: str
) -> None:
    first = await launch(work_seconds=4)
    release_id = await _create(broker_url, namespace)
    await _processor(store, release_id, [first])
    await first.kill()
    restarted = await launch(work_seconds=1)

    await wait_for_state(store, release_id, ReleaseState.STAGED, within=40)
    assert await _retried(admin, release_id)
    assert restarted.events(release_id) == ["begin", "staged"]


async def _release(store: Store, release_id: str) -> Release:
    release = await store.get(release_id)
    assert release is not None
    return release


async def _queue_gone(amqp_url: str, name: str) -> bool:
    async with await aio_pika.connect(amqp_url) as connection:
        try:
            await (await connection.channel()).declare_queue(name, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return True
        except aiormq.exceptions.ChannelLockedResource:
            return False
        return False


async def test_a_release_created_while_every_slot_is_busy_waits_for_one(
    coordinator: Running, launch: Launch, store: Store, broker_url: str, namespace: str
) -> None:
    """The busy instance consumes nothing (its heartbeats say why): the coordinator does not take that
    for a service without consumer; the new release is initialized once the slot frees."""
    instance = await launch(work_seconds=3)
    first = await _create(broker_url, namespace)
    await wait_until(store, first, lambda r: (r.tasks[SERVICE].progress or 0) > 0)
    queue = Topology(namespace).task_queue(SERVICE)
    await _poll(lambda: _consumers_are(broker_url, queue, 0))

    second = await _create(broker_url, namespace)
    await wait_for_state(store, second, ReleaseState.STAGED, within=40)
    assert instance.events(second) == ["begin", "staged"]


@pytest.fixture
async def impatient_coordinator(
    settings: Settings, start_coordinator: Callable[[Settings], Awaitable[Running]]
) -> Running:
    """Instances silent for 2 s are lost; 2 s without progress, or without an answer to publish, fails a
    release (unless the command waits for a slot)."""
    timeouts = dataclasses.replace(
        settings.timeouts, process=timedelta(seconds=2), publish=timedelta(seconds=2)
    )
    quick = dataclasses.replace(settings, heartbeat_timeout=timedelta(seconds=2), timeouts=timeouts)
    return await start_coordinator(quick)


async def test_a_start_waiting_behind_a_busy_instance_does_not_fail_its_release(
    impatient_coordinator: Running, launch: Launch, store: Store, broker_url: str, namespace: str
) -> None:
    """Two releases initialized at once, one instance with one slot, processing longer than the 2 s
    processing deadline: the second start waits in the queue while the instance says it is busy, and its
    deadline is moved on (in the audit trail) instead of failing the release."""
    instance = await launch(work_seconds=4)
    first, second = await asyncio.gather(*(_create(broker_url, namespace) for _ in range(2)))
    for release_id in (first, second):
        await wait_for_state(store, release_id, ReleaseState.STAGED, within=40)
    assert [instance.events(r) for r in (first, second)] == [["begin", "staged"]] * 2
    trails = [(await store.event_page(r, 100)).items for r in (first, second)]
    assert any(
        e.reason.startswith(f"start still waiting in the queue of {SERVICE}: every instance is busy")
        for trail in trails
        for e in trail
    )


async def test_a_publish_waiting_behind_a_busy_instance_does_not_fail_its_release(
    impatient_coordinator: Running,
    launch: Launch,
    store: Store,
    admin: Asks,
    broker_url: str,
    namespace: str,
) -> None:
    """A staged release is published while the only instance, one slot, processes another release for
    longer than the 2 s publish limit: the publish waits in the queue, its deadline is moved on (in the
    audit trail), and the release is published once the slot frees instead of failing half public. (6 s
    of processing leave the 2 s limit a wide margin on a loaded machine.)"""
    instance = await launch(work_seconds=6)
    first = await _create(broker_url, namespace)
    await wait_for_state(store, first, ReleaseState.STAGED, within=40)
    second = await _create(broker_url, namespace)
    await wait_until(store, second, lambda r: (r.tasks[SERVICE].progress or 0) > 0)
    await _poll(lambda: _consumers_are(broker_url, Topology(namespace).task_queue(SERVICE), 0))

    answer = await admin.request(PublishRelease(release_id=first))
    assert answer.ok, answer.error
    await wait_for_state(store, first, ReleaseState.PUBLISHED, within=40)
    assert instance.events(first) == ["begin", "staged"]
    trail = (await store.event_page(first, 100)).items
    assert any(
        e.reason.startswith(f"publish still waiting in the queue of {SERVICE}: every instance is busy")
        for e in trail
    )
