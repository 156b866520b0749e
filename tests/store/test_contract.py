"""The store contract, run on every engine (``store`` is parametrized in conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import timedelta

import pytest

from coordinator.machine import Cancel, Hold, ReplyReceived, Unhold
from coordinator.store import BadCursor, HeartbeatRecord, StaleRevision, Store, VersionTaken
from coordinator.store.copying import copy_store
from coordinator.versioning import next_tentative
from schemas.documents import AuditEvent, Release, ReleaseView, Task
from schemas.enums import Action, EventKind, Outcome, ReleaseState, TaskState
from schemas.messages import TaskReply
from tests.sabotage.plugin import caught_by
from tests.store.builders import T0, answer_all, begin, created_event, note, publish, release, step
from tests.store.conftest import Opener
from tests.unit.releases import reply

STAGED = ReleaseState.STAGED


async def insert(store: Store, *releases: Release) -> None:
    for r in releases:
        await store.insert(r, [created_event(r)])


async def walk(store: Store, before: Release, steps: list[tuple[Release, AuditEvent]]) -> Release:
    for after, event in steps:
        await store.compare_and_set(before, after, [event])
        before = after
    return before


async def staged(store: Store, seq: int, **options: object) -> Release:
    """A release stored and moved to ``staged``, its commands delivered."""
    r = release(seq, **options)  # type: ignore[arg-type]
    await insert(store, r)
    r = await walk(store, r, [begin(r)])
    r = await walk(store, r, answer_all(r, Action.INITIALIZE, Outcome.ACCEPTED))
    r = await walk(store, r, answer_all(r, Action.START, Outcome.STAGED))
    assert r.state is ReleaseState.STAGED
    await store.delivered(r.id, [e.message_id for e in r.outbox])
    return r.model_copy(update={"outbox": ()})


# ---------------------------------------------------------------------- documents


async def test_a_release_of_300_tasks_with_unicode_and_large_notes_reads_back_equal(store: Store) -> None:
    big = "Données publiées — 数据发布 ✓ " * 1800  # about 60 KB of UTF-8
    notes = (note(1, big), note(2, "🧬 " + big[:30_000], study="SD_BBBBBBBB"))
    services = tuple(f"service-{i:03d}" for i in range(300))
    r = release(
        1, services=services, studies=("SD_AAAAAAAA", "SD_BBBBBBBB"), notes=notes, name="Ünïcödé 发布"
    )
    await insert(store, r)
    assert await store.get(r.id) == r
    after, event = begin(r)
    assert sum(e.exchange == "commands" for e in after.outbox) == 300
    await store.compare_and_set(r, after, [event])
    assert await store.get(after.id) == after
    assert (await store.note_page(r.id, 10)).items == list(reversed(notes))  # type: ignore[union-attr]


async def test_get_of_an_unknown_release_is_none(store: Store) -> None:
    assert await store.get("RE_NOPE0000") is None
    assert await store.state_of("RE_NOPE0000") is None
    assert await store.note_page("RE_NOPE0000", 5) is None


async def test_insert_refuses_a_taken_sequence_number_or_tentative_version(store: Store) -> None:
    first = release(1)
    await insert(store, first)
    same_seq = release(1).model_copy(update={"id": "RE_OTHER001", "tentative_version": "0.0.9"})
    same_version = release(2).model_copy(update={"tentative_version": first.tentative_version})
    for clash in (same_seq, same_version):
        with pytest.raises(VersionTaken):
            await store.insert(clash, [created_event(clash)])
        assert await store.get(clash.id) is None
    assert (await store.event_page(same_version.id, 10)).items == []


async def test_concurrent_creations_by_two_writers_get_distinct_versions(open_store: Opener) -> None:
    """Two coordinators creating at once, each retrying as the coordinator does on VersionTaken."""
    first, second = await open_store(), await open_store()
    retries = 0

    async def create(store: Store, tag: int) -> Release:
        nonlocal retries
        while True:
            last = await store.last_created()
            seq = last.seq + 1 if last else 1
            r = release(seq).model_copy(
                update={
                    "id": f"RE_T{tag:03d}{seq:04d}",
                    "tentative_version": next_tentative(last.version if last else None),
                }
            )
            try:
                await store.insert(r, [created_event(r)])
                return r
            except VersionTaken:
                retries += 1

    made = await asyncio.gather(*(create(first if i % 2 else second, i) for i in range(20)))
    assert len({r.seq for r in made}) == 20
    assert len({r.tentative_version for r in made}) == 20
    assert retries > 0  # they did race
    assert (await first.counts()).releases == 20


# ---------------------------------------------------------------------- compare-and-set


async def test_a_transition_stores_its_outbox_and_events_with_it(store: Store) -> None:
    r = release(1)
    await insert(store, r)
    after, event = begin(r)
    await store.compare_and_set(r, after, [event])
    stored = await store.get(r.id)
    assert stored == after
    assert {e.routing_key for e in stored.outbox} == {
        "task.portal.initialize",
        "task.search-index.initialize",
        "release.initializing",
    }
    events = (await store.event_page(r.id, 10)).items
    assert [e.id for e in events] == [event.id, f"{r.id}.r0"]
    assert await store.state_of(r.id) is ReleaseState.INITIALIZING


async def test_of_two_writers_from_the_same_revision_exactly_one_wins(open_store: Opener) -> None:
    first, second = await open_store(), await open_store()
    r = release(1)
    await insert(first, r)
    ours, our_event = begin(r)
    theirs = ours.model_copy(update={"state_reason": "the other writer", "outbox": ()})
    their_event = our_event.model_copy(update={"id": "other.r1", "reason": "the other writer"})
    results = await asyncio.gather(
        first.compare_and_set(r, ours, [our_event]),
        second.compare_and_set(r, theirs, [their_event]),
        return_exceptions=True,
    )
    assert sorted(type(x).__name__ for x in results) == ["NoneType", "StaleRevision"]
    winner = ours if results[0] is None else theirs
    assert await first.get(r.id) == winner
    ids = {e.id for e in (await first.event_page(r.id, 10)).items}
    assert ids == {f"{r.id}.r0", (our_event if winner is ours else their_event).id}


async def test_a_stale_compare_and_set_writes_nothing(store: Store) -> None:
    r = release(1)
    await insert(store, r)
    after, event = begin(r)
    await store.compare_and_set(r, after, [event])
    again, again_event = begin(r)
    late = again.model_copy(update={"state_reason": "late"})
    with pytest.raises(StaleRevision):
        await store.compare_and_set(r, late, [again_event.model_copy(update={"id": "late"})])
    assert await store.get(r.id) == after
    assert "late" not in {e.id for e in (await store.event_page(r.id, 10)).items}


@caught_by("skip-unique-check")
async def test_a_final_version_is_never_stored_twice(store: Store) -> None:
    a, b = await staged(store, 1), await staged(store, 2)
    a_published, a_event = publish(a, None)
    await store.compare_and_set(a, a_published, [a_event])
    assert await store.highest_final_version() == a_published.final_version == "0.1.0"
    b_same, b_event = publish(b, None)  # as if it had not seen a's
    assert b_same.final_version == a_published.final_version
    with pytest.raises(VersionTaken):
        await store.compare_and_set(b, b_same, [b_event])
    assert await store.get(b.id) == b
    assert b_event.id not in {e.id for e in (await store.event_page(b.id, 50)).items}
    b_next, b_next_event = publish(b, await store.highest_final_version())
    await store.compare_and_set(b, b_next, [b_next_event])
    assert b_next.final_version == "0.2.0"


# ---------------------------------------------------------------------- outbox and recovery


async def test_confirmed_outbox_messages_are_never_returned_again(open_store: Opener) -> None:
    store = await open_store()
    r = release(1)
    await insert(store, r)
    after, event = begin(r)
    await store.compare_and_set(r, after, [event])
    first, rest = after.outbox[0], after.outbox[1:]
    await store.delivered(r.id, [first.message_id])
    stored = await store.get(r.id)
    assert stored is not None
    assert stored.outbox == rest
    assert [x.outbox for x in await store.open_releases()] == [rest]
    await store.close()  # pending clean-ups are written at close
    reopened = await open_store()
    stored = await reopened.get(r.id)
    assert stored is not None
    assert stored.outbox == rest


async def test_the_next_transition_keeps_undelivered_messages_and_drops_confirmed_ones(store: Store) -> None:
    r = release(1)
    await insert(store, r)
    initializing, event = begin(r)
    await store.compare_and_set(r, initializing, [event])
    confirmed = initializing.outbox[0]
    await store.delivered(r.id, [confirmed.message_id])
    before = await store.get(r.id)
    assert before is not None
    service = next(iter(before.tasks))
    after, accepted = step(before, _accept(before, service))
    await store.compare_and_set(before, after, [accepted])
    stored = await store.get(r.id)
    assert stored is not None
    assert confirmed.message_id not in {e.message_id for e in stored.outbox}
    assert stored.outbox == after.outbox


async def test_open_releases_are_the_unfinished_and_those_with_messages_to_deliver(store: Store) -> None:
    waiting = release(1)
    await insert(store, waiting)
    done = await staged(store, 2)
    canceled, event = step(done, _cancel(done))
    await store.compare_and_set(done, canceled, [event])
    ended = canceled
    for service in canceled.tasks:
        confirmed = reply(ended, service, Action.CANCEL, Outcome.CANCELED)
        after, ev = step(ended, _received(ended, confirmed))
        await store.compare_and_set(ended, after, [ev])
        ended = after
    assert ended.state is ReleaseState.CANCELED
    assert ended.outbox
    assert {r.id for r in await store.open_releases()} == {waiting.id, ended.id}
    await store.delivered(ended.id, [e.message_id for e in ended.outbox])
    assert {r.id for r in await store.open_releases()} == {waiting.id}


async def test_record_keeps_one_copy_of_an_event(store: Store) -> None:
    r = release(1)
    await insert(store, r)
    refused = AuditEvent(id="refusal-1", release_id=r.id, at=T0, kind=EventKind.REFUSED, reason="stale: late")
    await store.record([refused])
    await store.record([refused])
    await store.record([])
    found = [e for e in (await store.event_page(r.id, 10)).items if e.id == "refusal-1"]
    assert found == [refused]


# ---------------------------------------------------------------------- operators' requests


def of_request(event: AuditEvent, request_id: str) -> AuditEvent:
    """``event`` as an operator's request with message id ``request_id`` caused it."""
    return event.model_copy(update={"message_id": request_id})


