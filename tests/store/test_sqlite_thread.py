"""The embedded store's threads: calls run in order on one thread, errors reach the caller, close waits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from coordinator.store._sqlite_thread import Db, SqliteThread


async def connected(tmp_path: Path) -> SqliteThread:
    thread = SqliteThread("rc-store-test")
    await thread.connect(tmp_path / "t.db", lambda db: None)
    return thread


async def test_calls_run_in_the_order_they_came_on_one_thread_of_its_own(tmp_path: Path) -> None:
    thread = await connected(tmp_path)
    seen: list[tuple[int, str]] = []

    def note(number: int) -> Callable[[Db], int]:
        def work(db: Db) -> int:
            seen.append((number, threading.current_thread().name))
            return number * 2

        return work

    try:
        results = await asyncio.gather(*(thread.call(note(n)) for n in range(50)))
    finally:
        await thread.close()
    assert results == [n * 2 for n in range(50)]
    assert [n for n, _ in seen] == list(range(50))
    assert {name for _, name in seen} == {"rc-store-test"}
    assert threading.current_thread().name != "rc-store-test"


async def test_an_error_reaches_its_caller_alone(tmp_path: Path) -> None:
    thread = await connected(tmp_path)

    def fail(db: Db) -> None:
        db.execute("SELECT * FROM no_such_table")

    try:
        with pytest.raises(sqlite3.OperationalError, match="no_such_table"):
            await thread.call(fail)
        assert await thread.call(lambda db: db.execute("SELECT 1").fetchone()[0]) == 1
    finally:
        await thread.close()


async def test_a_caller_that_gives_up_leaves_the_thread_serving_the_others(tmp_path: Path) -> None:
    thread = await connected(tmp_path)
    release = threading.Event()
    try:
        blocked = asyncio.ensure_future(thread.call(lambda db: release.wait(5)))
        waiting = asyncio.ensure_future(thread.call(lambda db: "ran"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        later = asyncio.ensure_future(thread.call(lambda db: "served"))
        release.set()
        assert await blocked is True
        assert await later == "served"
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await thread.close()


async def test_close_waits_for_the_calls_queued_before_and_refuses_later_ones(tmp_path: Path) -> None:
    thread = await connected(tmp_path)
    release = threading.Event()
    blocked = asyncio.ensure_future(thread.call(lambda db: release.wait(5)))
    queued = asyncio.ensure_future(thread.call(lambda db: db.execute("SELECT 2").fetchone()[0]))
    await asyncio.sleep(0.05)
    closing = asyncio.ensure_future(thread.close())
    await asyncio.sleep(0.05)
    assert not closing.done()
    release.set()
    await closing
    assert (await blocked, await queued) == (True, 2)
    with pytest.raises(RuntimeError, match="closed"):
        await thread.call(lambda db: None)
    await thread.close()  # closing again does nothing


async def test_a_call_before_the_connection_is_refused_with_the_reason() -> None:
    thread = SqliteThread("rc-store-test")
    try:
        with pytest.raises(AssertionError, match="not open"):
            await thread.call(lambda db: None)
    finally:
        await thread.close()
