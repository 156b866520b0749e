"""SQLite rows to documents and back, and the read-side queries (pure functions of a connection)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from coordinator.store._common import bad_cursor, seq_cursor
from coordinator.store._interface import Page
from coordinator.versioning import sort_key
from schemas.documents import (
    AuditEvent,
    OutboxEntry,
    Release,
    ReleaseBrief,
    ReleaseView,
    ServiceRecord,
    StudySummary,
)
from schemas.enums import TERMINAL_RELEASE_STATES, EventKind, ReleaseState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
Row = tuple[Any, ...]
#: The columns a :class:`ReleaseBrief` is made of, in order.
BRIEF_COLUMNS = (
    "r.id, r.name, r.state, r.tentative_version, r.final_version, r.is_major, r.created_at, r.published_at"
)
TERMINAL = tuple(s.value for s in TERMINAL_RELEASE_STATES)
#: A listed release: its document without the notes (the outbox is never in it), and how many notes it has.
LISTED_COLUMNS = "json_remove(r.doc, '$.notes'), coalesce(json_array_length(r.doc, '$.notes'), 0)"


def micros(moment: datetime) -> int:
    """A moment as whole microseconds since 1970 (UTC): sorts as time does, exactly."""
    return (moment - EPOCH) // _MICROSECOND


def moment(value: int) -> datetime:
    return EPOCH + value * _MICROSECOND


# ---------------------------------------------------------------------- releases


def release_values(release: Release) -> dict[str, Any]:
    """The ``releases`` row of a release (its outbox lives in ``outbox``)."""
    return {**release_columns(release), "doc": release.model_dump_json(exclude={"outbox"})}


def release_columns(release: Release) -> dict[str, Any]:
    """The ``releases`` row of a release but its document."""
    published = release.entered.get(ReleaseState.PUBLISHED)
    return {
        "id": release.id,
        "seq": release.seq,
        "tentative_version": release.tentative_version,
        "final_version": release.final_version,
        "final_sort": sort_key(release.final_version) if release.final_version else None,
        "state": release.state.value,
        "revision": release.revision,
        "name": release.name,
        "is_major": int(release.is_major),
        "created_at": micros(release.created_at),
        "published_at": None if published is None else micros(published),
    }


def study_rows(release: Release, values: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """The ``release_studies`` rows of a release (``values``: its row, if already made)."""
    values = values or release_values(release)
    return [
        (study, release.seq, release.id, values["state"], values["final_sort"], values["created_at"])
        for study in dict.fromkeys(release.studies)
    ]


def to_release(doc: str, outbox: Sequence[str] = ()) -> Release:
    release = Release.model_validate_json(doc)
    if outbox:
        entries = tuple(OutboxEntry.model_validate_json(entry) for entry in outbox)
        release = release.model_copy(update={"outbox": entries})
    return release


def outbox_of(db: sqlite3.Connection, release_ids: Sequence[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for chunk in _chunks(release_ids):
        marks = ",".join("?" * len(chunk))
        query = f"SELECT release_id, entry FROM outbox WHERE release_id IN ({marks}) ORDER BY position"
        for release_id, entry in db.execute(query, chunk):
            found.setdefault(release_id, []).append(entry)
    return found


def brief(row: Row) -> ReleaseBrief:
    release_id, name, state, tentative, final, is_major, created_at, published_at = row[:8]
    return ReleaseBrief(
        id=release_id,
        name=name,
        state=state,
        version=final or tentative,
        final_version=final,
        is_major=bool(is_major),
        created_at=moment(created_at),
        published_at=None if published_at is None else moment(published_at),
    )


def list_releases(
    db: sqlite3.Connection,
    limit: int,
    cursor: str | None,
    state: ReleaseState | None,
    study: str | None,
    since: datetime | None,
) -> Page[ReleaseView]:
    """A page of releases as a list shows them: SQLite leaves the notes out of the documents it returns
    (and counts them), so Python parses and validates only what the list shows."""
    before = seq_cursor(cursor)
    if study is None:
        where, args = _filters("r", state, since, before)
        query = f"SELECT r.seq, {LISTED_COLUMNS} FROM releases r {where} ORDER BY r.seq DESC LIMIT ?"
    else:
        where, args = _filters("s", state, since, before)
        where = f"{where} AND s.study = ?" if where else "WHERE s.study = ?"
        args.append(study)
        query = (
            f"SELECT s.seq, {LISTED_COLUMNS} FROM release_studies s JOIN releases r ON r.id = s.release_id "
            f"{where} ORDER BY s.seq DESC LIMIT ?"
        )
    rows = db.execute(query, [*args, limit + 1]).fetchall()
    page = rows[:limit]
    views = [ReleaseView.listed(to_release(doc), notes) for _, doc, notes in page]
    return Page(views, str(page[-1][0]) if len(rows) > limit else None)


def study_releases(
    db: sqlite3.Connection,
    study: str,
    limit: int,
    cursor: str | None,
    state: ReleaseState | None,
    since: datetime | None,
) -> Page[ReleaseBrief]:
    before = seq_cursor(cursor)
    where, args = _filters("s", state, since, before)
    where = f"{where} AND s.study = ?" if where else "WHERE s.study = ?"
    rows = db.execute(
        f"SELECT {BRIEF_COLUMNS}, s.seq FROM release_studies s JOIN releases r ON r.id = s.release_id "
        f"{where} ORDER BY s.seq DESC LIMIT ?",
        [*args, study, limit + 1],
    ).fetchall()
    page = rows[:limit]
    return Page([brief(row) for row in page], str(page[-1][8]) if len(rows) > limit else None)


def study_summary(db: sqlite3.Connection, study: str) -> StudySummary | None:
    latest = db.execute(
        f"SELECT {BRIEF_COLUMNS} FROM release_studies s JOIN releases r ON r.id = s.release_id "
        "WHERE s.study = ? ORDER BY s.seq DESC LIMIT 1",
        (study,),
    ).fetchone()
    if latest is None:
        return None
    count = db.execute("SELECT COUNT(*) FROM release_studies WHERE study = ?", (study,)).fetchone()[0]
    return StudySummary(
        study=study, release_count=count, latest=brief(latest), last_published=last_published(db, study)
    )


def last_published(db: sqlite3.Connection, study: str) -> ReleaseBrief | None:
    row = db.execute(
        f"SELECT {BRIEF_COLUMNS} FROM release_studies s JOIN releases r ON r.id = s.release_id "
        "WHERE s.study = ? AND s.state = ? ORDER BY s.final_sort DESC LIMIT 1",
        (study, ReleaseState.PUBLISHED.value),
    ).fetchone()
    return None if row is None else brief(row)


def study_page(
    db: sqlite3.Connection,
    limit: int,
    cursor: str | None,
    prefix: str | None,
    state: ReleaseState | None,
    since: datetime | None,
) -> Page[StudySummary]:
    grouped = "SELECT study, MAX(seq) AS latest_seq, COUNT(*) AS n FROM release_studies"
    args: list[Any] = []
    if prefix:
        grouped += " WHERE study >= ? AND study < ?"
        args += [prefix, prefix + "\U0010ffff"]
    after: list[str] = []
    if state is not None:
        after.append("r.state = ?")
        args.append(state.value)
    if since is not None:
        after.append("r.created_at >= ?")
        args.append(micros(since))
    if cursor is not None:
        seq, study = _study_cursor(cursor)
        after.append("(g.latest_seq < ? OR (g.latest_seq = ? AND g.study > ?))")
        args += [seq, seq, study]
    where = f"WHERE {' AND '.join(after)}" if after else ""
    rows = db.execute(
        f"SELECT g.study, g.n, g.latest_seq, {BRIEF_COLUMNS} FROM ({grouped} GROUP BY study) g "
        f"JOIN releases r ON r.seq = g.latest_seq {where} ORDER BY g.latest_seq DESC, g.study ASC LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    page = rows[:limit]
    summaries = [
        StudySummary(
            study=row[0],
            release_count=row[1],
            latest=brief(row[3:]),
            last_published=last_published(db, row[0]),
        )
        for row in page
    ]
    return Page(summaries, f"{page[-1][2]}~{page[-1][0]}" if len(rows) > limit else None)


def _study_cursor(cursor: str) -> tuple[int, str]:
    seq, sep, study = cursor.partition("~")
    if not sep or not seq.isdigit() or len(seq) > 18 or not study:
        raise bad_cursor(cursor)
    return int(seq), study


def _filters(
    table: str, state: ReleaseState | None, since: datetime | None, before: int | None
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if state is not None:
        clauses.append(f"{table}.state = ?")
        args.append(state.value)
    if since is not None:
        clauses.append(f"{table}.created_at >= ?")
        args.append(micros(since))
    if before is not None:
        clauses.append(f"{table}.seq < ?")
        args.append(before)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), args


# ---------------------------------------------------------------------- events


def event_values(event: AuditEvent) -> tuple[Any, ...]:
    state_after = None if event.state_after is None else event.state_after.value
    return (
        event.id,
        event.release_id,
        micros(event.at),
        event.kind.value,
        state_after,
        event.model_dump_json(),
    )


def event_page(
    db: sqlite3.Connection,
    release_id: str,
    limit: int,
    cursor: str | None,
    kind: EventKind | None,
    state: ReleaseState | None,
    since: datetime | None,
) -> Page[AuditEvent]:
    clauses: list[str] = ["release_id = ?"]
    args: list[Any] = [release_id]
    if kind is not None:
        clauses.append("kind = ?")
        args.append(kind.value)
    if state is not None:
        clauses.append("state_after = ?")
        args.append(state.value)
    if since is not None:
        clauses.append("at >= ?")
        args.append(micros(since))
    if cursor is not None:
        at, event_id = _event_cursor(cursor)
        clauses.append("(at < ? OR (at = ? AND id < ?))")
        args += [at, at, event_id]
    rows = db.execute(
        f"SELECT at, id, doc FROM events WHERE {' AND '.join(clauses)} ORDER BY at DESC, id DESC LIMIT ?",
        [*args, limit + 1],
    ).fetchall()
    page = rows[:limit]
    events = [AuditEvent.model_validate_json(doc) for _, _, doc in page]
    return Page(events, f"{page[-1][0]}~{page[-1][1]}" if len(rows) > limit else None)


def _event_cursor(cursor: str) -> tuple[int, str]:
    at, sep, event_id = cursor.partition("~")
    if not sep or not at.isdigit() or len(at) > 18 or not event_id:
        raise bad_cursor(cursor)
    return int(at), event_id


# ---------------------------------------------------------------------- services


def to_service(doc: str) -> ServiceRecord:
    return ServiceRecord.model_validate_json(doc)


def _chunks(items: Sequence[str], size: int = 500) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]