def operator_event(event_id: str, release_id: str, request_id: str, kind: EventKind) -> AuditEvent:
    return AuditEvent(
        id=event_id,
        release_id=release_id,
        at=T0 + timedelta(hours=1),
        kind=kind,
        reason=f"{event_id} by the operator",
        message_id=request_id,
        actor="operator:tester",
    )


async def canceled_by(store: Store, request_id: str) -> tuple[Release, AuditEvent]:
    """A release staged, canceled by the request ``request_id``, ended and its messages all delivered."""
    r = await staged(store, 2)
    canceled, event = step(r, _cancel(r))
    event = of_request(event, request_id)
    await store.compare_and_set(r, canceled, [event])
    for service in canceled.tasks:
        confirmed = reply(canceled, service, Action.CANCEL, Outcome.CANCELED)
        canceled = await walk(store, canceled, [step(canceled, _received(canceled, confirmed))])
    assert canceled.state is ReleaseState.CANCELED
    await store.delivered(r.id, [e.message_id for e in canceled.outbox])
    return canceled, event


async def test_the_events_of_a_request_are_found_by_its_message_id_and_no_others(open_store: Opener) -> None:
    """How a request the broker delivers again is recognized as done: every event it caused, whichever
    write stored it (insert, compare-and-set, record) and on whichever release, and no event of another
    request nor of a service's message, even one that reuses a request's id; a coordinator opening the
    store later (the first one closed) finds the same."""
    store = await open_store()
    created = release(1)
    made = of_request(created_event(created), "req-create")
    await store.insert(created, [made])
    canceled, cancel = await canceled_by(store, "req-cancel")
    rerun = release(3)
    rerun_made = of_request(created_event(rerun), "req-rerun")
    await store.insert(rerun, [rerun_made])
    linked = operator_event("link-1", canceled.id, "req-rerun", EventKind.OPERATOR)
    refused = operator_event("refusal-1", created.id, "req-refused", EventKind.REFUSED)
    look_alikes = [  # other requests' ids that an engine matching loosely (case, prefix, pattern) would take
        operator_event(f"other-{i}", created.id, other, EventKind.REFUSED)
        for i, other in enumerate(("REQ-CANCEL", "req-cancel.2", "a-req-cancel"))
    ]
    forged = operator_event("forged-1", created.id, "req-cancel", EventKind.REFUSED).model_copy(
        update={"service": "portal", "actor": "svc-portal"}  # a service's message under a request's id
    )
    await store.record([refused, linked, *look_alikes, forged])
    replies = [e for e in (await store.event_page(canceled.id, 100)).items if e.service is not None]
    assert replies
    assert all(e.message_id for e in replies)
    expected = {
        **{e.message_id or "": [] for e in replies},  # a service's reply is no operator's request
        "req-create": [made],
        "req-cancel": [cancel],
        "req-rerun": sorted([rerun_made, linked], key=lambda e: e.id),
        "req-refused": [refused],
        "req-cancel_2": [],  # "_" and "%" are patterns in SQL LIKE
        "req-%": [],
        "req-unknown": [],
        "": [],  # the events no request caused have no message id
    }
    assert await requests(store, expected) == expected
    await store.close()  # pending clean-ups (copied journals, confirmed messages) are written at close
    assert await requests(await open_store(), expected) == expected


