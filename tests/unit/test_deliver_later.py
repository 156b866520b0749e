"""Replies are settled once stored; what they caused is published after, and the release's next input waits.

``Releases.apply_all(..., deliver_later=True)`` (the replies' path) returns as soon as the compare-and-set
is stored: the replies can be acknowledged while the broker confirms the commands they caused. The
publication runs in a task of its own; the next input of the same release is decided only once it ended,
so a release's publications and decisions never overlap, and a publication never runs twice at once.
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
from coordinator.machine import Begin, Input, ReplyReceived
from coordinator.outbox import Outbox
from coordinator.releases import Releases
from coordinator.store.sqlite import SqliteStore
from schemas.documents import AuditEvent, Release
from schemas.enums import Action, Outcome, ReleaseState
from schemas.topology import Topology
from tests.unit.event_loop import run_turns, turns_until
from tests.unit.releases import TIMEOUTS, new_release, reply

NOW = datetime(2026, 12, 2, tzinfo=UTC)


class HeldOutbox(Outbox):
    """Publishes nothing until ``go`` is set; notes what happened, in order, in ``seen``."""

    def __init__(self, seen: list[str]) -> None:
        super().__init__(Instances(timedelta(seconds=60)), Topology("t"), lambda: NOW)
        self.seen = seen
        self.go = asyncio.Event()
        self.publishing = asyncio.Event()

    async def publish(self, release: Release) -> list[str]:
        if not release.outbox:
            return []
        self.seen.append(f"publishing {len(release.outbox)}")
        self.publishing.set()
        await self.go.wait()
        self.seen.append("published")
        return [entry.message_id for entry in release.outbox]


class NotingStore(SqliteStore):
    """Notes in ``seen`` (when given one) each compare-and-set as it begins, before any I/O."""

    seen: list[str] | None = None

    async def compare_and_set(self, before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
        if self.seen is not None:
            self.seen.append("writing")
        await super().compare_and_set(before, after, events)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[NotingStore]:
    opened = NotingStore(tmp_path / "rc.db")
    await opened.open()
    yield opened
    await opened.close()


def releases_over(store: NotingStore, outbox: HeldOutbox) -> Releases:
    async def storing(release_id: str, inputs: Sequence[Input]) -> None:
        outbox.seen.append(f"deciding {type(inputs[0]).__name__}")

    return Releases(
        store,
        outbox,
        timeouts=TIMEOUTS,
        topology=Topology("t"),
        clock=lambda: NOW,
        hooks=Hooks(storing=storing),
    )


async def test_a_reply_is_settled_once_stored_and_the_next_input_waits_for_the_publication(
    store: NotingStore,
) -> None:
    seen: list[str] = []
    store.seen = seen
    outbox = HeldOutbox(seen)
    releases = releases_over(store, outbox)
    release = new_release()
    await store.insert(release, [])

    # Returns while the publication is held: it does not wait for the broker.
    decided = await asyncio.wait_for(
        releases.apply_all(release.id, [Cause(Begin(NOW))], deliver_later=True), 5
    )
    assert decided is not None
    assert decided[0].applied
    stored = await store.get(release.id)
    assert stored is not None
    assert stored.state is ReleaseState.INITIALIZING
    assert len(stored.outbox) == 4  # initialize x 3 and the announcement, stored before publishing
    await asyncio.wait_for(outbox.publishing.wait(), 5)

    answer = reply(stored, "portal", Action.INITIALIZE, Outcome.ACCEPTED)
    nxt = asyncio.create_task(releases.apply_all(release.id, [Cause(ReplyReceived(answer, NOW))]))
    await turns_until(lambda: "deciding ReplyReceived" in seen)
    # From there to its write the next input does no I/O (this coordinator has the release cached): had it
    # not waited for the publication, it would be writing within these turns of the event loop.
    await run_turns(50)
    assert seen[-1] == "deciding ReplyReceived"  # not writing: waits for the publication of the last write
    assert not nxt.done()
    outbox.go.set()
    decided = await asyncio.wait_for(nxt, 5)
    assert decided is not None
    assert decided[0].applied
    assert seen == [
        *("deciding Begin", "writing", "publishing 4"),
        *("deciding ReplyReceived", "published", "writing"),  # written once the publication ended
    ]
    await releases.stop_publishing()


async def test_stopping_the_session_stops_the_publications_and_leaves_the_outbox_stored(
    store: NotingStore,
) -> None:
    outbox = HeldOutbox([])
    releases = releases_over(store, outbox)
    release = new_release()
    await store.insert(release, [])
    await releases.apply_all(release.id, [Cause(Begin(NOW))], deliver_later=True)
    await asyncio.wait_for(outbox.publishing.wait(), 5)

    await releases.stop_publishing()
    stored = await store.get(release.id)
    assert stored is not None
    assert len(stored.outbox) == 4
    assert "published" not in outbox.seen


async def test_a_publication_that_ends_within_the_grace_is_recorded_before_the_session_stops(
    store: NotingStore,
) -> None:
    """A graceful stop lets the running publication finish: what the broker confirmed leaves the stored
    outbox, so the next session does not send it again."""
    outbox = HeldOutbox([])
    releases = releases_over(store, outbox)
    release = new_release()
    await store.insert(release, [])
    await releases.apply_all(release.id, [Cause(Begin(NOW))], deliver_later=True)
    await asyncio.wait_for(outbox.publishing.wait(), 5)

    asyncio.get_running_loop().call_later(0.1, outbox.go.set)  # the broker confirms during the stop
    await releases.stop_publishing(grace=5)
    stored = await store.get(release.id)
    assert stored is not None
    assert stored.outbox == ()
    assert outbox.seen[-1] == "published"
