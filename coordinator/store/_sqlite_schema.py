"""The SQLite file: checks before it is used, its tables and indexes, and the migrations between versions.

The file carries two numbers in its header: ``application_id`` (this product's, so a database of another
application is never mistaken for one) and ``user_version`` (the schema version, one per migration). A
file from an older version is migrated at start, in one transaction; a file from a newer version is
refused with the reason, and nothing is written to it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from coordinator.store._interface import StoreUnavailable

#: "RCRC" read as a 32-bit integer: marks the file as a Release Coordinator store.
APPLICATION_ID = 0x52435243
_HEADER = b"SQLite format 3\x00"

#: Migration N (1-based) takes a file from schema version N - 1 to N.
MIGRATIONS: tuple[str, ...] = (
    # 1: releases, their studies, the outbox, the audit trail and the service registry.
    """
    CREATE TABLE releases (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        tentative_version TEXT NOT NULL UNIQUE,
        final_version TEXT UNIQUE,
        final_sort TEXT,
        state TEXT NOT NULL,
        revision INTEGER NOT NULL,
        name TEXT NOT NULL,
        is_major INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        published_at INTEGER,
        doc TEXT NOT NULL
    );
    CREATE INDEX releases_state_seq ON releases (state, seq DESC);
    CREATE INDEX releases_final_sort ON releases (final_sort DESC) WHERE final_sort IS NOT NULL;
    CREATE TABLE release_studies (
        study TEXT NOT NULL,
        seq INTEGER NOT NULL,
        release_id TEXT NOT NULL,
        state TEXT NOT NULL,
        final_sort TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (study, seq)
    ) WITHOUT ROWID;
    CREATE INDEX release_studies_published ON release_studies (study, state, final_sort DESC);
    CREATE INDEX release_studies_release ON release_studies (release_id);
    CREATE TABLE outbox (
        position INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id TEXT NOT NULL UNIQUE,
        release_id TEXT NOT NULL,
        entry TEXT NOT NULL
    );
    CREATE INDEX outbox_release ON outbox (release_id, position);
    CREATE TABLE events (
        id TEXT PRIMARY KEY,
        release_id TEXT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        state_after TEXT,
        doc TEXT NOT NULL
    );
    CREATE INDEX events_release_at_id ON events (release_id, at DESC, id DESC);
    CREATE TABLE services (
        name TEXT PRIMARY KEY,
        required INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    """,
    # 2: `rc release events --kind K` walks one index range instead of filtering the release's events.
    """
    CREATE INDEX events_release_kind_at_id ON events (release_id, kind, at DESC, id DESC);
    """,
    # 3: the events an operator's request caused, found by the request's message id.
    """
    ALTER TABLE events ADD COLUMN message_id TEXT GENERATED ALWAYS AS (json_extract(doc, '$.message_id'))
        VIRTUAL;
    CREATE INDEX events_message_id ON events (message_id) WHERE message_id IS NOT NULL;
    """,
    # 4: fewer pages written per transaction. Only the events of operators' requests are found by message
    # id (a service's reply names its service): every applied reply wrote a page of that index at random.
    # The outbox numbers its rows without AUTOINCREMENT (one row fewer to update in sqlite_sequence per
    # write): a new row still comes after every row left, which is the only order the outbox reads.
    """
    DROP INDEX events_message_id;
    ALTER TABLE events ADD COLUMN request_id TEXT GENERATED ALWAYS AS (
        CASE WHEN json_extract(doc, '$.service') IS NULL THEN message_id END
    ) VIRTUAL;
    CREATE INDEX events_request_id ON events (request_id) WHERE request_id IS NOT NULL;
    CREATE TABLE outbox_numbered (
        position INTEGER PRIMARY KEY,
        message_id TEXT NOT NULL UNIQUE,
        release_id TEXT NOT NULL,
        entry TEXT NOT NULL
    );
    INSERT INTO outbox_numbered (position, message_id, release_id, entry)
        SELECT position, message_id, release_id, entry FROM outbox ORDER BY position;
    DROP TABLE outbox;
    ALTER TABLE outbox_numbered RENAME TO outbox;
    CREATE INDEX outbox_release ON outbox (release_id, position);
    """,
)
LATEST_VERSION = len(MIGRATIONS)


def check_path(path: Path) -> None:
    """Refuse, before anything is written, a place where the store cannot live."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new folder: its owner's alone
    except OSError as error:
        raise StoreUnavailable(
            f"cannot create the data directory {directory}: {error.strerror or error}; "
            "set RC_DATA_DIR (or RC_STORE_URL) to a writable place"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StoreUnavailable(
            f"the data directory {directory} is not writable; set RC_DATA_DIR (or RC_STORE_URL) to a "
            "writable place"
        )
    if path.exists() and not path.is_file():
        raise StoreUnavailable(f"{path} is not a file")
    if not path.exists():  # a new store is readable and writable by its owner only (SQLite gives its
        try:  # -wal and -shm files the same permissions)
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            pass
        except OSError as error:
            raise StoreUnavailable(f"cannot create {path}: {error.strerror or error}") from None
    if path.exists() and path.stat().st_size:
        with path.open("rb") as file:
            header = file.read(len(_HEADER))
        if header != _HEADER:
            raise StoreUnavailable(
                f"{path} is not a SQLite database (nothing was changed): point RC_STORE_URL or RC_DATA_DIR "
                "elsewhere"
            )


def check_file(connection: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, after refusing a file of another application or of a newer version."""
    try:
        application_id = int(connection.execute("PRAGMA application_id").fetchone()[0])
        version = int(connection.execute("PRAGMA user_version").fetchone()[0])
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as error:
        raise StoreUnavailable(f"{path} cannot be read ({error}): restore it from a backup") from None
    if application_id != APPLICATION_ID and (application_id or tables):
        raise StoreUnavailable(
            f"{path} is a SQLite database of another application (nothing was changed): point "
            "RC_STORE_URL or RC_DATA_DIR elsewhere"
        )
    if version > LATEST_VERSION:
        raise StoreUnavailable(
            f"{path} was written by a newer Release Coordinator (store schema {version}; this one knows "
            f"up to {LATEST_VERSION}): upgrade this coordinator (nothing was changed)"
        )
    problem = connection.execute("PRAGMA quick_check").fetchone()[0]
    if problem != "ok":
        raise StoreUnavailable(f"{path} is corrupt ({problem}): restore it from a backup")
    return version


def migrate(connection: sqlite3.Connection, path: Path, upto: int = LATEST_VERSION) -> int:
    """Bring the file to schema ``upto`` in one transaction; returns the version it had."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        found = int(connection.execute("PRAGMA user_version").fetchone()[0])  # again, under the lock
        for version in range(found + 1, upto + 1):
            for statement in _statements(MIGRATIONS[version - 1]):
                connection.execute(statement)
        if found < upto:
            connection.execute(f"PRAGMA user_version = {int(upto)}")
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except sqlite3.Error as error:
        with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
            connection.execute("ROLLBACK")
        raise unavailable(error, path) from None
    return found


def unavailable(error: sqlite3.Error, path: Path) -> StoreUnavailable:
    """The one-line reason a SQLite error makes the store unusable."""
    text = str(error)
    if "disk is full" in text:
        return StoreUnavailable(f"cannot write {path}: no space left on its disk ({text})")
    if "disk I/O error" in text:
        return StoreUnavailable(f"cannot write {path}: {text} (is its disk full or failing?)")
    if "readonly" in text or "read-only" in text:
        return StoreUnavailable(f"cannot write {path}: {text}; check its permissions")
    if "malformed" in text or "not a database" in text:
        return StoreUnavailable(f"{path} is corrupt ({text}): restore it from a backup")
    return StoreUnavailable(f"{path}: {text}")


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