async def requests(store: Store, request_ids: Collection[str]) -> dict[str, list[AuditEvent]]:
    return {rid: sorted(await store.request_events(rid), key=lambda e: e.id) for rid in request_ids}


async def test_a_write_refused_leaves_no_trace_of_its_request(store: Store) -> None:
    """A create that lost the race for its version is tried again under the same request, and a transition
    from a stale revision did nothing: a redelivery of either must not be taken for done."""
    first = release(1)
    await insert(store, first)
    clash = release(2).model_copy(update={"tentative_version": first.tentative_version})
    with pytest.raises(VersionTaken):
        await store.insert(clash, [of_request(created_event(clash), "req-lost-race")])
    initializing, event = begin(first)
    await store.compare_and_set(first, initializing, [event])
    late, late_event = step(first, _cancel(first))
    with pytest.raises(StaleRevision):
        await store.compare_and_set(first, late, [of_request(late_event, "req-stale")])
    a, b = await staged(store, 3), await staged(store, 4)
    a_published, a_event = publish(a, None)
    await store.compare_and_set(a, a_published, [a_event])
    b_same, b_event = publish(b, None)  # the same final version
    with pytest.raises(VersionTaken):
        await store.compare_and_set(b, b_same, [of_request(b_event, "req-publish-taken")])
    for request_id in ("req-lost-race", "req-stale", "req-publish-taken"):
        assert await store.request_events(request_id) == []


