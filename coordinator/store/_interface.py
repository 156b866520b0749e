"""What the coordinator needs from a store, whatever the engine behind it.

Two sides:

* :class:`ReleaseWriter`, the hot path of the active coordinator: read a release, insert one, store a
  transition with a compare-and-set (its new outbox messages and audit events in the same atomic write),
  learn which outbox messages the broker confirmed, replay what is open after a restart, and the
  service registry's heartbeats.
* :class:`ReleaseReader`, what operators ask for: pages of releases, events, notes and studies, and
  the registry. Page cursors are opaque strings that belong to the engine that handed them out.

:class:`Store` is both, plus opening, closing, dropping and copying. The engines are
:class:`coordinator.store.sqlite.SqliteStore` (the embedded default: one file, one machine) and
:class:`coordinator.store.mongo.MongoStore` (production: several machines, replica sets). One contract
test suite (``tests/store/``) runs on both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from schemas.documents import (
    AuditEvent,
    Note,
    Release,
    ReleaseBrief,
    ReleaseView,
    ServiceRecord,
    StudySummary,
)
from schemas.enums import EventKind, ReleaseState

T = TypeVar("T")


class StoreError(Exception):
    """Base of the store's own errors."""


class StaleRevision(StoreError):
    """The release changed since it was read: re-read it and decide again."""


class VersionTaken(StoreError):
    """Another release already holds that version or creation sequence number."""


class BadCursor(StoreError, ValueError):
    """A page cursor that this store did not hand out."""


class StoreUnavailable(StoreError):
    """The store cannot be opened or used: the text says why and what to do."""


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing, newest first, and the cursor of the next page (None on the last)."""

    items: list[T]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class StoreCounts:
    releases: int
    events: int
    services: int

    @property
    def empty(self) -> bool:
        return not (self.releases or self.events or self.services)


@dataclass(frozen=True, slots=True)
class HeartbeatRecord:
    """One heartbeat as the registry records it."""

    service: str
    instance_id: str
    sdk_version: str
    healthy: bool
    detail: str | None
    at: datetime


class ReleaseWriter(Protocol):
    """The active coordinator's side: small, fast, and atomic where it must be."""

    async def get(self, release_id: str) -> Release | None:
        """The release with the outbox messages not yet confirmed by the broker."""

    async def insert(self, release: Release, events: Sequence[AuditEvent]) -> None:
        """Store a new release and its creation events; :class:`VersionTaken` if its ``seq`` or tentative
        version is already held."""

    async def compare_and_set(self, before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
        """Store ``after`` if the stored release is still ``before`` (same state and revision), else raise
        :class:`StaleRevision`. The outbox messages of ``after`` that ``before`` lacks and ``events`` are
        stored in the same atomic write. :class:`VersionTaken` if ``after``'s final version is held."""

    async def delivered(self, release_id: str, message_ids: Collection[str]) -> None:
        """The broker confirmed these outbox messages: they are never returned again."""

    async def open_releases(self) -> list[Release]:
        """Releases that are not final, or still have outbox messages to deliver (recovery)."""

    async def record(self, events: Sequence[AuditEvent]) -> None:
        """Append events that belong to no transition (refusals, dead letters); a known id is skipped."""

    async def last_created(self) -> Release | None:
        """The release with the highest creation sequence number."""

    async def highest_final_version(self) -> str | None: ...

    async def count_by_state(self) -> dict[ReleaseState, int]: ...

    async def heartbeat(self, beat: HeartbeatRecord) -> None: ...

    async def services_named(self, names: Sequence[str]) -> dict[str, ServiceRecord]: ...

    async def required_services(self) -> list[str]: ...

    async def set_required(self, name: str, required: bool, now: datetime) -> ServiceRecord: ...


class ReleaseReader(Protocol):
    """What operators ask for. Every listing is newest first and paged."""

    async def state_of(self, release_id: str) -> ReleaseState | None: ...

    async def list_releases(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        state: ReleaseState | None = None,
        study: str | None = None,
        since: datetime | None = None,
    ) -> Page[ReleaseView]:
        """Releases newest first (by creation), as a list shows them: each view without its notes, with
        their count. An engine reads the releases without their notes and outbox (up to 128 KB of notes
        each that a list never shows)."""

    async def event_page(
        self,
        release_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        kind: EventKind | None = None,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[AuditEvent]:
        """A release's events by time then id, newest first."""

    async def request_events(self, request_id: str) -> list[AuditEvent]:
        """The audit events an operator's request caused (its message id): how a request the broker
        delivers again is recognized as done. The events of a service's messages (those naming a
        service) are never among them, whatever message id the service gave."""

    async def note_page(
        self,
        release_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        study: str | None = None,
        since: datetime | None = None,
    ) -> Page[Note] | None:
        """A release's notes newest first; None if there is no such release."""

    async def study_summary(self, study: str) -> StudySummary | None:
        """The latest and the last published release of a study, and how many releases had it."""

    async def study_releases(
        self,
        study: str,
        limit: int,
        cursor: str | None = None,
        *,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[ReleaseBrief]: ...

    async def study_page(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        prefix: str | None = None,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[StudySummary]:
        """Every study, the one whose latest release is newest first (ties by study id)."""

    async def service(self, name: str) -> ServiceRecord | None: ...

    async def all_services(self) -> list[ServiceRecord]: ...


class Store(ReleaseWriter, ReleaseReader, Protocol):
    """An engine: both sides, plus its life cycle and what moving an installation needs."""

    #: ``sqlite`` or ``mongodb``.
    engine: str
    #: Where it is, fit to log (no password).
    location: str

    async def open(self) -> None:
        """Create or migrate what the store needs; :class:`StoreUnavailable` with the reason if it cannot."""

    async def close(self) -> None: ...

    async def drop(self) -> None:
        """Delete everything this store holds (tests and benchmarks)."""

    async def counts(self) -> StoreCounts: ...

    def export_releases(self, batch: int) -> AsyncIterator[list[Release]]:
        """Every release with its outbox, in creation order."""

    def export_events(self, batch: int) -> AsyncIterator[list[AuditEvent]]:
        """Every audit event, in time order."""

    async def import_batch(
        self, releases: Sequence[Release], events: Sequence[AuditEvent], services: Sequence[ServiceRecord]
    ) -> None:
        """Store documents copied from another store as they are (the same unique rules apply)."""
