"""The MongoDB engine's read side: what operators ask for, each an indexed query (see ``_mongo_docs``)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from coordinator.store._common import note_page, seq_cursor, timed
from coordinator.store._interface import Page
from coordinator.store._mongo_docs import (
    BRIEF,
    Doc,
    brief,
    decode_event_cursor,
    decode_study_cursor,
    encode_event_cursor,
    event_from_doc,
    from_doc,
    listed_from_doc,
    service_from_doc,
)
from schemas.documents import AuditEvent, Note, ReleaseBrief, ReleaseView, ServiceRecord, StudySummary
from schemas.enums import EventKind, ReleaseState

#: What a release is read without when its notes are wanted: its outbox and journal.
_LISTED = {"outbox": 0, "journal": 0}
#: A release in a list: how many notes it has, then the document without them, its outbox and journal.
_LISTED_VIEW: list[Doc] = [
    {"$addFields": {"note_count": {"$size": {"$ifNull": ["$notes", []]}}}},
    {"$project": {"notes": 0, "outbox": 0, "journal": 0}},
]


class MongoReads:
    """Queries over the three collections; :class:`coordinator.store.mongo.MongoStore` adds the writes."""

    releases: AsyncCollection[Doc]
    events: AsyncCollection[Doc]
    services: AsyncCollection[Doc]
    #: Per release: the events of its stored ``journal`` as the engine knows them, copied or not.
    _journal: dict[str, list[AuditEvent]]

    async def state_of(self, release_id: str) -> ReleaseState | None:
        """A release's state alone: no need to read and parse the whole document (tasks, notes)."""
        doc = await timed(
            "state_of", self.releases.find_one({"_id": release_id}, projection={"_id": 0, "state": 1})
        )
        return None if doc is None else ReleaseState(doc["state"])

    async def list_releases(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        state: ReleaseState | None = None,
        study: str | None = None,
        since: datetime | None = None,
    ) -> Page[ReleaseView]:
        """The page is read by an aggregation: the server counts each release's notes and leaves them out."""
        before = seq_cursor(cursor)
        query: Doc = {}
        if state is not None:
            query["state"] = state.value
        if study is not None:
            query["studies"] = study
        if since is not None:
            query["created_at"] = {"$gte": since}
        if before is not None:
            query["seq"] = {"$lt": before}
        pipeline: list[Doc] = [{"$match": query}, {"$sort": {"seq": -1}}, {"$limit": limit + 1}]

        async def read() -> list[Doc]:
            return await (await self.releases.aggregate([*pipeline, *_LISTED_VIEW])).to_list()

        docs = await timed("list_releases", read())
        page = [listed_from_doc(d) for d in docs[:limit]]
        return Page(page, str(int(docs[limit - 1]["seq"])) if len(docs) > limit else None)

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
        docs = await timed("event_page", found.to_list())
        page = [event_from_doc(d) for d in docs[:limit]]
        return Page(page, encode_event_cursor(page[-1]) if len(docs) > limit else None)

    async def request_events(self, request_id: str) -> list[AuditEvent]:
        """Those in ``events``, and those still in a journal because their copy failed (it is tried again
        later): a request that the broker delivers again meanwhile is still recognized as done."""
        query = {"message_id": request_id, "service": None}  # a service's reply is no operator's request
        found = [event_from_doc(d) for d in await self.events.find(query).to_list()]
        copied = {event.id for event in found}
        waiting = (
            e
            for journal in self._journal.values()
            for e in journal
            if e.message_id == request_id and e.service is None
        )
        return found + [event for event in waiting if event.id not in copied]

    async def note_page(
        self,
        release_id: str,
        limit: int,
        cursor: str | None = None,
        *,
        study: str | None = None,
        since: datetime | None = None,
    ) -> Page[Note] | None:
        doc = await self.releases.find_one({"_id": release_id}, projection=_LISTED)
        if doc is None:
            return None
        return note_page(from_doc(doc), limit, cursor, study=study, since=since)

    async def study_summary(self, study: str) -> StudySummary | None:
        """Three independent index look-ups, sent at once (one round trip's wait)."""
        latest, published, count = await asyncio.gather(
            timed(
                "study_latest",
                self.releases.find_one({"studies": study}, sort=[("seq", DESCENDING)], projection=BRIEF),
            ),
            timed(
                "study_published",
                self.releases.find_one(
                    {"studies": study, "state": ReleaseState.PUBLISHED.value},
                    sort=[("final_sort", DESCENDING)],
                    projection=BRIEF,
                ),
            ),
            timed("study_count", self.releases.count_documents({"studies": study})),
        )
        if latest is None:
            return None
        return StudySummary(
            study=study,
            release_count=count,
            latest=brief(latest),
            last_published=None if published is None else brief(published),
        )

    async def study_releases(
        self,
        study: str,
        limit: int,
        cursor: str | None = None,
        *,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[ReleaseBrief]:
        before = seq_cursor(cursor)
        query: Doc = {"studies": study}
        if state is not None:
            query["state"] = state.value
        if since is not None:
            query["created_at"] = {"$gte": since}
        if before is not None:
            query["seq"] = {"$lt": before}
        found = self.releases.find(query, sort=[("seq", DESCENDING)], limit=limit + 1, projection=BRIEF)
        docs = await timed("study_releases", found.to_list())
        more = len(docs) > limit
        return Page([brief(d) for d in docs[:limit]], str(int(docs[limit - 1]["seq"])) if more else None)

    async def study_page(
        self,
        limit: int,
        cursor: str | None = None,
        *,
        prefix: str | None = None,
        state: ReleaseState | None = None,
        since: datetime | None = None,
    ) -> Page[StudySummary]:
        """One aggregation groups the releases by study (the latest per study, and a count); a second one
        finds the last published release of the studies on the page only."""
        pipeline = _study_pipeline(limit, cursor, prefix, state, since)
        rows = await timed("study_page", (await self.releases.aggregate(pipeline)).to_list())
        more = len(rows) > limit
        rows = rows[:limit]
        published = await self._last_published([str(r["_id"]) for r in rows])
        page = [
            StudySummary(
                study=str(row["_id"]),
                release_count=int(row["releases"]),
                latest=brief({name: row.get(f"latest_{name}") for name in BRIEF}),
                last_published=published.get(str(row["_id"])),
            )
            for row in rows
        ]
        return Page(page, f"{int(rows[-1]['latest_seq'])}~{rows[-1]['_id']}" if more else None)

    async def _last_published(self, studies: list[str]) -> dict[str, ReleaseBrief]:
        if not studies:
            return {}
        pipeline: list[Doc] = [
            {"$match": {"studies": {"$in": studies}, "state": ReleaseState.PUBLISHED.value}},
            {"$project": {**BRIEF, "studies": 1, "final_sort": 1}},
            {"$unwind": "$studies"},
            {"$match": {"studies": {"$in": studies}}},
            {"$sort": {"final_sort": -1}},
            {"$group": {"_id": "$studies", **{f"r_{name}": {"$first": f"${name}"} for name in BRIEF}}},
        ]
        rows = await timed("study_published", (await self.releases.aggregate(pipeline)).to_list())
        return {str(row["_id"]): brief({name: row.get(f"r_{name}") for name in BRIEF}) for row in rows}

    async def service(self, name: str) -> ServiceRecord | None:
        doc = await self.services.find_one({"_id": name})
        return None if doc is None else service_from_doc(doc)

    async def all_services(self) -> list[ServiceRecord]:
        docs = await self.services.find({}, sort=[("_id", ASCENDING)]).to_list()
        return [service_from_doc(d) for d in docs]


def _study_pipeline(
    limit: int, cursor: str | None, prefix: str | None, state: ReleaseState | None, since: datetime | None
) -> list[Doc]:
    first: Doc = {"studies": {"$regex": "^" + re.escape(prefix)}} if prefix else {}
    pipeline: list[Doc] = [{"$match": first}, {"$project": {**BRIEF, "studies": 1}}, {"$unwind": "$studies"}]
    if prefix:
        pipeline.append({"$match": {"studies": {"$regex": "^" + re.escape(prefix)}}})
    pipeline += [
        {"$sort": {"seq": -1}},
        {
            "$group": {
                "_id": "$studies",
                "releases": {"$sum": 1},
                **{f"latest_{name}": {"$first": f"${name}"} for name in BRIEF},
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
    return [*pipeline, {"$sort": {"latest_seq": -1, "_id": 1}}, {"$limit": limit + 1}]
