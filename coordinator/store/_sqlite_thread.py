"""The threads of the embedded store: one SQLite connection each, never called from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
Db = sqlite3.Connection
#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 30.0
#: A job for the thread, the loop to answer on and the future it answers.
_Job = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class SqliteThread:
    """One SQLite connection and the one thread that uses it, taking calls in the order they come.

    The thread carries its name in the operating system too (``rc-store-writer``, ``rc-store-reader``), so
    ``top -H``, ``py-spy`` and the benchmarks can tell the store's CPU time from the coordinator's. A call
    is a job on a queue and an asyncio future the thread settles through the event loop: half the CPU per
    call, in both threads, of an executor's (its own futures, locks and callbacks), measured.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._db: Db | None = None

    async def call(self, work: Callable[[Db], T]) -> T:
        return await self._submit(lambda: self._run(work))

    def _run(self, work: Callable[[Db], T]) -> T:
        assert self._db is not None, "the store is not open"
        return work(self._db)

    def _submit(self, job: Callable[[], T]) -> asyncio.Future[T]:
        if self._closed:
            raise RuntimeError(f"{self.name} is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
            self._thread.start()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((job, loop, future))
        return future

    def _serve(self) -> None:
        _name_thread(self.name)
        while (item := self._jobs.get()) is not None:
            job, loop, future = item
            try:
                result, error = job(), None
            except BaseException as raised:  # the caller's to handle
                result, error = None, raised
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits for it any more
                loop.call_soon_threadsafe(_settle, future, result, error)

    async def connect(self, path: Path, prepare: Callable[[Db], None]) -> None:
        def connect() -> None:
            db = sqlite3.connect(
                path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
            )
            try:
                prepare(db)
            except BaseException:
                db.close()
                raise
            self._db = db

        await self._submit(connect)

    async def close(self) -> None:
        """Close the connection once the calls queued before have run, and end the thread."""
        if self._closed:
            return
        thread = self._thread
        if thread is None:  # never started: nothing to close
            self._closed = True
            return
        closing = self._submit(self._close_db)
        self._closed = True
        self._jobs.put(None)
        try:
            await closing
        finally:
            await asyncio.to_thread(thread.join)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller gave up waiting (cancelled)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _name_thread(name: str) -> None:
    """Give the current thread ``name`` in the operating system as well (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_PR_SET_NAME = 15


def prepare_reader(db: Db) -> None:
    db.execute("PRAGMA query_only = 1")