# ---------------------------------------------------------------------- export and import


async def installation(store: Store) -> list[str]:
    """Releases as a copy finds them (published; in flight with a message confirmed and others not;
    waiting, its id before the others'; staged, held and let go by operators' requests), their events,
    a refusal older than all of them, and the registry. Returns the release ids in creation order."""
    first = await staged(store, 1, studies=("SD_ALPHA000", "SD_BETA0000"), notes=(note(1, "Données ✓"),))
    first = await walk(store, first, [publish(first, None)])
    first = await walk(store, first, answer_all(first, Action.PUBLISH, Outcome.PUBLISHED))
    await store.delivered(first.id, [e.message_id for e in first.outbox])
    in_flight = release(2, studies=("SD_ALPHA000",))
    await insert(store, in_flight)
    in_flight = await walk(store, in_flight, [begin(in_flight)])
    await store.delivered(in_flight.id, [in_flight.outbox[0].message_id])
    waiting = release(3).model_copy(update={"id": "RE_00000000"})
    await insert(store, waiting)
    fourth = await staged(store, 4)
    held, hold = step(fourth, Hold(fourth.updated_at + timedelta(seconds=1), "tester"))
    let_go, unhold = step(held, Unhold(held.updated_at + timedelta(seconds=1), "tester"))
    await walk(
        store, fourth, [(held, of_request(hold, "req-hold")), (let_go, of_request(unhold, "req-unhold"))]
    )
    refusal = operator_event("zz-refused", first.id, "req-refused", EventKind.REFUSED)
    await store.record([refusal.model_copy(update={"at": T0 - timedelta(days=1)})])
    await store.heartbeat(HeartbeatRecord("portal", "host-a:1", "1.0", True, None, T0))
    await store.set_required("portal", True, T0)
    await store.set_required("search-index", False, T0)
    return [first.id, in_flight.id, waiting.id, fourth.id]


