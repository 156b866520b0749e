"""The MongoDB engine (PyMongo's async API): production, several machines, replica sets.

Every change to a release is one guarded single-document update: the filter names the expected
``state`` and ``revision``, so a writer that lost a race changes nothing and learns it
(:class:`StaleRevision`). The transition's new outbox messages and its audit events travel in that
same update (the events in the document's ``journal``): that is what makes "store the transition and
what it causes together" atomic without multi-document transactions.

After the update the events are copied to ``events``. What is then done (events copied, outbox
messages confirmed by the broker) is dropped from the document by the release's next update, for free,
or by a clean-up of its own once the release has been quiet for half a second or has ended. After a
crash, :meth:`MongoStore.open_releases` copies whatever journal was left, so no event is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection, Sequence
from datetime import datetime
from typing import Any

import structlog
from pymongo import ASCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from coordinator import metrics
from coordinator.store._common import DoneIds, timed, without
from coordinator.store._interface import (
    HeartbeatRecord,
    StaleRevision,
    StoreCounts,
    StoreUnavailable,
    VersionTaken,
)
from coordinator.store._mongo_docs import (
    EVENT_INDEXES,
    RELEASE_INDEXES,
    Doc,
    changed_fields,
    event_doc,
    event_from_doc,
    from_doc,
    instance_key,
    journal_of,
    only_duplicates,
    service_from_doc,
    to_doc,
)
from coordinator.store._mongo_read import MongoReads
from schemas.broker_url import mask_url
from schemas.documents import AuditEvent, Release, ServiceRecord
from schemas.enums import TERMINAL_RELEASE_STATES, ReleaseState

log = structlog.get_logger("coordinator.store")


class MongoStore(MongoReads):
    """The MongoDB engine (see the module's documentation)."""

    engine = "mongodb"

    def __init__(self, url: str, database: str) -> None:
        self.location = f"{mask_url(url)} (database {database})"
        self._url = url
        self._closed = False
        self.client: AsyncMongoClient[Doc] = AsyncMongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        self.db: AsyncDatabase[Doc] = self.client[database]
        self.releases = self.db["releases"]
        self.events = self.db["events"]
        self.services = self.db["services"]
        #: Per release: the events its stored ``journal`` holds, as this engine wrote or read them.
        self._journal: dict[str, list[AuditEvent]] = {}
        #: Per release: the ids of those already copied to ``events``.
        self._recorded = DoneIds()
        #: Per release: outbox messages the broker confirmed, still in the document.
        self._confirmed = DoneIds()
        self._ended: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._cleaner: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        try:
            for keys, options in RELEASE_INDEXES:
                await self.releases.create_index(keys, **options)
            for keys, options in EVENT_INDEXES:
                await self.events.create_index(keys, **options)
        except PyMongoError as error:
            raise StoreUnavailable(f"cannot use MongoDB at {self.location}: {error}") from None
        self._cleaner = asyncio.create_task(self._clean_forever())

    async def close(self) -> None:
        if self._closed:
            return
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.gather(self._cleaner, return_exceptions=True)
            self._cleaner = None
            with contextlib.suppress(Exception):
                await self._clean(self._confirmed.releases() + self._recorded.releases())
        self._closed = True
        await self.client.close()

    async def drop(self) -> None:
        await self.close()
        client: AsyncMongoClient[Doc] = AsyncMongoClient(self._url, serverSelectionTimeoutMS=10_000)
        try:
            await client.drop_database(self.db.name)
        finally:
            await client.close()

    # ------------------------------------------------------------------ writes

    async def insert(self, release: Release, events: Sequence[AuditEvent]) -> None:
        doc = to_doc(release)
        doc["journal"] = [e.model_dump(mode="python") for e in events]
        doc["open"] = True
        try:
            await timed("insert_release", self.releases.insert_one(doc))
        except DuplicateKeyError as error:
            raise VersionTaken(str(error)) from error
        self._journal[release.id] = list(events)
        self._note_end(release)
        await self._copy_journal(release.id)

    async def compare_and_set(self, before: Release, after: Release, events: Sequence[AuditEvent]) -> None:
        async with self._lock(before.id):
            confirmed = self._confirmed.take(before.id)
            recorded = self._recorded.take(before.id)
            update, journal = self._update(before, after, events, confirmed, recorded)
            if journal is None:  # the copied events could not be dropped in this write: later
                self._recorded.add(before.id, recorded)
            guard = {"_id": before.id, "state": before.state.value, "revision": before.revision}
            try:
                result = await timed("compare_and_set", self.releases.update_one(guard, update))
                if result.matched_count != 1:
                    metrics.STORE_CONFLICTS.inc()
                    raise StaleRevision(
                        f"{before.id} is no longer {before.state} at revision {before.revision}"
                    )
            except BaseException as error:
                self._confirmed.add(before.id, confirmed)
                if journal is not None:
                    self._recorded.add(before.id, recorded)
                if isinstance(error, StaleRevision):
                    self._journal.pop(before.id, None)  # the next read learns it again
                if isinstance(error, DuplicateKeyError):
                    raise VersionTaken(str(error)) from error
                raise
            if journal is not None:
                self._journal[before.id] = journal
            else:
                self._journal.setdefault(before.id, []).extend(events)
            self._note_end(after)
        await self._copy_journal(before.id)

    def _update(
        self,
        before: Release,
        after: Release,
        events: Sequence[AuditEvent],
        confirmed: set[str],
        recorded: set[str],
    ) -> tuple[Doc, list[AuditEvent] | None]:
        """The update, and the whole journal it sets (None if it only appends ``events``).

        Only the fields that differ are written (``tasks.<service>`` one by one), so the update stays
        small however many services a release has.
        """
        update: Doc = {"$set": changed_fields(to_doc(before), to_doc(after))}
        outbox = [e for e in after.outbox if e.message_id not in confirmed]
        if confirmed or after.outbox != before.outbox:
            update["$set"]["outbox"] = [e.model_dump(mode="python") for e in outbox]
        known = self._journal.get(before.id)
        journal: list[AuditEvent] | None = None
        if known is not None and recorded:  # drop what was copied and add what is new: one $set
            journal = [e for e in known if e.id not in recorded] + list(events)
            update["$set"]["journal"] = [e.model_dump(mode="python") for e in journal]
        elif events:
            update["$push"] = {"journal": {"$each": [e.model_dump(mode="python") for e in events]}}
        left = journal if journal is not None else [*(known or ()), *events]
        update["$set"]["open"] = not (after.state.is_terminal and not outbox and not left)
        return update, journal

    async def delivered(self, release_id: str, message_ids: Collection[str]) -> None:
        self._confirmed.add(release_id, message_ids)
        if release_id in self._ended:
            await self._clean([release_id])

    async def record(self, events: Sequence[AuditEvent]) -> None:
        docs = [event_doc(e) for e in events]
        if not docs:
            return
        try:
            await timed("record_events", self.events.insert_many(docs, ordered=False))
        except PyMongoError as error:  # a replayed journal: those events are already there
            if not only_duplicates(error):
                raise

    async def heartbeat(self, beat: HeartbeatRecord) -> None:
        fields = {
            "last_heartbeat_at": beat.at,
            "healthy": beat.healthy,
            "health_detail": beat.detail,
            "sdk_version": beat.sdk_version,
            f"instances.{instance_key(beat.instance_id)}": beat.at,
        }
        await timed(
            "heartbeat",
            self.services.update_one(
                {"_id": beat.service},
                {"$set": fields, "$setOnInsert": {"required": False, "registered_at": beat.at}},
                upsert=True,
            ),
        )

    async def set_required(self, name: str, required: bool, now: datetime) -> ServiceRecord:
        await self.services.update_one(
            {"_id": name},
            {"$set": {"required": required}, "$setOnInsert": {"registered_at": now, "instances": {}}},
            upsert=True,
        )
        record = await self.service(name)
        assert record is not None
        return record

    # ------------------------------------------------------------------ hot-path reads

    async def get(self, release_id: str) -> Release | None:
        doc = await timed("get_release", self.releases.find_one({"_id": release_id}))
        if doc is None:
            return None
        return self._learn(doc)

    async def open_releases(self) -> list[Release]:
        """Open releases, after copying whatever journal a previous run left to ``events``."""
        releases = [self._learn(doc) for doc in await self.releases.find({"open": True}).to_list()]
        for release in releases:
            await self._copy_journal(release.id)
        return releases

    def _learn(self, doc: Doc) -> Release:
        release = from_doc(doc)
        self._journal[release.id] = journal_of(doc)
        self._recorded.take(release.id)
        self._note_end(release)
        return without(release, self._confirmed.of(release.id))

    async def last_created(self) -> Release | None:
        doc = await self.releases.find_one({}, sort=[("seq", -1)], projection={"journal": 0})
        return None if doc is None else from_doc(doc)

    async def highest_final_version(self) -> str | None:
        doc = await self.releases.find_one(
            {"final_sort": {"$type": "string"}}, sort=[("final_sort", -1)], projection={"final_version": 1}
        )
        return None if doc is None else str(doc["final_version"])

    async def count_by_state(self) -> dict[ReleaseState, int]:
        pipeline: list[Doc] = [{"$group": {"_id": "$state", "count": {"$sum": 1}}}]
        rows = await (await self.releases.aggregate(pipeline)).to_list()
        return {ReleaseState(row["_id"]): int(row["count"]) for row in rows}

    async def services_named(self, names: Sequence[str]) -> dict[str, ServiceRecord]:
        found = await self.services.find({"_id": {"$in": list(names)}}).to_list()
        return {record.name: record for record in map(service_from_doc, found)}

    async def required_services(self) -> list[str]:
        docs = await self.services.find({"required": True}, projection={"_id": 1}).to_list()
        return sorted(str(d["_id"]) for d in docs)

    # ------------------------------------------------------------------ copying

    async def counts(self) -> StoreCounts:
        releases, events, services = await asyncio.gather(
            self.releases.count_documents({}),
            self.events.count_documents({}),
            self.services.count_documents({}),
        )
        return StoreCounts(releases=releases, events=events, services=services)

    async def export_releases(self, batch: int) -> AsyncIterator[list[Release]]:
        await self.open_releases()  # copies any journal left behind to events first
        chunk: list[Release] = []
        async for doc in self.releases.find({}, sort=[("seq", ASCENDING)], batch_size=batch):
            release = from_doc(doc)
            chunk.append(without(release, self._confirmed.of(release.id)))
            if len(chunk) == batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def export_events(self, batch: int) -> AsyncIterator[list[AuditEvent]]:
        chunk: list[AuditEvent] = []
        async for doc in self.events.find({}, sort=[("at", ASCENDING), ("_id", ASCENDING)], batch_size=batch):
            chunk.append(event_from_doc(doc))
            if len(chunk) == batch:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    async def import_batch(
        self, releases: Sequence[Release], events: Sequence[AuditEvent], services: Sequence[ServiceRecord]
    ) -> None:
        try:
            if releases:
                await self.releases.insert_many([to_doc(r) for r in releases], ordered=True)
            if events:
                await self.events.insert_many([event_doc(e) for e in events], ordered=True)
        except DuplicateKeyError as error:
            raise VersionTaken(str(error)) from error
        for record in services:
            doc: dict[str, Any] = record.model_dump(mode="python")
            doc["_id"] = doc.pop("name")
            doc["instances"] = {instance_key(k): v for k, v in record.instances.items()}
            await self.services.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    # ------------------------------------------------------------------ what is done, dropped

    def _lock(self, release_id: str) -> asyncio.Lock:
        return self._locks.setdefault(release_id, asyncio.Lock())

    def _note_end(self, release: Release) -> None:
        if release.state in TERMINAL_RELEASE_STATES:
            self._ended.add(release.id)
        else:
            self._ended.discard(release.id)

    async def _copy_journal(self, release_id: str) -> None:
        """Copy the release's journal events to ``events``; a failure leaves them for the next try."""
        copied = self._recorded.of(release_id)
        pending = [e for e in self._journal.get(release_id, ()) if e.id not in copied]
        if not pending:
            return
        try:
            await self.record(pending)
        except PyMongoError as error:
            log.warning("audit events not copied yet; will retry", release_id=release_id, error=repr(error))
            return
        self._recorded.add(release_id, [e.id for e in pending])
        if release_id in self._ended:
            await self._clean([release_id])

    async def _clean(self, release_ids: Sequence[str]) -> None:
        """Drop the confirmed outbox messages and copied events of these releases from their documents;
        close those that ended with nothing left."""
        for release_id in dict.fromkeys(release_ids):
            async with self._lock(release_id):
                await self._clean_one(release_id)

    async def _clean_one(self, release_id: str) -> None:
        await self._retry_copy(release_id)
        confirmed = self._confirmed.take(release_id)
        recorded = self._recorded.take(release_id)
        pulls: Doc = {}
        if confirmed:
            pulls["outbox"] = {"message_id": {"$in": sorted(confirmed)}}
        if recorded:
            pulls["journal"] = {"id": {"$in": sorted(recorded)}}
        try:
            if pulls:
                await timed("drop_done", self.releases.update_one({"_id": release_id}, {"$pull": pulls}))
            if release_id in self._ended:
                await self.releases.update_one(
                    {"_id": release_id, "outbox": {"$size": 0}, "journal": {"$size": 0}},
                    {"$set": {"open": False}},
                )
        except BaseException:
            self._confirmed.add(release_id, confirmed)
            self._recorded.add(release_id, recorded)
            raise
        journal = [e for e in self._journal.get(release_id, ()) if e.id not in recorded]
        self._journal[release_id] = journal
        if release_id in self._ended and not journal and not self._confirmed.of(release_id):
            self._journal.pop(release_id, None)
            self._locks.pop(release_id, None)

    async def _retry_copy(self, release_id: str) -> None:
        """Events whose copy failed earlier are copied before the journal is cleaned."""
        copied = self._recorded.of(release_id)
        pending = [e for e in self._journal.get(release_id, ()) if e.id not in copied]
        if pending:
            await self.record(pending)
            self._recorded.add(release_id, [e.id for e in pending])

    async def _clean_forever(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            with contextlib.suppress(Exception):  # the next round tries again
                await self._clean(self._confirmed.due() + self._recorded.due())
