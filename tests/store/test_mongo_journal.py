"""The MongoDB engine keeps a transition's audit events in the release document (its ``journal``) and copies
them to ``events`` after the update. A copy that fails is tried again later: meanwhile the events are
stored, and an operator's request that caused them must still be recognized as done."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from pymongo.errors import AutoReconnect

from coordinator.store import Store
from coordinator.store.mongo import MongoStore
from schemas.documents import AuditEvent
from tests.store.builders import begin, created_event, release
from tests.store.test_contract import of_request


@pytest.fixture
def engine() -> str:
    return "mongodb"


async def test_a_request_whose_events_are_not_copied_yet_is_still_recognized(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(store, MongoStore)
    first = release(1)
    await store.insert(first, [created_event(first)])
    initializing, event = begin(first)

    async def events_collection_down(events: Sequence[AuditEvent]) -> None:
        raise AutoReconnect("the events collection cannot be reached")

    with monkeypatch.context() as patched:
        patched.setattr(store, "record", events_collection_down)
        await store.compare_and_set(first, initializing, [of_request(event, "req-begin")])
    assert await store.events.count_documents({"message_id": "req-begin"}) == 0  # the copy did fail
    assert [e.id for e in await store.request_events("req-begin")] == [event.id]
    assert await store.request_events("req-other") == []
