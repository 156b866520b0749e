"""Group commit: the durable writes waiting for the writer thread share one transaction and one sync.

The coordinator applies the replies of many releases at once, so many writes wait for the one writer thread
together. Each of them used to be a transaction of its own, and each commit waits for the disk
(``synchronous=FULL``). Here, when the writer becomes free it takes every durable write queued so far (at
most ``BATCH_LIMIT``) and runs them in one transaction, each inside a savepoint of its own::

    BEGIN IMMEDIATE; (SAVEPOINT; work; RELEASE) x n; COMMIT

A write that fails is rolled back to its savepoint, alone, and only its caller gets its error; the others
are committed. If the transaction itself fails (BEGIN, the ``before_commit`` hook, COMMIT), nothing of the
batch is stored and every caller of the batch gets the error. No caller's await returns before the COMMIT
that holds its write has returned, so nothing is acknowledged before it is on disk. There is no waiting for
more writes: a batch is whatever was queued while the previous one ran.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from coordinator import metrics
from coordinator.store._interface import VersionTaken
from coordinator.store._sqlite_schema import unavailable
from coordinator.store._sqlite_thread import Db, SqliteThread

T = TypeVar("T")
#: At most this many writes share one transaction (the others wait for the next one).
BATCH_LIMIT = 256


@dataclass(eq=False)
class _Write(Generic[T]):
    """One caller's write: its work, then, once its batch has ended, its result or its error."""

    work: Callable[[Db], T]
    result: T | None = None
    error: BaseException | None = None
    taken: bool = False
    done: bool = False


@dataclass(eq=False)
class GroupCommit:
    """Runs durable writes on ``thread``, those queued together in one transaction."""

    thread: SqliteThread
    path: Path
    #: Called once per transaction just before its COMMIT (a seam for crash and batching tests).
    before_commit: Callable[[], Callable[[], None] | None]
    limit: int = BATCH_LIMIT
    _queue: deque[_Write[Any]] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def write(self, work: Callable[[Db], T]) -> T:
        """Run ``work`` in a transaction, with the other writes queued meanwhile; return once committed."""
        write: _Write[T] = _Write(work)
        with self._lock:
            self._queue.append(write)
        try:
            # One drain per write, in the thread's order: when this one returns, an earlier drain or this
            # one has run the write and committed (or failed) its batch.
            await self.thread.call(self._drain)
        except BaseException:  # cancelled, or the thread is closed: never run once the caller gave up
            with self._lock:
                if not write.taken:
                    self._queue.remove(write)
            raise
        assert write.done, "a write was left behind by its drain"
        if write.error is not None:
            raise write.error
        return cast(T, write.result)

    def _take(self) -> list[_Write[Any]]:
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self.limit, len(self._queue)))]
            for write in batch:
                write.taken = True
        return batch

    def _drain(self, db: Db) -> None:
        """In the writer thread: run the writes queued now (none if an earlier drain took them)."""
        batch = self._take()
        if not batch:
            return
        try:
            self._run(db, batch)
            metrics.STORE_COMMITS.inc()
        except BaseException as error:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already
                db.execute("ROLLBACK")
            for write in batch:  # each caller its own exception (a StoreUnavailable, say)
                write.error, write.result = self._mapped(error), None
        finally:
            for write in batch:
                write.done = True

    def _run(self, db: Db, batch: list[_Write[Any]]) -> None:
        db.execute("BEGIN IMMEDIATE")
        if len(batch) == 1:  # alone in its transaction: no savepoint needed to undo it alone
            batch[0].result = batch[0].work(db)
            self._commit(db)
            return
        for write in batch:
            db.execute("SAVEPOINT write")
            try:
                write.result = write.work(db)
            except Exception as error:  # this write only: undo it, keep the others
                try:
                    db.execute("ROLLBACK TO write")
                except sqlite3.Error:  # SQLite ended the whole transaction: the batch fails with it
                    raise error from None
                write.error = self._mapped(error)
            db.execute("RELEASE write")
        self._commit(db)

    def _commit(self, db: Db) -> None:
        hook = self.before_commit()
        if hook is not None:
            hook()
        db.execute("COMMIT")

    def _mapped(self, error: BaseException) -> BaseException:
        """The error a caller sees, as for a transaction of its own."""
        if isinstance(error, sqlite3.IntegrityError):
            return VersionTaken(str(error))
        if isinstance(error, sqlite3.OperationalError):
            mapped = unavailable(error, self.path)
            mapped.__cause__ = error
            return mapped
        return error
