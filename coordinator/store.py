"""The MongoDB adapter: releases, the audit trail, and the service registry.

Every change to a release is one guarded single-document update: the filter names the
expected ``state`` and ``revision``, so a writer that lost a race changes nothing and learns it
(:class:`StaleRevision`); it then re-reads and re-applies. New outbox messages and journal
events are pushed in that same update, which is what makes "store the transition and its
commands together" atomic without transactions.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from coordinator import metrics
from coordinator.versioning import sort_key
from schemas.documents import AuditEvent, OutboxEntry, Release, ReleaseBrief, ServiceRecord, StudySummary
from schemas.enums import TERMINAL_RELEASE_STATES, EventKind, ReleaseState

Doc = dict[str, Any]
T = TypeVar("T")


class StaleRevision(Exception):
    """The release changed since it was read: re-read and decide again."""


class VersionTaken(Exception):
    """Another release already holds that version (or creation sequence number)."""


#: The indexes the queries below rely on (listed in the README).
RELEASE_INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    ([("seq", DESCENDING)], {"unique": True, "name": "seq_unique"}),
    ([("tentative_version", ASCENDING)], {"unique": True, "name": "tentative_version_unique"}),
    (
        [("final_version", ASCENDING)],
        {
            "unique": True,
            "name": "final_version_unique",
            "partialFilterExpression": {"final_version": {"$type": "string"}},
        },
    ),
    ([("final_sort", DESCENDING)], {"name": "final_sort"}),
    ([("state", ASCENDING), ("seq", DESCENDING)], {"name": "state_seq"}),
    ([("open", ASCENDING)], {"name": "open_releases"}),
    # Multikey: a release's every study. "The latest release of a study" and "the releases of a study,
    # newest first" (rc study show, rc release list --study) walk this index from its newest entry.
    ([("studies", ASCENDING), ("seq", DESCENDING)], {"name": "studies_seq"}),
    # Multikey: "the last published release of a study" is the first entry of this index under
    # (study, published): its highest final version.
    (
        [("studies", ASCENDING), ("state", ASCENDING), ("final_sort", DESCENDING)],
        {"name": "studies_state_final"},
    ),
]
EVENT_INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    # A release's audit trail newest first, paged by (at, _id): the sort key is unique, so pages are stable.
    ([("release_id", ASCENDING), ("at", DESCENDING), ("_id", DESCENDING)], {"name": "release_at_id"}),
]


class BadCursor(ValueError):
    """A page cursor that this store did not hand out."""


class Store:
    def __init__(self, client: AsyncMongoClient[Doc], database: str) -> None:
        self.client = client
        self.db: AsyncDatabase[Doc] = client[database]
        self.releases: AsyncCollection[Doc] = self.db["releases"]
        self.events: AsyncCollection[Doc] = self.db["events"]
        self.services: AsyncCollection[Doc] = self.db["services"]

    @classmethod
    def connect(cls, url: str, database: str) -> Store:
        client: AsyncMongoClient[Doc] = AsyncMongoClient(url, tz_aware=True, serverSelectionTimeoutMS=10_000)
        return cls(client, database)

    async def close(self) -> None:
        await self.client.close()

    async def ensure_indexes(self) -> None:
        for keys, options in RELEASE_INDEXES:
            await self.releases.create_index(keys, **options)
        for keys, options in EVENT_INDEXES:
            await self.events.create_index(keys, **options)

    # ------------------------------------------------------------------ releases

    async def insert_release(self, release: Release) -> None:
        try:
            await _timed("insert_release", self.releases.insert_one(_to_doc(release)))
        except DuplicateKeyError as error:
            raise VersionTaken(str(error)) from error

    async def get(self, release_id: str) -> Release | None:
        doc = await _timed("get_release", self.releases.find_one({"_id": release_id}))
        return None if doc is None else _from_doc(doc)

    async def state_of(self, release_id: str) -> ReleaseState | None:
        """A release's state alone: no need to read and parse the whole document (tasks, notes)."""
        doc = await _timed(
            "state_of", self.releases.find_one({"_id": release_id}, projection={"_id": 0, "state": 1})
        )
        return None if doc is None else ReleaseState(doc["state"])

    async def last_created(self) -> Release | None:
        doc = await self.releases.find_one({}, sort=[("seq", DESCENDING)])
        return None if doc is None else _from_doc(doc)

    async def highest_final_version(self) -> str | None:
        doc = await self.releases.find_one(
            {"final_sort": {"$type": "string"}},
            sort=[("final_sort", DESCENDING)],
            projection={"final_version": 1},
        )
        return None if doc is None else str(doc["final_version"])

    async def count_by_state(self) -> dict[str, int]:
        pipeline: list[Doc] = [{"$group": {"_id": "$state", "count": {"$sum": 1}}}]
        rows = await (await self.releases.aggregate(pipeline)).to_list()
        return {str(row["_id"]): int(row["count"]) for row in rows}

    async def open_releases(self) -> AsyncIterator[Release]:
        """Releases that are not terminal, or still have messages or events to deliver."""
        async for doc in self.releases.find({"open": True}):
            yield _from_doc(doc)

    async def list_releases(
        self,
        state: ReleaseState | None,
        limit: int,
        before_seq: int | None,
        *,
        study: str | None = None,
        since: datetime | None = None,
    ) -> tuple[list[Release], int | None]:
        """Newest first; returns the page and the ``seq`` to continue from (None on the last page)."""
        query: Doc = {}
        if state is not None:
            query["state"] = state.value
        if study is not None:
            query["studies"] = study
        if since is not None:
            query["created_at"] = {"$gte": since}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        cursor = self.releases.find(query, sort=[("seq", DESCENDING)], limit=limit + 1)
        docs = await _timed("list_releases", cursor.to_list())
        page = [_from_doc(d) for d in docs[:limit]]
        return page, (page[-1].seq if len(docs) > limit else None)

    async def compare_and_set(self, before: Release, after: Release, *, rewrite: bool = False) -> None:
        """Store ``after`` if the stored release is still ``before``; else raise StaleRevision.

        Only the fields that differ are written (``tasks.<service>`` one by one), so the update stays
        small however many services a release has. Outbox and journal entries new in ``after`` are
        pushed. With ``rewrite``, outbox and journal are set to those of ``after`` instead: the stored
        ones also list entries already delivered, which ``before`` (and so ``after``) leaves out.
        """
        update: Doc = {"$set": changed_fields(_to_doc(before), _to_doc(after))}
        if rewrite:
            update["$set"]["outbox"] = [e.model_dump(mode="python") for e in after.outbox]
            update["$set"]["journal"] = [e.model_dump(mode="python") for e in after.journal]
        else:
            pushes = {
                name: {"$each": [e.model_dump(mode="python") for e in new]}
                for name, new in (
                    ("outbox", after.outbox[len(before.outbox) :]),
                    ("journal", after.journal[len(before.journal) :]),
                )
                if new
            }
            if pushes:
                update["$push"] = pushes
        if after.outbox or after.journal:
            update["$set"]["open"] = True  # something to deliver: recovery must look at it
        guard = {"_id": before.id, "state": before.state.value, "revision": before.revision}
        try:
            result = await _timed("compare_and_set", self.releases.update_one(guard, update))
        except DuplicateKeyError as error:
            raise VersionTaken(str(error)) from error
        if result.matched_count != 1:
            metrics.STORE_CONFLICTS.inc()
            raise StaleRevision(f"{before.id} is no longer {before.state} at revision {before.revision}")

    async def settle(
        self, release_id: str, delivered: Sequence[str], recorded: Sequence[str], *, close: bool = False
    ) -> None:
        """Drop delivered messages and recorded journal events from the release in one update; with
        ``close``, mark an ended release closed once nothing is left in either."""
        pulls: Doc = {}
        if delivered:
            pulls["outbox"] = {"message_id": {"$in": list(delivered)}}
        if recorded:
            pulls["journal"] = {"id": {"$in": list(recorded)}}
        if pulls:
            await _timed("settle", self.releases.update_one({"_id": release_id}, {"$pull": pulls}))
        if close:
            await self._close_if_settled(release_id)

    async def _close_if_settled(self, release_id: str) -> None:
        await self.releases.update_one(
            {
                "_id": release_id,
                "state": {"$in": [s.value for s in TERMINAL_RELEASE_STATES]},
                "outbox": {"$size": 0},
                "journal": {"$size": 0},
            },
            {"$set": {"open": False}},
        )

    # ------------------------------------------------------------------ events

    async def record(self, events: Iterable[AuditEvent]) -> None:
        docs = [_event_doc(e) for e in events]
        if not docs:
            return
        try:
            await _timed("record_events", self.events.insert_many(docs, ordered=False))
        except Exception as error:  # a replayed journal: those events are already there
            if not _only_duplicates(error):
                raise

    async def events_of(self, release_id: str, limit: int) -> list[AuditEvent]:
        page, _ = await self.event_page(release_id, limit)
        return page

    async def event_page(
        self,
        release_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        kind: EventKind | None = None,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> tuple[list[AuditEvent], str | None]:
        """A release's events newest first (by ``at``, then id), and the cursor of the next page.

        Raises :class:`BadCursor` for a cursor that is not a ``next_cursor`` of this method.
        """
        query: Doc = {"release_id": release_id}
        if kind is not None:
            query["kind"] = kind.value
        if state is not None:
            query["state_after"] = state.value
        if since is not None:
            query["at"] = {"$gte": since}
        if cursor is not None:
            at, event_id = decode_event_cursor(cursor)
            query["$or"] = [{"at": {"$lt": at}}, {"at": at, "_id": {"$lt": event_id}}]
        found = self.events.find(query, sort=[("at", DESCENDING), ("_id", DESCENDING)], limit=limit + 1)
        docs = await _timed("event_page", found.to_list())
        page = [_event_from_doc(d) for d in docs[:limit]]
        more = len(docs) > limit
        return page, (encode_event_cursor(page[-1]) if more else None)

    # ------------------------------------------------------------------ studies

    async def study_summary(self, study: str) -> StudySummary | None:
        """The latest release with ``study``, its last published one, and how many releases had it.

        The three queries are independent index look-ups: they are sent at once (one round trip's wait).
        """
        latest, published, count = await asyncio.gather(
            _timed(
                "study_latest",
                self.releases.find_one({"studies": study}, sort=[("seq", DESCENDING)], projection=_BRIEF),
            ),
            _timed(
                "study_published",
                self.releases.find_one(
                    {"studies": study, "state": ReleaseState.PUBLISHED.value},
                    sort=[("final_sort", DESCENDING)],
                    projection=_BRIEF,
                ),
            ),
            _timed("study_count", self.releases.count_documents({"studies": study})),
        )
        if latest is None:
            return None
        return StudySummary(
            study=study,
            release_count=count,
            latest=_brief(latest),
            last_published=None if published is None else _brief(published),
        )

    async def study_releases(
        self,
        study: str,
        limit: int,
        before_seq: int | None,
        *,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> tuple[list[ReleaseBrief], int | None]:
        """The releases that included ``study``, newest first, and the ``seq`` of the next page."""
        query: Doc = {"studies": study}
        if state is not None:
            query["state"] = state.value
        if since is not None:
            query["created_at"] = {"$gte": since}
        if before_seq is not None:
            query["seq"] = {"$lt": before_seq}
        found = self.releases.find(query, sort=[("seq", DESCENDING)], limit=limit + 1, projection=_BRIEF)
        docs = await _timed("study_releases", found.to_list())
        more = len(docs) > limit
        return [_brief(d) for d in docs[:limit]], (int(docs[limit - 1]["seq"]) if more else None)

    async def study_page(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        prefix: str | None = None,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> tuple[list[StudySummary], str | None]:
        """Every study, the one whose latest release is newest first (ties by study id), a page at a time.

        One aggregation groups the releases by study (the latest per study, and a count); a second one
        finds the last published release of the studies on the page only.
        """
        first: Doc = {"studies": {"$regex": "^" + re.escape(prefix)}} if prefix else {}
        pipeline: list[Doc] = [
            {"$match": first},
            {"$project": {**_BRIEF, "studies": 1}},
            {"$unwind": "$studies"},
        ]
        if prefix:
            pipeline.append({"$match": {"studies": {"$regex": "^" + re.escape(prefix)}}})
        pipeline += [
            {"$sort": {"seq": -1}},
            {
                "$group": {
                    "_id": "$studies",
                    "releases": {"$sum": 1},
                    **{f"latest_{name}": {"$first": f"${name}"} for name in _BRIEF},
                }
            },
        ]
        after: Doc = {}
        if state is not None:
            after["latest_state"] = state.value
        if since is not None:
            after["latest_created_at"] = {"$gte": since}
        if cursor is not None:
            seq, study = decode_study_cursor(cursor)
            after["$or"] = [{"latest_seq": {"$lt": seq}}, {"latest_seq": seq, "_id": {"$gt": study}}]
        if after:
            pipeline.append({"$match": after})
        pipeline += [{"$sort": {"latest_seq": -1, "_id": 1}}, {"$limit": limit + 1}]
        rows = await _timed("study_page", (await self.releases.aggregate(pipeline)).to_list())
        more = len(rows) > limit
        rows = rows[:limit]
        published = await self._last_published([str(r["_id"]) for r in rows])
        page = [
            StudySummary(
                study=str(row["_id"]),
                release_count=int(row["releases"]),
                latest=_brief({name: row.get(f"latest_{name}") for name in _BRIEF}),
                last_published=published.get(str(row["_id"])),
            )
            for row in rows
        ]
        next_cursor = f"{int(rows[-1]['latest_seq'])}~{rows[-1]['_id']}" if more else None
        return page, next_cursor

    async def _last_published(self, studies: list[str]) -> dict[str, ReleaseBrief]:
        if not studies:
            return {}
        pipeline: list[Doc] = [
            {"$match": {"studies": {"$in": studies}, "state": ReleaseState.PUBLISHED.value}},
            {"$project": {**_BRIEF, "studies": 1, "final_sort": 1}},
            {"$unwind": "$studies"},
            {"$match": {"studies": {"$in": studies}}},
            {"$sort": {"final_sort": -1}},
            {"$group": {"_id": "$studies", **{f"r_{name}": {"$first": f"${name}"} for name in _BRIEF}}},
        ]
        rows = await _timed("study_published", (await self.releases.aggregate(pipeline)).to_list())
        return {str(row["_id"]): _brief({name: row.get(f"r_{name}") for name in _BRIEF}) for row in rows}

    # ------------------------------------------------------------------ services

    async def service(self, name: str) -> ServiceRecord | None:
        doc = await self.services.find_one({"_id": name})
        return None if doc is None else _service_from_doc(doc)

    async def services_named(self, names: Sequence[str]) -> dict[str, ServiceRecord]:
        """The registered services among ``names``, in one query."""
        found = await self.services.find({"_id": {"$in": list(names)}}).to_list()
        return {record.name: record for record in map(_service_from_doc, found)}

    async def all_services(self) -> list[ServiceRecord]:
        docs = await self.services.find({}, sort=[("_id", ASCENDING)]).to_list()
        return [_service_from_doc(d) for d in docs]

    async def required_services(self) -> list[str]:
        docs = await self.services.find({"required": True}, projection={"_id": 1}).to_list()
        return sorted(str(d["_id"]) for d in docs)

    async def set_required(self, name: str, required: bool, now: datetime) -> ServiceRecord:
        await self.services.update_one(
            {"_id": name},
            {"$set": {"required": required}, "$setOnInsert": {"registered_at": now, "instances": {}}},
            upsert=True,
        )
        record = await self.service(name)
        assert record is not None
        return record

    async def heartbeat(
        self, name: str, instance_id: str, sdk_version: str, healthy: bool, detail: str | None, now: datetime
    ) -> None:
        await _timed(
            "heartbeat",
            self.services.update_one(
                {"_id": name},
                {
                    "$set": {
                        "last_heartbeat_at": now,
                        "healthy": healthy,
                        "health_detail": detail,
                        "sdk_version": sdk_version,
                        f"instances.{_key(instance_id)}": now,
                    },
                    "$setOnInsert": {"required": False, "registered_at": now},
                },
                upsert=True,
            ),
        )


# ---------------------------------------------------------------------- conversions


#: What a :class:`ReleaseBrief` is made of (``_id`` is the release id, ``seq`` orders pages).
_BRIEF: Doc = {
    "_id": 1,
    "seq": 1,
    "name": 1,
    "state": 1,
    "tentative_version": 1,
    "final_version": 1,
    "is_major": 1,
    "created_at": 1,
    "entered": 1,
}


def _brief(doc: Doc) -> ReleaseBrief:
    final = doc.get("final_version")
    entered = doc.get("entered") or {}
    published_at = entered.get(ReleaseState.PUBLISHED.value) if isinstance(entered, dict) else None
    return ReleaseBrief(
        id=doc["_id"],
        name=doc["name"],
        state=doc["state"],
        version=final or doc["tentative_version"],
        final_version=final,
        is_major=bool(doc.get("is_major")),
        created_at=doc["created_at"],
        published_at=published_at,
    )


def encode_event_cursor(event: AuditEvent) -> str:
    return f"{event.at.isoformat()}~{event.id}"


def decode_event_cursor(cursor: str) -> tuple[datetime, str]:
    at, sep, event_id = cursor.partition("~")
    try:
        moment = datetime.fromisoformat(at)
    except ValueError:
        moment = None
    if not sep or not event_id or moment is None or moment.tzinfo is None:
        raise BadCursor(f"invalid cursor {cursor!r}: pass the next_cursor of the previous page")
    return moment, event_id


def decode_study_cursor(cursor: str) -> tuple[int, str]:
    seq, sep, study = cursor.partition("~")
    if not sep or not seq.isdigit() or not study:
        raise BadCursor(f"invalid cursor {cursor!r}: pass the next_cursor of the previous page")
    return int(seq), study


def changed_fields(before: Doc, after: Doc) -> Doc:
    """The ``$set`` that turns document ``before`` into ``after`` (outbox and journal aside).

    A field that is a mapping in both (``tasks``, ``entered``) is set key by key, so a reply that
    changes one task writes that task only. Keys that MongoDB would read as paths are never split.
    """
    changes: Doc = {}
    for name, value in after.items():
        if name in ("_id", "outbox", "journal"):
            continue
        old = before.get(name, _MISSING)
        if old == value:
            continue
        if isinstance(value, dict) and isinstance(old, dict) and _splittable(old, value):
            changes.update({f"{name}.{k}": v for k, v in value.items() if old.get(k, _MISSING) != v})
        else:
            changes[name] = value
    return changes


def _splittable(old: Doc, new: Doc) -> bool:
    """Key by key only if no key disappears and every key is a plain field name."""
    return old.keys() <= new.keys() and all(
        isinstance(k, str) and k and "." not in k and not k.startswith("$") for k in new
    )


_MISSING = object()


def _to_doc(release: Release) -> Doc:
    doc = release.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    doc["final_sort"] = sort_key(release.final_version) if release.final_version else None
    doc["open"] = not (release.state.is_terminal and not release.outbox and not release.journal)
    return doc


def _from_doc(doc: Doc) -> Release:
    data = {k: v for k, v in doc.items() if k not in ("_id", "final_sort", "open")}
    return Release.model_validate({**data, "id": doc["_id"]})


def _event_doc(event: AuditEvent) -> Doc:
    doc = event.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    return doc


def _event_from_doc(doc: Doc) -> AuditEvent:
    data = {k: v for k, v in doc.items() if k != "_id"}
    return AuditEvent.model_validate({**data, "id": doc["_id"]})


def _service_from_doc(doc: Doc) -> ServiceRecord:
    data = {k: v for k, v in doc.items() if k != "_id"}
    return ServiceRecord.model_validate({**data, "name": doc["_id"]})


def _key(instance_id: str) -> str:
    """Instance ids become document keys: no dots or leading dollars."""
    return instance_id.replace(".", "_").replace("$", "_")


def _only_duplicates(error: Exception) -> bool:
    details = getattr(error, "details", None) or {}
    write_errors = details.get("writeErrors", [])
    return bool(write_errors) and all(e.get("code") == 11000 for e in write_errors)


async def _timed(operation: str, awaitable: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await awaitable
    finally:
        metrics.STORE_LATENCY.labels(operation).observe(time.perf_counter() - started)


@asynccontextmanager
async def connected(url: str, database: str) -> AsyncIterator[Store]:
    store = Store.connect(url, database)
    try:
        await store.ensure_indexes()
        yield store
    finally:
        await store.close()


Retry = Callable[[], Awaitable[T]]
__all__ = [
    "EVENT_INDEXES",
    "RELEASE_INDEXES",
    "AuditEvent",
    "BadCursor",
    "OutboxEntry",
    "StaleRevision",
    "Store",
    "VersionTaken",
    "changed_fields",
    "connected",
]
