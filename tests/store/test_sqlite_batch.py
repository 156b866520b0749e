"""Group commit in the embedded engine: writes queued together share one transaction, each fails alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from coordinator.machine import ReplyReceived
from coordinator.store import StaleRevision, StoreUnavailable, VersionTaken
from coordinator.store.sqlite import SqliteStore
from schemas.documents import AuditEvent, Release
from schemas.enums import Action, Outcome
from tests.store.builders import begin, created_event, release, step
from tests.unit.releases import reply

RELEASES = 40


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(tmp_path / "rc.db")
    await opened.open()
    yield opened
    await opened.close()


async def inserted(store: SqliteStore, count: int) -> list[Release]:
    made = [release(seq) for seq in range(1, count + 1)]
    for r in made:
        await store.insert(r, [created_event(r)])
    return made


async def queued_together(store: SqliteStore, writes: Sequence[Awaitable[Any]]) -> list[Any]:
    """Run ``writes`` with the writer thread held until every one of them waits for it, then let it go."""
    gate = threading.Event()
    held = asyncio.ensure_future(store._writer.call(lambda db: gate.wait(30)))
    tasks = [asyncio.ensure_future(w) for w in writes]
    await asyncio.sleep(0)  # every task has run up to its wait for the writer: all queued behind the gate
    gate.set()
    await held
    return list(await asyncio.gather(*tasks, return_exceptions=True))


def moves(
    store: SqliteStore, made: Sequence[Release], steps: Sequence[tuple[Release, AuditEvent]]
) -> list[Awaitable[None]]:
    """One compare-and-set per release, each to its step."""
    return [store.compare_and_set(r, after, [event]) for r, (after, event) in zip(made, steps, strict=True)]


def count_commits(store: SqliteStore) -> list[int]:
    commits = [0]

    def before_commit() -> None:
        commits[0] += 1

    store.before_commit = before_commit
    return commits


def stored_states(path: Path) -> dict[str, int]:
    """Each release's revision as another connection reads it from the file: what is on disk."""
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT id, revision FROM releases").fetchall())
    finally:
        db.close()


async def test_concurrent_compare_and_sets_share_commits_and_are_all_stored(store: SqliteStore) -> None:
    made = await inserted(store, RELEASES)
    commits = count_commits(store)
    steps = [begin(r) for r in made]
    results = await queued_together(store, moves(store, made, steps))
    assert results == [None] * RELEASES
    assert commits == [1]  # one transaction, one sync, for every write queued while the writer was busy
    assert stored_states(store.path) == {after.id: after.revision for after, _ in steps}
    for after, event in steps:
        assert await store.get(after.id) == after
        assert {e.id for e in (await store.event_page(after.id, 10)).items} == {f"{after.id}.r0", event.id}


async def test_no_caller_returns_before_the_commit_of_its_batch(store: SqliteStore) -> None:
    made = await inserted(store, 10)
    returned: list[str] = []
    returned_at_commit: list[int] = []
    store.before_commit = lambda: returned_at_commit.append(len(returned))

    async def move(r: Release) -> None:
        after, event = begin(r)
        await store.compare_and_set(r, after, [event])
        returned.append(r.id)

    assert await queued_together(store, [move(r) for r in made]) == [None] * 10
    assert returned_at_commit == [0]  # one batch, and none of its callers had its answer before it committed
    assert len(returned) == 10


async def test_a_stale_compare_and_set_in_a_batch_fails_alone(store: SqliteStore) -> None:
    made = await inserted(store, 5)
    steps = [begin(r) for r in made]
    stale_after, stale_event = begin(made[2])  # the same step again, from the same revision: one must lose
    writes = moves(store, made, steps)
    writes.append(store.compare_and_set(made[2], stale_after, [stale_event]))
    commits = count_commits(store)
    results = await queued_together(store, writes)
    assert results[:5] == [None] * 5
    assert isinstance(results[5], StaleRevision)
    assert commits == [1]
    assert stored_states(store.path) == {after.id: after.revision for after, _ in steps}


async def test_a_version_taken_in_a_batch_fails_alone(store: SqliteStore) -> None:
    made = await inserted(store, 3)
    steps = [begin(r) for r in made]
    clash = release(1).model_copy(update={"id": "RE_OTHER001", "tentative_version": "0.0.9"})
    fresh = release(4)
    writes = moves(store, made, steps)
    writes += [store.insert(clash, [created_event(clash)]), store.insert(fresh, [created_event(fresh)])]
    results = await queued_together(store, writes)
    assert results[:3] == [None] * 3
    assert isinstance(results[3], VersionTaken)
    assert results[4] is None
    assert await store.get(clash.id) is None
    assert (await store.event_page(clash.id, 10)).items == []
    assert stored_states(store.path) == {**{a.id: a.revision for a, _ in steps}, fresh.id: fresh.revision}


class _FailingCommit:
    """The writer's connection, except that COMMIT fails as a full disk makes it fail."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return self._db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


async def test_a_failing_commit_fails_every_caller_of_the_batch_and_stores_nothing(
    store: SqliteStore,
) -> None:
    made = await inserted(store, 5)
    real = store._writer._db
    assert real is not None
    store._writer._db = _FailingCommit(real)  # type: ignore[assignment]
    steps = [begin(r) for r in made]
    fresh = release(6)
    writes = moves(store, made, steps)
    writes.append(store.insert(fresh, [created_event(fresh)]))
    results = await queued_together(store, writes)
    store._writer._db = real
    assert all(isinstance(result, StoreUnavailable) for result in results), results
    assert "no space left" in str(results[0])
    assert stored_states(store.path) == {r.id: r.revision for r in made}
    for r, (after, event) in zip(made, steps, strict=True):  # nothing half done: each write can be made again
        assert await store.get(r.id) == r
        await store.compare_and_set(r, after, [event])


async def test_a_write_that_fails_in_a_batch_gives_back_the_confirmed_messages_it_took(
    store: SqliteStore,
) -> None:
    first, second = await inserted(store, 2)
    initializing, event = begin(first)
    await store.compare_and_set(first, initializing, [event])
    confirmed = initializing.outbox[0].message_id
    await store.delivered(first.id, [confirmed])
    stale_after, stale_event = begin(first)  # from revision 0, stored at 1: takes the confirmed id, fails
    second_after, second_event = begin(second)
    results = await queued_together(
        store,
        [
            store.compare_and_set(first, stale_after, [stale_event]),
            store.compare_and_set(second, second_after, [second_event]),
        ],
    )
    assert isinstance(results[0], StaleRevision)
    assert results[1] is None
    before = await store.get(first.id)
    assert before is not None
    assert confirmed not in {e.message_id for e in before.outbox}  # still known to be delivered
    service = next(iter(before.tasks))
    answer = reply(before, service, Action.INITIALIZE, Outcome.ACCEPTED)
    after, accepted = step(before, ReplyReceived(answer, before.updated_at + timedelta(seconds=1)))
    await store.compare_and_set(before, after, [accepted])  # drops it from the file with this write
    db = sqlite3.connect(store.path)
    try:
        left = db.execute("SELECT COUNT(*) FROM outbox WHERE message_id = ?", (confirmed,)).fetchone()[0]
    finally:
        db.close()
    assert left == 0
