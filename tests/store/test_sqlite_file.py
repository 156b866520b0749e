"""The embedded engine's file: durability, schema versions, bad files, a crash mid-write, two writers."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from pathlib import Path

import pytest

from coordinator.store import HeartbeatRecord, StaleRevision, StoreUnavailable
from coordinator.store import _sqlite_rows as rows
from coordinator.store._sqlite_schema import APPLICATION_ID, LATEST_VERSION, migrate
from coordinator.store.sqlite import SqliteStore
from schemas.enums import Action, Outcome
from tests.store.builders import T0, answer_all, begin, created_event, release
from tests.store.test_contract import walk

ROOT = Path(__file__).parents[2]


async def opened(path: Path) -> SqliteStore:
    store = SqliteStore(path)
    await store.open()
    return store


async def test_commits_are_durable_write_ahead_logged_and_synchronous(tmp_path: Path) -> None:
    store = await opened(tmp_path / "rc.db")
    try:
        settings = await store._writer.call(
            lambda db: (
                db.execute("PRAGMA journal_mode").fetchone()[0],
                db.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert settings == ("wal", 2)  # 2 = FULL: the WAL is synced at every commit
    finally:
        await store.close()


async def test_a_heartbeat_commits_unsynced_and_every_write_after_it_is_synced(tmp_path: Path) -> None:
    """A heartbeat, soft state, commits with ``NORMAL`` (README, "What the default engine syncs"); the
    connection is back to ``FULL`` after it, and after one that failed, for the writes that follow."""
    store = await opened(tmp_path / "rc.db")

    def synchronous(db: sqlite3.Connection) -> int:
        return int(db.execute("PRAGMA synchronous").fetchone()[0])

    def failing(db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("disk I/O error (injected)")

    try:
        during = await store._writer.call(lambda db: store._unsynced_transaction(db, synchronous))
        await store.heartbeat(HeartbeatRecord("portal", "host-a:1", "1.0", True, None, T0))
        after_one = await store._writer.call(synchronous)
        with pytest.raises(StoreUnavailable):
            await store._writer.call(lambda db: store._unsynced_transaction(db, failing))
        after_a_failed_one = await store._writer.call(synchronous)
        assert (during, after_one, after_a_failed_one) == (1, 2, 2)  # 1 = NORMAL, 2 = FULL
        assert (await store.service("portal")) is not None
    finally:
        await store.close()


async def test_a_file_of_an_older_schema_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, path, upto=1)  # as the first release of the store left it
    db.execute(
        "INSERT INTO services (name, required, doc) VALUES (?, 1, ?)",
        ("portal", '{"name": "portal", "required": true}'),
    )
    db.close()
    store = await opened(path)
    try:
        assert await store.required_services() == ["portal"]
        version = await store._writer.call(lambda d: d.execute("PRAGMA user_version").fetchone()[0])
        assert version == LATEST_VERSION > 1
    finally:
        await store.close()


async def test_a_file_of_schema_3_keeps_its_outbox_in_order_and_its_requests(tmp_path: Path) -> None:
    """Schema 4 numbers the outbox without AUTOINCREMENT and finds by message id only the events of
    operators' requests: a file of schema 3 keeps its messages to deliver, in order, new ones come after
    them, and a request is still recognized (a service's event under the same id is not)."""
    path = tmp_path / "v3.db"
    waiting = release(1)
    initializing, begun = begin(waiting)
    made = created_event(waiting).model_copy(update={"message_id": "req-1"})
    forged = begun.model_copy(update={"id": "forged", "service": "portal", "message_id": "req-1"})
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, path, upto=3)
    values = rows.release_values(initializing)
    db.execute(
        f"INSERT INTO releases ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
        list(values.values()),
    )
    db.executemany("INSERT INTO release_studies VALUES (?, ?, ?, ?, ?, ?)", rows.study_rows(initializing))
    db.executemany(
        "INSERT INTO outbox (message_id, release_id, entry) VALUES (?, ?, ?)",
        [(e.message_id, initializing.id, e.model_dump_json()) for e in initializing.outbox],
    )
    db.executemany(
        "INSERT INTO events (id, release_id, at, kind, state_after, doc) VALUES (?, ?, ?, ?, ?, ?)",
        [rows.event_values(e) for e in (made, begun, forged)],
    )
    db.close()
    store = await opened(path)
    try:
        assert await store.get(initializing.id) == initializing
        assert await store.request_events("req-1") == [made]
        accepted = await walk(
            store, initializing, answer_all(initializing, Action.INITIALIZE, Outcome.ACCEPTED)
        )
        assert len(accepted.outbox) > len(initializing.outbox)
        assert await store.get(accepted.id) == accepted
    finally:
        await store.close()


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


async def test_a_file_of_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    await (await opened(path)).close()  # a real store file ...
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")  # ... from a future version
    db.commit()
    db.close()
    before = _bytes(path)
    with pytest.raises(StoreUnavailable, match="newer Release Coordinator"):
        await opened(path)
    assert _bytes(path) == before


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"name,state\nportal,running\n", "is not a SQLite database"),
        (b"SQLite format 3\x00" + b"\xff" * 2000, "cannot be read|corrupt"),
    ],
    ids=["not-sqlite", "corrupt"],
)
async def test_a_file_that_is_not_a_store_is_refused_untouched(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "rc.db"
    path.write_bytes(content)
    with pytest.raises(StoreUnavailable, match=reason):
        await opened(path)
    assert path.read_bytes() == content


async def test_a_database_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    before = _bytes(path)
    with pytest.raises(StoreUnavailable, match="another application"):
        await opened(path)
    assert _bytes(path) == before


async def test_an_unwritable_data_directory_is_refused_with_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable, match=r"cannot create the data directory .* RC_DATA_DIR"):
        await opened(blocker / "sub" / "rc.db")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if _root_ignores_permissions(locked):
        return  # root may write anywhere: the check above covers what root can be refused
    with pytest.raises(StoreUnavailable, match="not writable"):
        await opened(locked / "rc.db")