async def answers(store: Store, ids: list[str]) -> dict[str, object]:
    """What the store answers about an installation, through every query of the interface."""
    return {
        "counts": await store.counts(),
        "releases": [await store.get(i) for i in ids],
        "states": [await store.state_of(i) for i in ids],
        "notes": [await store.note_page(i, 10) for i in ids],
        "events": [await store.event_page(i, 100) for i in ids],
        "open": sorted(r.id for r in await store.open_releases()),
        "last": await store.last_created(),
        "highest": await store.highest_final_version(),
        "by state": await store.count_by_state(),
        "lists": [
            await store.list_releases(10, **f) for f in ({}, {"study": "SD_ALPHA000"}, {"state": STAGED})
        ],
        "studies": [await store.study_summary(s) for s in ("SD_ALPHA000", "SD_BETA0000", "SD_AAAAAAAA")],
        "study pages": [await store.study_page(10), await store.study_releases("SD_ALPHA000", 10)],
        "requests": [await store.request_events(r) for r in ("req-hold", "req-unhold", "req-refused")],
        "services": [await store.all_services(), await store.required_services()],
    }


async def test_an_export_imported_into_an_empty_store_answers_every_query_alike(
    store: Store, empty_store: Store
) -> None:
    """``rc-coordinator store copy`` through the interface, on one engine: releases in creation order with
    the messages still to deliver, events in time order, in batches; the copy answers as the original."""
    ids = await installation(store)
    releases = [batch async for batch in store.export_releases(2)]
    events = [batch async for batch in store.export_events(2)]
    assert [len(batch) for batch in releases] == [2, 2]
    assert [r.id for batch in releases for r in batch] == ids  # by creation, not by id
    assert [r for batch in releases for r in batch] == [await store.get(i) for i in ids]
    every_event = [e for batch in events for e in batch]
    assert max(len(batch) for batch in events) == 2
    assert [e.at for e in every_event] == sorted(e.at for e in every_event)
    stored = [e for i in ids for e in (await store.event_page(i, 100)).items]
    assert sorted(e.id for e in every_event) == sorted(e.id for e in stored)
    for release_batch in releases:
        await empty_store.import_batch(release_batch, (), ())
    for event_batch in events:
        await empty_store.import_batch((), event_batch, ())
    await empty_store.import_batch((), (), await store.all_services())
    assert await answers(empty_store, ids) == await answers(store, ids)


async def test_an_imported_store_keeps_the_unique_rules_and_its_releases_carry_on(
    store: Store, empty_store: Store
) -> None:
    """Imported releases hold their creation numbers and versions against new writes and imports, and move
    on from the state and revision they were copied at."""
    ids = await installation(store)
    await copy_store(store, empty_store, batch=2)
    first, in_flight, _, fourth = [await empty_store.get(i) for i in ids]
    assert first is not None
    assert in_flight is not None
    assert fourth is not None
    with pytest.raises(VersionTaken):
        await empty_store.import_batch([first.model_copy(update={"id": "RE_COPY0001"})], (), ())
    same_version = release(5).model_copy(update={"tentative_version": first.tentative_version})
    with pytest.raises(VersionTaken):
        await empty_store.insert(same_version, [created_event(same_version)])
    taken, taken_event = publish(fourth, None)  # the first release's final version
    with pytest.raises(VersionTaken):
        await empty_store.compare_and_set(fourth, taken, [taken_event])
    published, event = publish(fourth, await empty_store.highest_final_version())
    await empty_store.compare_and_set(fourth, published, [event])
    assert published.final_version == "0.2.0"
    accepted, accepted_event = step(in_flight, _accept(in_flight, next(iter(in_flight.tasks))))
    await empty_store.compare_and_set(in_flight, accepted, [accepted_event])
    with pytest.raises(StaleRevision):
        await empty_store.compare_and_set(in_flight, accepted, [accepted_event])
    assert await empty_store.get(in_flight.id) == accepted


# ---------------------------------------------------------------------- reads


async def test_last_created_highest_final_and_counts(store: Store) -> None:
    assert await store.last_created() is None
    assert await store.highest_final_version() is None
    a = await staged(store, 1)
    await insert(store, release(2))
    assert (last := await store.last_created()) is not None
    assert last.seq == 2
    published, event = publish(a, None)
    await store.compare_and_set(a, published, [event])
    assert await store.highest_final_version() == "0.1.0"
    assert await store.count_by_state() == {ReleaseState.PUBLISHING: 1, ReleaseState.WAITING: 1}


