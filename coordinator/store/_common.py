"""What both engines share: timing, note pages, and the outbox messages confirmed but not yet dropped."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from coordinator import metrics
from coordinator.store._interface import BadCursor, Page
from schemas.documents import Note, Release

T = TypeVar("T")

#: Confirmed outbox messages of a release that changes no more for this long are dropped on their own;
#: before that, the release's next write drops them for free.
QUIET_SECONDS = 0.5


async def timed(operation: str, awaitable: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await awaitable
    finally:
        metrics.STORE_LATENCY.labels(operation).observe(time.perf_counter() - started)


def bad_cursor(cursor: str) -> BadCursor:
    return BadCursor(f"invalid cursor {cursor!r}: pass the next_cursor of the previous page")


def seq_cursor(cursor: str | None) -> int | None:
    """The creation sequence number a release or study-release page cursor carries."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 18:
        raise bad_cursor(cursor)
    return int(cursor)


def note_page(
    release: Release, limit: int, cursor: str | None, *, study: str | None, since: datetime | None
) -> Page[Note]:
    """A release's notes newest first; the cursor is the number of the last note shown."""
    before = seq_cursor(cursor)
    notes = [
        n
        for n in reversed(release.notes)
        if (study is None or n.study == study)
        and (since is None or n.created_at >= since)
        and (before is None or int(n.id[1:]) < before)
    ]
    page = notes[:limit]
    return Page(page, page[-1].id[1:] if len(notes) > limit else None)


@dataclass
class _Ids:
    ids: set[str] = field(default_factory=set)
    #: When the first of them was added (``time.monotonic()``).
    since: float = 0.0


class DoneIds:
    """Per release, the ids of entries that are done (outbox messages the broker confirmed, journal events
    copied) but still stored in the release, until a write drops them.

    Dropping them costs a write; the release's next compare-and-set does it in the same write. Releases
    that stay quiet (or have ended) are cleaned up through :meth:`due`.
    """

    def __init__(self) -> None:
        self._by_release: dict[str, _Ids] = {}

    def add(self, release_id: str, ids: Iterable[str]) -> None:
        ids = set(ids)
        if not ids:
            return
        entry = self._by_release.get(release_id)
        if entry is None:
            entry = self._by_release[release_id] = _Ids(since=time.monotonic())
        entry.ids.update(ids)

    def of(self, release_id: str) -> set[str]:
        entry = self._by_release.get(release_id)
        return set() if entry is None else set(entry.ids)

    def take(self, release_id: str) -> set[str]:
        """Forget the release's ids (a write is about to drop them) and return them; :meth:`add` them
        back if that write fails."""
        entry = self._by_release.pop(release_id, None)
        return set() if entry is None else entry.ids

    def due(self, quiet: float = QUIET_SECONDS) -> list[str]:
        """Releases whose ids have waited ``quiet`` seconds for a write."""
        now = time.monotonic()
        return [rid for rid, entry in self._by_release.items() if now - entry.since >= quiet]

    def releases(self) -> list[str]:
        return list(self._by_release)


def without(release: Release, confirmed: Collection[str]) -> Release:
    """The release without these (confirmed) outbox messages."""
    if not confirmed or not release.outbox:
        return release
    return release.model_copy(
        update={"outbox": tuple(e for e in release.outbox if e.message_id not in confirmed)}
    )