def _root_ignores_permissions(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


async def test_a_new_store_is_its_owners_alone(tmp_path: Path) -> None:
    """No other user of the machine can read or change releases (nor the -wal and -shm files)."""
    path = tmp_path / "data" / "rc.db"
    store = await opened(path)
    try:
        r = release(1)
        await store.insert(r, [created_event(r)])
        modes = {p.name: p.stat().st_mode & 0o777 for p in (path.parent, *path.parent.iterdir())}
        assert modes == {"data": 0o700, "rc.db": 0o600, "rc.db-wal": 0o600, "rc.db-shm": 0o600}
    finally:
        await store.close()


async def test_the_application_id_marks_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rc.db"
    await (await opened(path)).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()


# ---------------------------------------------------------------------- crashes and two writers

#: A child that opens the store, inserts a release, then starts its first transition and is killed
#: between the update and the commit (``before_commit`` tells the parent, then waits to be killed).
_DIES_MID_WRITE = """
import asyncio, sys, time
from pathlib import Path
from coordinator.store.sqlite import SqliteStore
from coordinator.store import _sqlite_rows as rows
from schemas.enums import Action, Outcome
from tests.store.builders import T0, answer_all, begin, created_event, release
from tests.store.test_contract import walk

def wait_to_be_killed() -> None:
    print("IN-TRANSACTION", flush=True)
    time.sleep(600)

async def main() -> None:
    store = SqliteStore(Path(sys.argv[1]))
    await store.open()
    r = release(1)
    await store.insert(r, [created_event(r)])
    print("INSERTED", flush=True)
    store.before_commit = wait_to_be_killed
    after, event = begin(r)
    await store.compare_and_set(r, after, [event])

asyncio.run(main())
"""


async def test_a_writer_killed_before_its_commit_leaves_nothing_half_applied(tmp_path: Path) -> None:
    path = tmp_path / "rc.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DIES_MID_WRITE, str(path), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    lines = [await asyncio.wait_for(child.stdout.readline(), 60) for _ in range(2)]
    assert lines == [b"INSERTED\n", b"IN-TRANSACTION\n"]
    child.send_signal(signal.SIGKILL)
    assert await asyncio.wait_for(child.wait(), 30) == -signal.SIGKILL

    store = await opened(path)  # opens (quick_check passes): the half-done transaction is gone
    try:
        stored = await store.get("RE_00000001")
        assert stored == release(1)  # still waiting, no outbox
        events = (await store.event_page("RE_00000001", 10)).items
        assert [e.id for e in events] == ["RE_00000001.r0"]
        after, event = begin(stored)
        await store.compare_and_set(stored, after, [event])  # and it moves on from there
    finally:
        await store.close()


_RACER = """
import asyncio, sys
from pathlib import Path
from coordinator.store import StaleRevision
from coordinator.store.sqlite import SqliteStore
from tests.store.builders import begin

async def main() -> None:
    store = SqliteStore(Path(sys.argv[1]))
    await store.open()
    r = await store.get("RE_00000001")
    after, event = begin(r)
    after = after.model_copy(update={"state_reason": sys.argv[2]})
    print("READY", flush=True)
    sys.stdin.readline()  # go
    try:
        await store.compare_and_set(r, after, [event.model_copy(update={"id": sys.argv[2]})])
        print("WON", flush=True)
    except StaleRevision:
        print("LOST", flush=True)
    await store.close()

asyncio.run(main())
"""


async def test_two_processes_on_one_file_never_fork_a_release(tmp_path: Path) -> None:
    """Two coordinators sharing one file, both believing they lead: of two writes from one revision, one
    wins and the other learns it lost; the file holds the winner's release and audit event only."""
    path = tmp_path / "rc.db"
    store = await opened(path)
    r = release(1)
    await store.insert(r, [created_event(r)])
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RACER,
            str(path),
            name,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for name in ("first", "second")
    ]
    try:
        for racer in racers:  # both have read the release at the same revision
            assert racer.stdout is not None
            assert await asyncio.wait_for(racer.stdout.readline(), 60) == b"READY\n"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write(b"\n")
            await racer.stdin.drain()
        outcomes = [(await asyncio.wait_for(racer.communicate(), 60))[0].decode().strip() for racer in racers]
        assert sorted(outcomes) == ["LOST", "WON"]
        winner = ("first", "second")[outcomes.index("WON")]
        stored = await store.get(r.id)
        assert stored is not None
        assert stored.state_reason == winner
        ids = [e.id for e in (await store.event_page(r.id, 10)).items]
        assert sorted(ids) == sorted([winner, f"{r.id}.r0"])
        after, event = begin(r)
        with pytest.raises(StaleRevision):  # this store's own stale write is refused too
            await store.compare_and_set(r, after, [event])
    finally:
        for racer in racers:
            if racer.returncode is None:
                racer.kill()
        await store.close()