async def test_release_pages_filter_and_neither_skip_nor_repeat_while_releases_are_added(
    store: Store,
) -> None:
    for seq in range(1, 8):
        await insert(store, release(seq, studies=("SD_EVEN0000",) if seq % 2 == 0 else ("SD_ODD00000",)))
    seen: list[int] = []
    page = await store.list_releases(3)
    seen += seqs(page.items)
    await insert(store, release(8))  # newer than every page still to come: not in them
    while page.next_cursor is not None:
        page = await store.list_releases(3, page.next_cursor)
        seen += seqs(page.items)
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    even = await store.list_releases(10, study="SD_EVEN0000")
    assert seqs(even.items) == [6, 4, 2]
    assert even.next_cursor is None
    assert seqs((await store.list_releases(10, state=ReleaseState.WAITING)).items)[:2] == [8, 7]
    assert (await store.list_releases(10, state=ReleaseState.STAGED)).items == []
    recent = await store.list_releases(10, since=T0 + timedelta(minutes=6))
    assert seqs(recent.items) == [8, 7, 6]
    with pytest.raises(BadCursor):
        await store.list_releases(3, "not-a-cursor")


def seqs(views: list[ReleaseView]) -> list[int]:
    """The creation numbers of listed releases (``release(seq)`` is ``RE_<seq>``)."""
    return [int(v.id.removeprefix("RE_")) for v in views]


async def test_listed_releases_are_their_views_without_the_notes_but_with_their_count(store: Store) -> None:
    big = "Données — 数据 ✓ \u2028 \\ " * 2000
    notes = (note(1, big), note(2, "🧬 second", study="SD_BBBBBBBB"), note(3, "third"))
    a = release(1, notes=notes, studies=("SD_AAAAAAAA", "SD_BBBBBBBB"), name="Ünïcödé 发布")
    running = Task(
        service="portal",
        state=TaskState.RUNNING,
        progress=100 / 3,
        last_message='📦 1/3 "done"',
        entered={TaskState.RUNNING: T0},
    )
    a = a.model_copy(update={"tasks": {**a.tasks, "portal": running}})
    await insert(store, a)
    b = await staged(store, 2)
    published, event = publish(b, None)
    await store.compare_and_set(b, published, [event])
    listed = (await store.list_releases(10)).items
    expected = [ReleaseView.of(r).model_copy(update={"notes": ()}) for r in (published, a)]
    assert [v.model_dump_json() for v in listed] == [v.model_dump_json() for v in expected]
    assert listed == expected
    assert [v.note_count for v in listed] == [0, 3]
    assert listed[1].tasks["portal"].progress == 100 / 3


async def test_event_pages_are_newest_first_filtered_and_stable(store: Store) -> None:
    r = await staged(store, 1)
    everything = [e.id for e in (await store.event_page(r.id, 100)).items]
    assert everything[-1] == f"{r.id}.r0"
    assert len(everything) == 6
    paged: list[str] = []
    page = await store.event_page(r.id, 4)
    paged += [e.id for e in page.items]
    await store.record(
        [
            AuditEvent(
                id="zz-new", release_id=r.id, at=T0 + timedelta(days=9), kind=EventKind.OPERATOR, reason="x"
            )
        ]
    )
    while page.next_cursor is not None:
        page = await store.event_page(r.id, 4, page.next_cursor)
        paged += [e.id for e in page.items]
    assert paged == everything
    transitions = (await store.event_page(r.id, 100, kind=EventKind.TRANSITION)).items
    assert [e.state_after for e in transitions] == [
        ReleaseState.STAGED,
        ReleaseState.RUNNING,
        ReleaseState.INITIALIZING,
    ]
    into_staged = (await store.event_page(r.id, 100, state=ReleaseState.STAGED)).items
    assert [e.state_after for e in into_staged] == [ReleaseState.STAGED]
    later = (await store.event_page(r.id, 100, since=T0 + timedelta(days=1))).items
    assert [e.id for e in later] == ["zz-new"]
    with pytest.raises(BadCursor):
        await store.event_page(r.id, 4, "garbage")


