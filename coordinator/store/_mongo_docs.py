"""MongoDB documents: the indexes, and releases, events and services to documents and back."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING

from coordinator.store._common import bad_cursor
from coordinator.versioning import sort_key
from schemas.documents import AuditEvent, Release, ReleaseBrief, ReleaseView, ServiceRecord
from schemas.enums import ReleaseState

Doc = dict[str, Any]

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
    # The events an operator's request caused (a redelivered request is recognized as done).
    ([("message_id", ASCENDING)], {"name": "message_id", "sparse": True}),
]


#: What a :class:`ReleaseBrief` is made of (``_id`` is the release id, ``seq`` orders pages).
BRIEF: Doc = {
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


def brief(doc: Doc) -> ReleaseBrief:
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
        raise bad_cursor(cursor)
    return moment, event_id


def decode_study_cursor(cursor: str) -> tuple[int, str]:
    seq, sep, study = cursor.partition("~")
    if not sep or not seq.isdigit() or not study:
        raise bad_cursor(cursor)
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


def to_doc(release: Release) -> Doc:
    doc = release.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    doc["final_sort"] = sort_key(release.final_version) if release.final_version else None
    doc["open"] = not (release.state.is_terminal and not release.outbox)
    doc["journal"] = []
    return doc


def from_doc(doc: Doc) -> Release:
    data = {k: v for k, v in doc.items() if k not in ("_id", "final_sort", "open", "journal")}
    return Release.model_validate({**data, "id": doc["_id"]})


def listed_from_doc(doc: Doc) -> ReleaseView:
    """A release as ``list_releases`` reads it (no notes, outbox or journal; a ``note_count``), as a list
    shows it."""
    release = from_doc({k: v for k, v in doc.items() if k != "note_count"})
    return ReleaseView.listed(release, int(doc["note_count"]))


def journal_of(doc: Doc) -> list[AuditEvent]:
    """The audit events stored in the release document, not yet known to be copied to ``events``."""
    return [AuditEvent.model_validate(entry) for entry in doc.get("journal") or ()]


def event_doc(event: AuditEvent) -> Doc:
    doc = event.model_dump(mode="python")
    doc["_id"] = doc.pop("id")
    return doc


def event_from_doc(doc: Doc) -> AuditEvent:
    data = {k: v for k, v in doc.items() if k != "_id"}
    return AuditEvent.model_validate({**data, "id": doc["_id"]})


def service_from_doc(doc: Doc) -> ServiceRecord:
    data = {k: v for k, v in doc.items() if k != "_id"}
    return ServiceRecord.model_validate({**data, "name": doc["_id"]})


def instance_key(instance_id: str) -> str:
    """Instance ids become document keys: no dots or leading dollars."""
    return instance_id.replace(".", "_").replace("$", "_")


def only_duplicates(error: Exception) -> bool:
    details = getattr(error, "details", None) or {}
    write_errors = details.get("writeErrors", [])
    return bool(write_errors) and all(e.get("code") == 11000 for e in write_errors)
