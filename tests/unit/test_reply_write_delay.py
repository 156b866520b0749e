"""Replies that leave their release in its step wait for the next ones and share one durable write.

``Releases.apply_replies`` (the replies' path) decides at once, but stores a reply that neither moves its
release to another state nor has anything to publish only when the release's next write happens or the
write delay is over. What the caller gets back says when the reply's effect is stored: the coordinator
acknowledges the delivery only then, so a write that fails, or a session that ends first, leaves the reply
unacknowledged for the broker to deliver again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from coordinator.audit import Cause
from coordinator.hooks import Hooks
from coordinator.instances import Instances
from coordinator.machine import Begin, DeadlineCheck, ReplyReceived
from coordinator.outbox import Outbox
from coordinator.releases import Releases
from coordinator.settings import SETTINGS, Settings
from coordinator.store import StoreUnavailable
from coordinator.store.sqlite import SqliteStore
from schemas.documents import AuditEvent, Release
from schemas.enums import Action, Outcome, ReleaseState, TaskState
from schemas.topology import Topology
from tests.unit.releases import TIMEOUTS, new_release, reply

NOW = datetime(2026, 12, 3, tzinfo=UTC)
#: Longer than any test: a held write is stored by the release's next write, not by its timer.
NEVER = 3600.0


class ConfirmingOutbox(Outbox):
    """Publishes nothing; the broker "confirms" every message at once."""

    def __init__(self) -> None:
        super().__init__(Instances(timedelta(seconds=60)), Topology("t"), lambda: NOW)

    async def publish(self, release: Release) -> list[str]:
        return [entry.message_id for entry in release.outbox]


class CountingStore(SqliteStore):
    """Counts the compare-and-sets; fails the next ones while ``failures`` is above zero."""

    writes = 0
    failures = 0

    async def compare_and_set(self, before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
        self.writes += 1
        if self.failures:
            self.failures -= 1
            raise StoreUnavailable("the disk is full (injected)")
        await super().compare_and_set(before, after, events)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[CountingStore]:
    opened = CountingStore(tmp_path / "rc.db")
    await opened.open()
    yield opened
    await opened.close()


async def initializing(store: CountingStore, delay: float) -> tuple[Releases, Release]:
    """A release of three services told to initialize, over a :class:`Releases` with ``delay``."""
    releases = Releases(
        store,
        ConfirmingOutbox(),
        timeouts=TIMEOUTS,
        topology=Topology("t"),
        clock=lambda: NOW,
        hooks=Hooks(),
        write_delay=delay,
    )
    release = new_release()
    await store.insert(release, [])
    await releases.apply_all(release.id, [Cause(Begin(NOW))])
    begun = await store.get(release.id)
    assert begun is not None
    assert begun.state is ReleaseState.INITIALIZING
    store.writes = 0
    return releases, begun


async def accept(releases: Releases, release: Release, service: str) -> asyncio.Future[None]:
    answer = reply(release, service, Action.INITIALIZE, Outcome.ACCEPTED)
    applied = await releases.apply_replies(release.id, [Cause(ReplyReceived(answer, NOW), service)])
    assert applied is not None
    decisions, stored = applied
    assert [d.applied for d in decisions] == [True]
    return stored


async def task_states(store: CountingStore, release_id: str) -> dict[str, TaskState]:
    stored = await store.get(release_id)
    assert stored is not None
    return {name: task.state for name, task in stored.tasks.items()}


async def test_the_replies_of_a_step_share_the_write_that_moves_the_release_on(store: CountingStore) -> None:
    releases, release = await initializing(store, NEVER)
    first = await accept(releases, release, "file-service")
    second = await accept(releases, release, "portal")
    assert store.writes == 0
    assert not first.done()
    assert not second.done()
    assert set((await task_states(store, release.id)).values()) == {TaskState.WAITING}

    third = await accept(releases, release, "search-index")  # the last one: the release moves on
    assert store.writes == 1
    assert first.done()
    assert second.done()
    assert third.done()
    stored = await store.get(release.id)
    assert stored is not None
    assert stored.state is ReleaseState.RUNNING
    assert {t.state for t in stored.tasks.values()} == {TaskState.RUNNING}
    events = (await store.event_page(release.id, 100)).items  # the last one's is the transition's
    assert sorted(str(e.service) for e in events if e.service) == ["file-service", "portal", "search-index"]


async def test_a_held_reply_is_stored_when_the_delay_is_over(store: CountingStore) -> None:
    releases, release = await initializing(store, 0.01)
    stored = await accept(releases, release, "portal")
    await asyncio.wait_for(stored, 5)
    assert store.writes == 1
    assert (await task_states(store, release.id))["portal"] is TaskState.INITIALIZED


async def test_with_no_delay_every_reply_is_stored_before_it_returns(store: CountingStore) -> None:
    releases, release = await initializing(store, 0)
    stored = await accept(releases, release, "portal")
    assert stored.done()
    assert store.writes == 1
    assert (await task_states(store, release.id))["portal"] is TaskState.INITIALIZED


async def test_a_failed_write_fails_every_reply_it_held_and_forgets_what_they_did(
    store: CountingStore,
) -> None:
    releases, release = await initializing(store, NEVER)
    first = await accept(releases, release, "file-service")
    second = await accept(releases, release, "portal")
    store.failures = 1
    last = reply(release, "search-index", Action.INITIALIZE, Outcome.ACCEPTED)
    with pytest.raises(StoreUnavailable):
        await releases.apply_replies(release.id, [Cause(ReplyReceived(last, NOW), "search-index")])
    for held in (first, second):
        with pytest.raises(StoreUnavailable):
            await held  # its delivery is not acknowledged: the broker delivers it again
    assert set((await task_states(store, release.id)).values()) == {TaskState.WAITING}

    # Delivered again, the replies are decided from what is stored, not from what the failed write held.
    for service in ("file-service", "portal", "search-index"):
        await accept(releases, release, service)
    stored = await store.get(release.id)
    assert stored is not None
    assert stored.state is ReleaseState.RUNNING


async def test_a_held_reply_is_stored_with_the_next_input_of_another_kind(store: CountingStore) -> None:
    releases, release = await initializing(store, NEVER)
    held = await accept(releases, release, "portal")
    late = NOW + TIMEOUTS.initialize + timedelta(seconds=1)
    await releases.apply_all(release.id, [Cause(DeadlineCheck(late))])  # cancels: the others are silent
    assert held.done()
    assert store.writes == 1
    stored = await store.get(release.id)
    assert stored is not None
    assert stored.state is ReleaseState.CANCELING
    assert stored.tasks["portal"].state is not TaskState.WAITING  # the held reply is in the same write


async def test_a_new_session_fails_the_held_replies_and_the_end_of_one_stores_them(
    store: CountingStore,
) -> None:
    releases, release = await initializing(store, NEVER)
    lost = await accept(releases, release, "portal")
    releases.forget()
    with pytest.raises(ConnectionError):
        await lost
    assert store.writes == 0

    kept = await accept(releases, release, "portal")
    await releases.store_all_held()
    assert kept.done()
    assert kept.exception() is None
    assert (await task_states(store, release.id))["portal"] is TaskState.INITIALIZED


def test_the_setting_defaults_to_the_documented_delay_and_takes_zero_or_more_seconds() -> None:
    documented = float(SETTINGS["RC_REPLY_WRITE_DELAY"][0])
    assert Settings.from_env({}).reply_write_delay == documented == Settings().reply_write_delay
    assert Settings.from_env({"RC_REPLY_WRITE_DELAY": "0"}).reply_write_delay == 0.0
    assert Settings.from_env({"RC_REPLY_WRITE_DELAY": "0.2"}).reply_write_delay == 0.2
    for value in ("-1", "nan", "later"):
        with pytest.raises(ValueError, match=r"^RC_REPLY_WRITE_DELAY must be "):
            Settings.from_env({"RC_REPLY_WRITE_DELAY": value})


async def test_what_a_held_reply_was_told_stays_its_own_as_more_are_held(store: CountingStore) -> None:
    releases, release = await initializing(store, NEVER)
    first = reply(release, "file-service", Action.INITIALIZE, Outcome.ACCEPTED)
    applied = await releases.apply_replies(release.id, [Cause(ReplyReceived(first, NOW), "file-service")])
    assert applied is not None
    decisions, _ = applied
    await accept(releases, release, "portal")
    assert len(decisions) == 1  # the held write's own list grows, not the one handed back
    assert decisions[0].release.tasks["portal"].state is TaskState.WAITING
