"""Outcome stores: what the service remembers so a replayed command is answered, not re-run.

A store keeps, per ``(release id, action)``, the :class:`TaskReply` that answered it, and the
``start`` commands taken on but not finished yet (so a restarted service can re-run them).
:class:`MemoryOutcomeStore` forgets everything on restart; :class:`SqliteOutcomeStore` (used when
``RC_TASK_STATE_DIR`` is set) keeps it in one sqlite file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Protocol

from schemas.enums import Action
from schemas.messages import Command, TaskReply, decode, encode


class OutcomeStore(Protocol):
    """Where the runner remembers answered commands and processing taken on."""

    @property
    def durable(self) -> bool:
        """True if the store survives a restart of the service."""
        ...

    def outcome(self, release_id: str, action: Action) -> TaskReply | None:
        """The reply that answered ``action`` for the release, if it was answered."""
        ...

    def record_outcome(self, reply: TaskReply) -> None:
        """Remember ``reply``; it also ends the release's processing taken on, if any."""
        ...

    def record_taken(self, command: Command) -> None:
        """Remember that ``command`` (a ``start``) was taken on and is not finished."""
        ...

    def taken(self) -> list[Command]:
        """The commands taken on with no outcome yet."""
        ...

    def close(self) -> None: ...


class MemoryOutcomeStore:
    """An :class:`OutcomeStore` in a dict: enough for one process lifetime and for tests."""

    durable = False

    def __init__(self) -> None:
        self._outcomes: dict[tuple[str, Action], TaskReply] = {}
        self._taken: dict[tuple[str, Action], Command] = {}

    def outcome(self, release_id: str, action: Action) -> TaskReply | None:
        return self._outcomes.get((release_id, action))

    def record_outcome(self, reply: TaskReply) -> None:
        self._outcomes[(reply.release_id, reply.action)] = reply
        self._taken.pop((reply.release_id, reply.action), None)

    def record_taken(self, command: Command) -> None:
        self._taken[(command.release_id, command.action)] = command

    def taken(self) -> list[Command]:
        return list(self._taken.values())

    def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outcomes (
    release_id TEXT NOT NULL, action TEXT NOT NULL, reply TEXT NOT NULL, PRIMARY KEY (release_id, action)
);
CREATE TABLE IF NOT EXISTS taken (
    release_id TEXT NOT NULL, action TEXT NOT NULL, command TEXT NOT NULL, PRIMARY KEY (release_id, action)
);
"""


class SqliteOutcomeStore:
    """An :class:`OutcomeStore` in one sqlite file; every write is committed before it returns."""

    durable = True

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def in_directory(cls, directory: Path, service: str) -> SqliteOutcomeStore:
        return cls(directory / f"{service}.sqlite3")

    def outcome(self, release_id: str, action: Action) -> TaskReply | None:
        row = self._db.execute(
            "SELECT reply FROM outcomes WHERE release_id = ? AND action = ?", (release_id, action.value)
        ).fetchone()
        return decode(row[0].encode(), TaskReply) if row else None

    def record_outcome(self, reply: TaskReply) -> None:
        key = (reply.release_id, reply.action.value)
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?)", (*key, encode(reply).decode())
            )
            self._db.execute("DELETE FROM taken WHERE release_id = ? AND action = ?", key)

    def record_taken(self, command: Command) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO taken VALUES (?, ?, ?)",
            (command.release_id, command.action.value, encode(command).decode()),
        )

    def taken(self) -> list[Command]:
        rows = self._db.execute("SELECT command FROM taken ORDER BY rowid").fetchall()
        return [decode(row[0].encode(), Command) for row in rows]

    def close(self) -> None:
        self._db.close()
