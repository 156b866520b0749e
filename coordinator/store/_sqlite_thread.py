"""The threads of the embedded store: one SQLite connection each, never called from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
Db = sqlite3.Connection
#: How long a writer waits for another process's write lock before giving up.
BUSY_TIMEOUT_SECONDS = 30.0


class SqliteThread:
    """One SQLite connection and the one thread that uses it.

    The thread carries its name in the operating system too (``rc-store-writer``, ``rc-store-reader``), so
    ``top -H``, ``py-spy`` and the benchmarks can tell the store's CPU time from the coordinator's.
    """

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix=name, initializer=_name_thread, initargs=(name,)
        )
        self._db: Db | None = None

    async def call(self, work: Callable[[Db], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._run, work)

    def _run(self, work: Callable[[Db], T]) -> T:
        assert self._db is not None, "the store is not open"
        return work(self._db)

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

        await asyncio.get_running_loop().run_in_executor(self._executor, connect)

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        with contextlib.suppress(RuntimeError):  # the executor was shut down already
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


def _name_thread(name: str) -> None:
    """Give the current thread ``name`` in the operating system as well (Linux; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_PR_SET_NAME = 15


def prepare_reader(db: Db) -> None:
    db.execute("PRAGMA query_only = 1")