async def test_study_summaries_and_pages(store: Store) -> None:
    one = await staged(store, 1, studies=("SD_ALPHA000", "SD_BETA0000"))
    published, event = publish(one, None)
    await store.compare_and_set(one, published, [event])
    done = await walk(store, published, answer_all(published, Action.PUBLISH, Outcome.PUBLISHED))
    assert done.state is ReleaseState.PUBLISHED
    await insert(store, release(2, studies=("SD_ALPHA000",)), release(3, studies=("SD_GAMMA000",)))
    alpha = await store.study_summary("SD_ALPHA000")
    assert alpha is not None
    assert alpha.release_count == 2
    assert alpha.latest.id == "RE_00000002"
    assert alpha.latest.state is ReleaseState.WAITING
    assert alpha.last_published is not None
    assert alpha.last_published.final_version == "0.1.0"
    assert alpha.last_published.published_at == done.entered[ReleaseState.PUBLISHED]
    assert await store.study_summary("SD_UNKNOWN0") is None
    releases = await store.study_releases("SD_ALPHA000", 1)
    assert [b.id for b in releases.items] == ["RE_00000002"]
    rest = await store.study_releases("SD_ALPHA000", 1, releases.next_cursor)
    assert [b.id for b in rest.items] == ["RE_00000001"]
    assert rest.next_cursor is None
    assert [
        b.id for b in (await store.study_releases("SD_ALPHA000", 5, state=ReleaseState.PUBLISHED)).items
    ] == ["RE_00000001"]
    order: list[str] = []
    page = await store.study_page(2)
    order += [s.study for s in page.items]
    while page.next_cursor is not None:
        page = await store.study_page(2, page.next_cursor)
        order += [s.study for s in page.items]
    assert order == ["SD_GAMMA000", "SD_ALPHA000", "SD_BETA0000"]  # by latest release, then id
    prefixed = await store.study_page(10, prefix="SD_A")
    assert [s.study for s in prefixed.items] == ["SD_ALPHA000"]
    by_state = await store.study_page(10, state=ReleaseState.PUBLISHED)
    assert [s.study for s in by_state.items] == ["SD_BETA0000"]
    with pytest.raises(BadCursor):
        await store.study_page(2, "12")


async def test_note_pages(store: Store) -> None:
    notes = tuple(
        note(i, f"note {i}", T0 + timedelta(minutes=i), "SD_AAAAAAAA" if i % 2 else None) for i in range(1, 6)
    )
    r = release(1, notes=notes)
    await insert(store, r)
    first = await store.note_page(r.id, 2)
    assert first is not None
    assert [n.id for n in first.items] == ["N5", "N4"]
    second = await store.note_page(r.id, 2, first.next_cursor)
    assert second is not None
    assert [n.id for n in second.items] == ["N3", "N2"]
    on_study = await store.note_page(r.id, 10, study="SD_AAAAAAAA")
    assert on_study is not None
    assert [n.id for n in on_study.items] == ["N5", "N3", "N1"]
    with pytest.raises(BadCursor):
        await store.note_page(r.id, 2, "N1")


async def test_the_service_registry(store: Store) -> None:
    assert await store.all_services() == []
    await store.heartbeat(HeartbeatRecord("portal", "host-a:1", "1.0", True, None, T0))
    await store.heartbeat(
        HeartbeatRecord("portal", "host.b:2", "1.1", False, "db down", T0 + timedelta(seconds=5))
    )
    portal = await store.service("portal")
    assert portal is not None
    assert not portal.required
    assert not portal.healthy
    assert portal.health_detail == "db down"
    assert portal.sdk_version == "1.1"
    assert portal.last_heartbeat_at == T0 + timedelta(seconds=5)
    assert len(portal.instances) == 2
    required = await store.set_required("search-index", True, T0)
    assert required.required
    assert required.name == "search-index"
    assert await store.required_services() == ["search-index"]
    assert set(await store.services_named(["portal", "search-index", "nobody"])) == {"portal", "search-index"}
    await store.set_required("search-index", False, T0)
    assert await store.required_services() == []
    assert [s.name for s in await store.all_services()] == ["portal", "search-index"]


def _accept(release: Release, service: str) -> ReplyReceived:
    return _received(release, reply(release, service, Action.INITIALIZE, Outcome.ACCEPTED))


def _received(release: Release, message: TaskReply) -> ReplyReceived:
    return ReplyReceived(message, release.updated_at + timedelta(seconds=1))


def _cancel(release: Release) -> Cancel:
    return Cancel(release.updated_at + timedelta(seconds=1), "tester", "testing")
