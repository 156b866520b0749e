"""The operators' side of the embedded store: pages, summaries and exports, on the reader's connection.

WAL lets this connection see what the writer committed while the writer writes; it never writes
(``PRAGMA query_only``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime

from coordinator.store import _sqlite_rows as rows
from coordinator.store._common import note_page, timed
from coordinator.store._interface import Page, StoreCounts
from coordinator.store._sqlite_thread import Db, SqliteThread
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


class SqliteReads:
    """The :class:`coordinator.store.ReleaseReader` of :class:`coordinator.store.sqlite.SqliteStore`."""

    _reader: SqliteThread

    # ------------------------------------------------------------------ operators' reads

    async def state_of(self, release_id: str) -> ReleaseState | None:
        found = await timed(
            "state_of",
            self._reader.call(
                lambda db: db.execute("SELECT state FROM releases WHERE id = ?", (release_id,)).fetchone()
            ),
        )
        return None if found is None else ReleaseState(found[0])

    async def list_releases(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        state: ReleaseState | None = None,
        study: str | None = None,
        since: datetime | None = None,
    ) -> Page[ReleaseView]:
        return await timed(
            "list_releases",
            self._reader.call(lambda db: rows.list_releases(db, limit, cursor, state, study, since)),
        )

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
        return await timed(
            "event_page",
            self._reader.call(lambda db: rows.event_page(db, release_id, limit, cursor, kind, state, since)),
        )

    async def request_events(self, request_id: str) -> list[AuditEvent]:
        found = await self._reader.call(
            lambda db: db.execute("SELECT doc FROM events WHERE request_id = ?", (request_id,)).fetchall()
        )
        return [AuditEvent.model_validate_json(doc) for (doc,) in found]

    async def note_page(
        self,
        release_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        study: str | None = None,
        since: datetime | None = None,
    ) -> Page[Note] | None:
        found = await self._reader.call(
            lambda db: db.execute("SELECT doc FROM releases WHERE id = ?", (release_id,)).fetchone()
        )
        if found is None:
            return None
        return note_page(rows.to_release(found[0]), limit, cursor, study=study, since=since)

    async def study_summary(self, study: str) -> StudySummary | None:
        return await timed("study_summary", self._reader.call(lambda db: rows.study_summary(db, study)))

    async def study_releases(
        self,
        study: str,
        limit: int,
        cursor: str | None = None,
        *,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[ReleaseBrief]:
        return await timed(
            "study_releases",
            self._reader.call(lambda db: rows.study_releases(db, study, limit, cursor, state, since)),
        )

    async def study_page(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        prefix: str | None = None,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[StudySummary]:
        return await timed(
            "study_page",
            self._reader.call(lambda db: rows.study_page(db, limit, cursor, prefix, state, since)),
        )

    async def service(self, name: str) -> ServiceRecord | None:
        found = await self._reader.call(
            lambda db: db.execute("SELECT doc FROM services WHERE name = ?", (name,)).fetchone()
        )
        return None if found is None else rows.to_service(found[0])

    async def all_services(self) -> list[ServiceRecord]:
        found = await self._reader.call(
            lambda db: db.execute("SELECT doc FROM services ORDER BY name").fetchall()
        )
        return [rows.to_service(doc) for (doc,) in found]

    # ------------------------------------------------------------------ copying

    async def counts(self) -> StoreCounts:
        def count(db: Db) -> StoreCounts:
            def rows_in(table: str) -> int:
                return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

            return StoreCounts(
                releases=rows_in("releases"), events=rows_in("events"), services=rows_in("services")
            )

        return await self._reader.call(count)

    async def export_releases(self, batch: int) -> AsyncIterator[list[Release]]:
        last = 0

        def page(db: Db) -> list[Release]:
            found = db.execute(
                "SELECT id, seq, doc FROM releases WHERE seq > ? ORDER BY seq LIMIT ?", (last, batch)
            ).fetchall()
            outboxes = rows.outbox_of(db, [release_id for release_id, _, _ in found])
            return [rows.to_release(doc, outboxes.get(release_id, ())) for release_id, _, doc in found]

        while releases := await self._reader.call(page):
            yield releases
            last = releases[-1].seq

    async def export_events(self, batch: int) -> AsyncIterator[list[AuditEvent]]:
        last: tuple[int, str] = (-1, "")

        def page(db: Db) -> list[tuple[int, str, str]]:
            return db.execute(
                "SELECT at, id, doc FROM events WHERE at > ? OR (at = ? AND id > ?) ORDER BY at, id LIMIT ?",
                (last[0], last[0], last[1], batch),
            ).fetchall()

        while found := await self._reader.call(page):
            yield [AuditEvent.model_validate_json(doc) for _, _, doc in found]
            last = (found[-1][0], found[-1][1])
