"""Follow a release's audit trail: print every new event once, oldest first, until the release has ended.

The coordinator answers ``events`` pages newest first. Following polls with ``since`` set a little before the
newest event seen (events are stamped when they are decided and stored a moment later, so one may appear
with a slightly older time than one already shown) and drops the ids already printed. ``release.<state>``
announcements wake the poll early. It stops once the release is published, canceled or failed and a poll
after that found nothing new.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from rc_cli.client import AdminClient, InvalidAnswer, NoAnswer, NoCoordinator, expect_ok
from schemas.documents import AuditEvent
from schemas.enums import ReleaseState
from schemas.messages import Announcement, EventPage, ListEvents

#: How far before the newest event seen each poll looks again.
OVERLAP = timedelta(seconds=10)
DEFAULT_FOLLOW_INTERVAL = 0.5


async def event_page(client: AdminClient, operation: ListEvents) -> EventPage:
    result = expect_ok(await client.request(operation))
    if not isinstance(result, EventPage):
        raise InvalidAnswer(f"the coordinator answered events without an event page on {client.where}")
    return result


async def follow_events(
    client: AdminClient,
    first: ListEvents,
    on_event: Callable[[AuditEvent], None],
    *,
    interval: float = DEFAULT_FOLLOW_INTERVAL,
    on_note: Callable[[str], None] | None = None,
) -> ReleaseState:
    """Report the newest ``first.limit`` events, then every new one, until the release has ended.

    Returns the release's final state. Raises :class:`~rc_cli.client.Refused` if the first page is refused.
    """
    page = await event_page(client, first)
    seen: dict[str, datetime] = {}

    def report(events: list[AuditEvent]) -> int:
        fresh = sorted((e for e in events if e.id not in seen), key=lambda e: (e.at, e.id))
        for event in fresh:
            seen[event.id] = event.at
            on_event(event)
        if seen:
            horizon = max(seen.values()) - OVERLAP * 2
            for event_id in [i for i, at in seen.items() if at < horizon]:
                del seen[event_id]
        return len(fresh)

    report(list(page.events))
    state = page.release_state
    if seen:  # what existed before following began is not new, even if older than the first page
        earlier, state = await _newer(client, first, max(seen.values()) - OVERLAP)
        for event in earlier:
            seen.setdefault(event.id, event.at)
    wake = asyncio.Event()

    def on_announcement(announcement: Announcement) -> None:
        if announcement.release_id == first.release_id:
            wake.set()

    with contextlib.suppress(NoCoordinator):
        await client.subscribe_announcements(on_announcement)

    while True:
        wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
        since = max(seen.values()) - OVERLAP if seen else first.since
        try:
            events, state = await _newer(client, first, since)
        except NoAnswer as error:
            if on_note is not None:
                on_note(f"{error}; retrying")
            continue
        if report(events) == 0 and state.is_terminal:
            return state


async def _newer(
    client: AdminClient, first: ListEvents, since: datetime | None
) -> tuple[list[AuditEvent], ReleaseState]:
    """Every event at or after ``since`` (all pages), and the release's state."""
    operation = first.model_copy(update={"since": since, "cursor": None, "limit": 500})
    events: list[AuditEvent] = []
    while True:
        page = await event_page(client, operation)
        events += page.events
        if page.next_cursor is None:
            return events, page.release_state
        operation = operation.model_copy(update={"cursor": page.next_cursor})


__all__ = ["DEFAULT_FOLLOW_INTERVAL", "OVERLAP", "event_page", "follow_events"]
