"""The embedded store: one SQLite file per installation, for one machine.

The file is in WAL mode with ``synchronous=FULL``: a transaction is on disk when its commit returns, so the
coordinator acknowledges a reply only once its effect would survive a power cut. Heartbeats and the dropping
of confirmed outbox messages alone commit with ``NORMAL`` (the README says why that is safe). A transition
is one transaction: the guarded update of the release (``WHERE state = ? AND revision = ?``), its new outbox
rows and its audit events. Unique indexes hold the creation sequence, the tentative and the final versions.

SQLite is called from two threads of its own, never from the event loop: a writer (every write and the
reads of the hot path, in order) and a reader (operators' queries), each with its own connection; WAL lets
the reader see committed data while the writer writes. Two coordinators on one machine may share the file:
only the active one writes, and were two ever to write, each write is guarded by the release's revision
under SQLite's write lock, so one of them loses and re-reads instead of forking the release.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from coordinator import metrics
from coordinator.store import _sqlite_rows as rows
from coordinator.store._common import DoneIds, timed, without
from coordinator.store._interface import HeartbeatRecord, StaleRevision, StoreUnavailable, VersionTaken
from coordinator.store._sqlite_batch import GroupCommit
from coordinator.store._sqlite_read import SqliteReads
from coordinator.store._sqlite_schema import check_file, check_path, migrate, unavailable
from coordinator.store._sqlite_thread import Db, SqliteThread, T, prepare_reader
from schemas.documents import AuditEvent, OutboxEntry, Release, ServiceRecord
from schemas.enums import ReleaseState


class SqliteStore(SqliteReads):
    """The embedded engine (see the module's documentation)."""

    engine = "sqlite"

    def __init__(self, path: Path, *, before_commit: Callable[[], None] | None = None) -> None:
        self.path = path
        self.location = str(path)
        #: Called inside every durable transaction just before it commits (a seam for crash tests); the
        #: writes queued together share one transaction, so it is called once per batch of writes.
        self.before_commit = before_commit
        self._writer = SqliteThread("rc-store-writer")
        self._batches = GroupCommit(self._writer, path, lambda: self.before_commit)
        self._reader = SqliteThread("rc-store-reader")
        self._confirmed = DoneIds()
        self._ended: set[str] = set()
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        check_path(self.path)
        try:
            await self._writer.connect(self.path, self._prepare_writer)
            await self._reader.connect(self.path, prepare_reader)
        except BaseException:
            await self._reader.close()
            await self._writer.close()
            raise
        self._flusher = asyncio.create_task(self._flush_forever())

    def _prepare_writer(self, db: Db) -> None:
        try:
            check_file(db, self.path)
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"{self.path}: SQLite cannot use write-ahead logging there ({mode})")
            db.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as error:
            raise unavailable(error, self.path) from None
        migrate(db, self.path)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
            with contextlib.suppress(Exception):
                await self._flush(self._confirmed.releases())
        await self._reader.close()
        await self._writer.close()

    async def drop(self) -> None:
        await self.close()

        def delete() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)

        await asyncio.to_thread(delete)

    # ------------------------------------------------------------------ writes

    async def insert(self, release: Release, events: Sequence[AuditEvent]) -> None:
        def insert(db: Db) -> None:
            values = rows.release_values(release)
            db.execute(
                f"INSERT INTO releases ({', '.join(values)}) VALUES ({_marks(values)})", list(values.values())
            )
            db.executemany(
                "INSERT INTO release_studies VALUES (?, ?, ?, ?, ?, ?)", rows.study_rows(release, values)
            )
            _add_outbox(db, release.id, release.outbox)
            _add_events(db, events)

        await timed("insert_release", self._batches.write(insert))
        self._note_end(release)

    async def compare_and_set(self, before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
        confirmed = self._confirmed.take(before.id)

        def update(db: Db) -> None:
            values = rows.release_values(after)
            # Only the columns that change: SQLite rewrites an index entry whenever its column is set.
            unchanged = {k: v for k, v in rows.release_columns(before).items() if values[k] == v}
            changed = {k: v for k, v in values.items() if k not in unchanged and k not in _FIXED}
            found = db.execute(
                f"UPDATE releases SET {', '.join(f'{k} = ?' for k in changed)} "
                "WHERE id = ? AND state = ? AND revision = ?",
                [*changed.values(), before.id, before.state.value, before.revision],
            )
            if found.rowcount != 1:
                raise StaleRevision(f"{before.id} is no longer {before.state} at revision {before.revision}")
            _update_studies(db, before, after, values)
            _drop_outbox(db, confirmed)
            known = {e.message_id for e in before.outbox}
            _add_outbox(db, after.id, [e for e in after.outbox if e.message_id not in known])
            _add_events(db, events)

        try:
            await timed("compare_and_set", self._batches.write(update))
        except (StaleRevision, VersionTaken):
            self._confirmed.add(before.id, confirmed)
            metrics.STORE_CONFLICTS.inc()
            raise
        except BaseException:
            self._confirmed.add(before.id, confirmed)
            raise
        self._note_end(after)

    async def delivered(self, release_id: str, message_ids: Collection[str]) -> None:
        self._confirmed.add(release_id, message_ids)
        if release_id in self._ended:
            await self._flush([release_id])

    async def record(self, events: Sequence[AuditEvent]) -> None:
        if events:
            await timed(
                "record_events",
                self._batches.write(lambda db: _add_events(db, events)),
            )

    async def heartbeat(self, beat: HeartbeatRecord) -> None:
        def upsert(db: Db) -> None:
            found = db.execute("SELECT doc FROM services WHERE name = ?", (beat.service,)).fetchone()
            record = (
                rows.to_service(found[0])
                if found
                else ServiceRecord(name=beat.service, registered_at=beat.at)
            )
            record = record.model_copy(
                update={
                    "last_heartbeat_at": beat.at,
                    "healthy": beat.healthy,
                    "health_detail": beat.detail,
                    "sdk_version": beat.sdk_version,
                    "instances": {**record.instances, beat.instance_id: beat.at},
                }
            )
            _put_service(db, record)

        # A heartbeat is soon replaced by the next one: it need not wait for the disk.
        await timed("heartbeat", self._writer.call(lambda db: self._unsynced_transaction(db, upsert)))

    async def set_required(self, name: str, required: bool, now: datetime) -> ServiceRecord:
        def upsert(db: Db) -> ServiceRecord:
            found = db.execute("SELECT doc FROM services WHERE name = ?", (name,)).fetchone()
            record = rows.to_service(found[0]) if found else ServiceRecord(name=name, registered_at=now)
            record = record.model_copy(update={"required": required})
            _put_service(db, record)
            return record

        return await self._batches.write(upsert)

    def _unsynced_transaction(self, db: Db, work: Callable[[Db], T]) -> T:
        """``work`` in a transaction of its own whose commit does not wait for the disk (``NORMAL``)."""
        db.execute("PRAGMA synchronous = NORMAL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                    db.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as error:
            raise VersionTaken(str(error)) from None
        except sqlite3.OperationalError as error:
            raise unavailable(error, self.path) from error
        finally:
            db.execute("PRAGMA synchronous = FULL")
        return result

    # ------------------------------------------------------------------ hot-path reads

    async def get(self, release_id: str) -> Release | None:
        def get(db: Db) -> Release | None:
            found = db.execute("SELECT doc FROM releases WHERE id = ?", (release_id,)).fetchone()
            if found is None:
                return None
            return rows.to_release(found[0], rows.outbox_of(db, [release_id]).get(release_id, ()))

        release = await timed("get_release", self._writer.call(get))
        return None if release is None else without(release, self._confirmed.of(release.id))

    async def open_releases(self) -> list[Release]:
        def find(db: Db) -> list[Release]:
            marks = ",".join("?" * len(rows.TERMINAL))
            found = db.execute(
                f"SELECT id, doc FROM releases WHERE state NOT IN ({marks}) "
                f"OR id IN (SELECT DISTINCT release_id FROM outbox) ORDER BY seq",
                rows.TERMINAL,
            ).fetchall()
            outboxes = rows.outbox_of(db, [release_id for release_id, _ in found])
            return [rows.to_release(doc, outboxes.get(release_id, ())) for release_id, doc in found]

        releases = await self._writer.call(find)
        for release in releases:
            self._note_end(release)
        return [without(r, self._confirmed.of(r.id)) for r in releases]

    async def last_created(self) -> Release | None:
        found = await self._writer.call(
            lambda db: db.execute("SELECT doc FROM releases ORDER BY seq DESC LIMIT 1").fetchone()
        )
        return None if found is None else rows.to_release(found[0])

    async def highest_final_version(self) -> str | None:
        found = await self._writer.call(
            lambda db: db.execute(
                "SELECT final_version FROM releases WHERE final_sort IS NOT NULL "
                "ORDER BY final_sort DESC LIMIT 1"
            ).fetchone()
        )
        return None if found is None else str(found[0])

    async def count_by_state(self) -> dict[ReleaseState, int]:
        found = await self._writer.call(
            lambda db: db.execute("SELECT state, COUNT(*) FROM releases GROUP BY state").fetchall()
        )
        return {ReleaseState(state): count for state, count in found}

    async def services_named(self, names: Sequence[str]) -> dict[str, ServiceRecord]:
        def find(db: Db) -> list[str]:
            marks = ",".join("?" * len(names))
            return [
                doc for (doc,) in db.execute(f"SELECT doc FROM services WHERE name IN ({marks})", list(names))
            ]

        docs = await self._writer.call(find) if names else []
        return {record.name: record for record in map(rows.to_service, docs)}

    async def required_services(self) -> list[str]:
        found = await self._writer.call(
            lambda db: db.execute("SELECT name FROM services WHERE required = 1 ORDER BY name").fetchall()
        )
        return [name for (name,) in found]

    # ------------------------------------------------------------------ copying

    async def export_releases(self, batch: int) -> AsyncIterator[list[Release]]:
        """Every release as :meth:`get` reads it: the messages the broker confirmed are left out."""
        async for releases in super().export_releases(batch):
            yield [without(r, self._confirmed.of(r.id)) for r in releases]

    async def import_batch(
        self, releases: Sequence[Release], events: Sequence[AuditEvent], services: Sequence[ServiceRecord]
    ) -> None:
        def load(db: Db) -> None:
            for release in releases:
                values = rows.release_values(release)
                db.execute(
                    f"INSERT INTO releases ({', '.join(values)}) VALUES ({_marks(values)})",
                    list(values.values()),
                )
                db.executemany(
                    "INSERT INTO release_studies VALUES (?, ?, ?, ?, ?, ?)", rows.study_rows(release)
                )
                _add_outbox(db, release.id, release.outbox)
            _add_events(db, events)
            for record in services:
                _put_service(db, record)

        await self._batches.write(load)

    # ------------------------------------------------------------------ confirmed outbox messages

    def _note_end(self, release: Release) -> None:
        if release.state.is_terminal:
            self._ended.add(release.id)
        else:
            self._ended.discard(release.id)

    async def _flush(self, release_ids: Sequence[str]) -> None:
        """Drop the confirmed outbox messages of these releases now, in one transaction."""
        taken = {rid: self._confirmed.take(rid) for rid in release_ids}
        ids = [message_id for group in taken.values() for message_id in group]
        if not ids:
            return
        try:
            # Dropping messages the broker confirmed need not wait for the disk: if a power cut undoes it,
            # the outbox publishes them once more, and their receivers drop them by message id.
            drop = self._writer.call(
                lambda db: self._unsynced_transaction(db, lambda db: _drop_outbox(db, ids))
            )
            await timed("drop_done", drop)
        except BaseException:
            for rid, group in taken.items():
                self._confirmed.add(rid, group)
            raise
        self._ended.difference_update(release_ids)

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            with contextlib.suppress(Exception):  # the next round tries again
                await self._flush(self._confirmed.due())


#: The columns a transition never changes.
_FIXED = frozenset({"id", "seq", "tentative_version", "created_at"})


def _marks(values: dict[str, Any]) -> str:
    return ", ".join("?" * len(values))


def _update_studies(db: Db, before: Release, after: Release, values: dict[str, Any]) -> None:
    """Keep ``release_studies`` in step with the release (``values``: its row, dumped once per write)."""
    if before.studies != after.studies:
        db.execute("DELETE FROM release_studies WHERE release_id = ?", (after.id,))
        db.executemany(
            "INSERT INTO release_studies VALUES (?, ?, ?, ?, ?, ?)", rows.study_rows(after, values)
        )
    elif before.state is not after.state or before.final_version != after.final_version:
        db.execute(
            "UPDATE release_studies SET state = ?, final_sort = ? WHERE release_id = ?",
            (values["state"], values["final_sort"], after.id),
        )


def _add_outbox(db: Db, release_id: str, entries: Sequence[OutboxEntry]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO outbox (message_id, release_id, entry) VALUES (?, ?, ?)",
        [(e.message_id, release_id, e.model_dump_json()) for e in entries],
    )


def _drop_outbox(db: Db, message_ids: Collection[str]) -> None:
    db.executemany("DELETE FROM outbox WHERE message_id = ?", [(m,) for m in message_ids])


def _add_events(db: Db, events: Sequence[AuditEvent]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO events (id, release_id, at, kind, state_after, doc) VALUES (?, ?, ?, ?, ?, ?)",
        [rows.event_values(e) for e in events],
    )


def _put_service(db: Db, record: ServiceRecord) -> None:
    db.execute(
        "INSERT INTO services (name, required, doc) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET required = excluded.required, doc = excluded.doc",
        (record.name, int(record.required), record.model_dump_json()),
    )
