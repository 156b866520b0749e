"""Cancel makes services discard, end to end: real task services (``bench/chaos_service.py``, on the task
SDK) on RabbitMQ journal what they did, with fsync, before they answer. A release canceled while some
services have staged and one is still processing, and a release canceled at review (staged everywhere):
every service that was told ran ``cancel()``, and none holds data staged for them afterwards."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bench.chaos_service import read_journal
from coordinator.machine import Timeouts
from coordinator.settings import Settings
from coordinator.store import Store
from schemas.broker_url import broker_user
from schemas.enums import ReleaseState, TaskState
from schemas.messages import CancelRelease, ListServices, RequireService, ServiceList
from tests.coordinator.fixtures import Asks, Running, wait_for_state, wait_until
from tests.coordinator.test_releases import call, create
from tests.sabotage.plugin import caught_by

ROOT = Path(__file__).parents[2]
#: Seconds each service spends processing: two stage quickly, one is still at work when the cancel comes.
WORK = {"fast-a": 0.5, "fast-b": 0.5, "slow": 120.0}
#: Every service stages quickly: the release waits at review (staged).
QUICK = {"fast-a": 0.5, "fast-b": 0.5, "fast-c": 0.5}


@pytest.fixture
def journaling_services(
    amqp_url: str, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[dict[str, Path]]:
    """The services of :data:`WORK` (or the parameter) as processes; their journals by name."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("RC_")}
    work: dict[str, float] = getattr(request, "param", WORK)
    processes, journals = [], {}
    for name, seconds in work.items():
        journals[name] = tmp_path / f"{name}.journal"
        env = base | {
            "RC_AMQP_URL": amqp_url,
            "RC_NAMESPACE": namespace,
            "RC_COORDINATOR_USER": broker_user(amqp_url),  # the coordinator of the fixtures
            "RC_HEARTBEAT_SECONDS": "0.5",
            "RC_SHUTDOWN_TIMEOUT": "2",
            "CHAOS_WORK_SECONDS": str(seconds),
        }
        with open(tmp_path / f"{name}.log", "wb") as log:
            argv = [sys.executable, "-m", "bench.chaos_service", name, str(journals[name])]
            processes.append(subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    yield journals
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def effects(journal: Path, release_id: str) -> list[str]:
    return [str(e["effect"]) for e in read_journal(journal) if e["release"] == release_id]


async def journaled(journal: Path, release_id: str, effect: str, within: float = 60) -> None:
    """Poll the service's journal until it records ``effect`` for the release."""
    deadline = asyncio.get_running_loop().time() + within
    while effect not in effects(journal, release_id):
        assert asyncio.get_running_loop().time() < deadline, f"{journal.name}: no {effect} for {release_id}"
        await asyncio.sleep(0.1)


async def required_and_heard(admin: Asks, names: Iterable[str], within: float = 60) -> None:
    """Require the services, then wait until each has sent a heartbeat (it consumes its queue by then)."""
    for name in names:
        await admin.request(RequireService(service=name))
    deadline = asyncio.get_running_loop().time() + within
    while True:
        answer = await admin.request(ListServices())
        assert isinstance(answer.result, ServiceList)
        if {s.name for s in answer.result.services if s.last_heartbeat_at} >= set(names):
            return
        assert asyncio.get_running_loop().time() < deadline, "not every service sent a heartbeat"
        await asyncio.sleep(0.2)


def assert_discarded_everywhere(journals: dict[str, Path], release_id: str) -> None:
    for name, journal in journals.items():
        done = effects(journal, release_id)
        assert "discarded" in done, f"{name} never ran cancel() for {release_id}: {done}"
        last_discard = len(done) - 1 - done[::-1].index("discarded")
        assert "staged" not in done[last_discard:], f"{name} staged {release_id} after discarding: {done}"
        assert "published" not in done, f"{name} published {release_id}: {done}"


async def patient(settings: Settings, start_coordinator: Callable[..., Awaitable[Running]]) -> Running:
    """A coordinator whose deadlines leave room for a loaded machine (only the cancels are awaited)."""
    long = timedelta(minutes=5)
    timeouts = Timeouts(initialize=long, process=long, publish=long, cancel=timedelta(seconds=60))
    return await start_coordinator(dataclasses.replace(settings, timeouts=timeouts))


async def test_a_release_canceled_mid_processing_is_discarded_by_every_service(
    settings: Settings,
    start_coordinator: Callable[..., Awaitable[Running]],
    admin: Asks,
    store: Store,
    journaling_services: dict[str, Path],
) -> None:
    await patient(settings, start_coordinator)
    await required_and_heard(admin, journaling_services)

    midway = await create(admin)
    for name in ("fast-a", "fast-b"):
        await journaled(journaling_services[name], midway, "staged")
    running = await wait_until(store, midway, lambda r: r.tasks["slow"].state is TaskState.RUNNING)
    assert running.state is ReleaseState.RUNNING  # two staged, one still processing
    await call(admin, CancelRelease(release_id=midway, reason="wrong studies"))
    await wait_for_state(store, midway, ReleaseState.CANCELED, within=60)
    assert_discarded_everywhere(journaling_services, midway)
    assert "staged" not in effects(journaling_services["slow"], midway)  # interrupted, never staged


@pytest.mark.parametrize("journaling_services", [QUICK], indirect=True)
@caught_by("skip-discard")
async def test_a_release_canceled_at_review_is_discarded_by_every_service(
    settings: Settings,
    start_coordinator: Callable[..., Awaitable[Running]],
    admin: Asks,
    store: Store,
    journaling_services: dict[str, Path],
) -> None:
    await patient(settings, start_coordinator)
    await required_and_heard(admin, journaling_services)
    reviewed = await create(admin)
    await wait_for_state(store, reviewed, ReleaseState.STAGED, within=60)
    for journal in journaling_services.values():
        assert effects(journal, reviewed) == ["staged"]
    await call(admin, CancelRelease(release_id=reviewed, reason="not this time"))
    await wait_for_state(store, reviewed, ReleaseState.CANCELED, within=60)
    assert_discarded_everywhere(journaling_services, reviewed)
