"""``rc-coordinator`` and its store: where the default file is, bad settings and bad files in one line with
a distinct exit status, and ``store copy`` between the engines in both directions."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from coordinator.store import Store, store_for
from schemas.enums import Action, Outcome
from tests.store.builders import answer_all, begin, created_event, note, release
from tests.unit.releases import T0

ROOT = Path(__file__).parents[2]


@dataclass
class Ran:
    code: int
    stdout: str
    stderr: str


async def coordinator(*args: str, env: dict[str, str], prefix: tuple[str, ...] = ()) -> Ran:
    """``python -m coordinator ARGS`` with only ``env`` as its RC_* settings."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("RC_")}
    process = await asyncio.create_subprocess_exec(
        *prefix,
        sys.executable,
        "-m",
        "coordinator",
        *args,
        cwd=ROOT,
        env=base | {"RC_METRICS_PORT": "0"} | env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


def one_line(ran: Ran) -> str:
    lines = ran.stderr.splitlines()
    assert len(lines) == 1, ran.stderr
    assert "Traceback" not in ran.stderr
    return lines[0]


async def test_help_names_the_default_store_file(tmp_path: Path) -> None:
    ran = await coordinator("--help", env={"RC_DATA_DIR": str(tmp_path), "RC_NAMESPACE": "fall"})
    assert ran.code == 0
    assert "RC_STORE_URL" in ran.stdout
    assert "RC_DATA_DIR" in ran.stdout
    assert f"the store is sqlite:///{tmp_path / 'fall.db'}" in ran.stdout.replace("\n", " ")


async def test_an_unknown_store_url_scheme_is_refused_in_one_line(tmp_path: Path) -> None:
    ran = await coordinator(env={"RC_STORE_URL": "postgres://db/rc"})
    assert ran.code == 2
    assert one_line(ran).startswith("rc-coordinator: unknown store URL scheme 'postgres': use sqlite:///PATH")


async def test_two_urls_naming_different_stores_are_refused(tmp_path: Path) -> None:
    ran = await coordinator(
        env={"RC_STORE_URL": f"sqlite:///{tmp_path}/a.db", "RC_MONGODB_URL": "mongodb://x/"}
    )
    assert ran.code == 2
    assert "name different stores" in one_line(ran)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"just some text\n", "is not a SQLite database"),
        (b"SQLite format 3\x00" + b"\x00\xff" * 600, "corrupt|cannot be read"),
    ],
    ids=["not-sqlite", "corrupt"],
)
async def test_a_bad_file_stops_the_coordinator_in_one_line_and_is_left_alone(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "rc.db"
    path.write_bytes(content)
    ran = await coordinator(env={"RC_STORE_URL": f"sqlite:///{path}"})
    assert ran.code == 4
    assert one_line(ran).startswith(f"rc-coordinator: {path}")
    assert re.search(reason, one_line(ran))
    assert path.read_bytes() == content


async def test_an_unusable_data_directory_stops_the_coordinator_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    ran = await coordinator(env={"RC_DATA_DIR": str(tmp_path / "file" / "data")})
    assert ran.code == 4
    assert "cannot create the data directory" in one_line(ran)


async def test_a_full_disk_stops_the_coordinator_in_one_line(tmp_path: Path) -> None:
    """The data directory is a 48 KiB file system of its own (a tmpfs mounted in a private mount namespace
    made with unshare, so no privilege and nothing outside the test is touched)."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is needed for this test"
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    prefix = (
        unshare,
        "--mount",
        "--map-root-user",
        "sh",
        "-c",
        f'mount -t tmpfs -o size=48k tmpfs "{tiny}" && exec "$0" "$@"',
    )
    ran = await coordinator(env={"RC_DATA_DIR": str(tiny)}, prefix=prefix)
    assert ran.code == 4, ran.stderr
    assert "no space left" in one_line(ran)


# ---------------------------------------------------------------------- store copy


async def filled(store: Store) -> None:
    """Three releases (one staged, with notes and its commands delivered), their events, two services."""
    for seq in (1, 2, 3):
        r = release(seq, notes=(note(1, "Données ✓ " * 50),) if seq == 2 else ())
        await store.insert(r, [created_event(r)])
        if seq == 2:
            after, event = begin(r)
            await store.compare_and_set(r, after, [event])
            for moved, moved_event in answer_all(after, Action.INITIALIZE, Outcome.ACCEPTED):
                await store.compare_and_set(after, moved, [moved_event])
                after = moved
    await store.set_required("portal", True, T0)
    await store.set_required("search-index", False, T0)


async def contents(store: Store) -> tuple[object, ...]:
    releases = [r async for batch in store.export_releases(2) for r in batch]
    events = sorted((e.id, e) for batch in [b async for b in store.export_events(2)] for e in batch)
    return releases, events, await store.all_services()


async def test_store_copy_moves_an_installation_both_ways(
    tmp_path: Path, mongo_url: str, namespace: str
) -> None:
    database = namespace.replace("-", "_")
    sqlite_url, back_url = f"sqlite:///{tmp_path}/one.db", f"sqlite:///{tmp_path}/back.db"
    source = store_for(sqlite_url, database)
    await source.open()
    mongo = store_for(mongo_url, database)
    try:
        await filled(source)
        original = await contents(source)
        await source.close()
        up = await coordinator(
            "store",
            "copy",
            "--from",
            sqlite_url,
            "--to",
            mongo_url,
            "--database",
            database,
            "--batch",
            "2",
            env={},
        )
        assert up.code == 0, up.stderr
        assert "copied 3 releases" in up.stdout
        assert "counts verified" in up.stdout
        assert "releases: 3 of 3 (100%)" in up.stderr  # progress
        down = await coordinator(
            "store", "copy", "--from", mongo_url, "--to", back_url, "--database", database, env={}
        )
        assert down.code == 0, down.stderr
        back = store_for(back_url, database)
        await back.open()
        try:
            assert await contents(back) == original
        finally:
            await back.close()
        again = await coordinator("store", "copy", "--from", sqlite_url, "--to", back_url, env={})
        assert again.code == 1
        assert "is not empty (3 releases" in one_line(again)
    finally:
        await mongo.drop()
