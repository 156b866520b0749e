"""Notes, edits, per-study view, re-run, audit trail and list filters, through the real ``rc`` entry point
(subprocess, ``--json``) against the real coordinator and simulated services, including every refusal."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from coordinator.store import Store
from rc_cli.client import AdminClient
from schemas.enums import Action, ReleaseState
from schemas.messages import Announcement
from tests.cli.conftest import Outcome, Rc, rc_env
from tests.coordinator.fixtures import wait_for_state
from tests.coordinator.simulated import SimulatedService
from tests.operator.conftest import StartService

SD_A = "SD_AAAAAAAA"
SD_B = "SD_BBBBBBBB"
SD_C = "SD_CCCCCCCC"


def ok(outcome: Outcome) -> Any:
    assert outcome.code == 0, (outcome.code, outcome.stdout, outcome.stderr)
    return outcome.json()


def refused(outcome: Outcome, *fragments: str, code: int = 1) -> str:
    assert outcome.code == code, (outcome.code, outcome.stdout, outcome.stderr)
    error = outcome.json()["error"]
    for fragment in fragments:
        assert fragment in error, (fragment, error)
    assert outcome.stderr.startswith("rc: ")
    return str(error)


async def create(rc: Rc, *extra: str, name: str = "Fall release", studies: tuple[str, ...] = (SD_A,)) -> Any:
    args = ["release", "create", "--name", name, "--json", *extra]
    for study in studies:
        args += ["--study", study]
    return ok(await rc(*args))


async def staged(rc: Rc, store: Store, *extra: str, **options: Any) -> str:
    release_id = str((await create(rc, *extra, **options))["id"])
    await wait_for_state(store, release_id, ReleaseState.STAGED)
    return release_id


async def publish(rc: Rc, store: Store, release_id: str) -> None:
    ok(await rc("release", "publish", release_id, "--json"))
    await wait_for_state(store, release_id, ReleaseState.PUBLISHED)


async def _add_notes(rc: Rc, release_id: str, tmp_path: Path) -> None:
    """N1 on the whole release (--text), N2 on SD_B (--file)."""
    whole = ok(await rc("note", "add", release_id, "--text", "# Fall release\n\nEverything new.", "--json"))
    assert [(n["id"], n["study"]) for n in whole["notes"]] == [("N1", None)]
    assert whole["notes"][0]["author"] == "tester"
    markdown = tmp_path / "sd_b.md"
    markdown.write_text("* fixed the **phenotypes** of SD_B\n", encoding="utf-8")
    on_study = ok(await rc("note", "add", release_id, "--study", SD_B, "--file", str(markdown), "--json"))
    assert [(n["id"], n["study"]) for n in on_study["notes"]] == [("N1", None), ("N2", SD_B)]
    assert on_study["notes"][1]["text"] == markdown.read_text(encoding="utf-8")


async def _refused_notes(rc: Rc, release_id: str, tmp_path: Path) -> None:
    """Refusals: a study that is not in the release; no text or both; oversize; unknown note."""
    refused(
        await rc("note", "add", release_id, "--study", SD_C, "--text", "x", "--json"),
        f"study {SD_C} is not part of {release_id}",
        SD_A,
    )
    refused(await rc("note", "add", release_id, "--json"), "exactly one of --file or --text", code=2)
    big = tmp_path / "big.md"
    big.write_text("é" * 40_000, encoding="utf-8")  # 40,000 characters, 80,000 bytes
    refused(
        await rc("note", "add", release_id, "--file", str(big), "--json"), "80000 bytes", "64 KiB", code=2
    )
    refused(await rc("note", "edit", release_id, "N9", "--text", "x", "--json"), "no note N9", "N1, N2")


async def _list_notes(rc: Rc, release_id: str) -> None:
    """N1 and N2 listed newest first, by study, by page and since a moment."""
    listed = ok(await rc("note", "list", release_id, "--json"))
    assert [n["id"] for n in listed["notes"]] == ["N2", "N1"]  # newest first
    assert listed["next_cursor"] is None
    only_b = ok(await rc("note", "list", release_id, "--study", SD_B, "--json"))
    assert [n["id"] for n in only_b["notes"]] == ["N2"]
    first = ok(await rc("note", "list", release_id, "--limit", "1", "--json"))
    assert [n["id"] for n in first["notes"]] == ["N2"]
    second = ok(
        await rc("note", "list", release_id, "--limit", "1", "--cursor", first["next_cursor"], "--json")
    )
    assert [n["id"] for n in second["notes"]] == ["N1"]
    assert second["next_cursor"] is None
    refused(await rc("note", "list", release_id, "--cursor", "N2", "--json"), "invalid cursor")
    assert ok(await rc("note", "list", release_id, "--since", "1h", "--json"))["notes"]
    assert not ok(await rc("note", "list", release_id, "--since", "2999-01-01", "--json"))["notes"]


async def _edit_and_remove_notes(rc: Rc, release_id: str) -> None:
    """N1 revised, N2 removed, N3 added on SD_A (the id of N2 is not reused)."""
    edited = ok(await rc("note", "edit", release_id, "N1", "--text", "# Fall release\n\nRevised.", "--json"))
    assert edited["notes"][0]["text"].endswith("Revised.")
    assert edited["notes"][0]["updated_at"] > edited["notes"][0]["created_at"]
    removed = ok(await rc("note", "remove", release_id, "N2", "--json"))
    assert [n["id"] for n in removed["notes"]] == ["N1"]
    again = ok(await rc("note", "add", release_id, "--study", SD_A, "--text", "SD_A as before", "--json"))
    assert [n["id"] for n in again["notes"]] == ["N1", "N3"]  # ids are never reused

    human = await rc("note", "list", release_id)
    assert human.code == 0
    assert "N3 on SD_AAAAAAAA by tester" in human.stdout


async def _published(rc: Rc, store: Store, admin: AdminClient, release_id: str) -> Announcement:
    """Publish the release: its ``release.published`` announcement."""
    announced: list[Announcement] = []
    await admin.subscribe_announcements(announced.append, "release.published")
    await publish(rc, store, release_id)
    for _ in range(100):
        if announced:
            break
        await asyncio.sleep(0.05)
    assert announced
    return announced[0]


# ---------------------------------------------------------------------- notes


async def test_notes_add_list_edit_remove_and_announced_on_publication(
    ready: list[SimulatedService], rc: Rc, store: Store, admin: AdminClient, tmp_path: Path
) -> None:
    release_id = await staged(rc, store, studies=(SD_A, SD_B))
    await _add_notes(rc, release_id, tmp_path)
    await _refused_notes(rc, release_id, tmp_path)
    await _list_notes(rc, release_id)
    await _edit_and_remove_notes(rc, release_id)
    announced = await _published(rc, store, admin, release_id)
    assert [n.id for n in announced.release.notes] == ["N1", "N3"]
    assert announced.release.notes[0].text.endswith("Revised.")

    refused(
        await rc("note", "add", release_id, "--text", "too late", "--json"),
        "the release is published: its notes can no longer change",
    )
    events = ok(await rc("release", "events", release_id, "--kind", "operator", "--limit", "500", "--json"))
    reasons = [e["reason"] for e in events["events"]]
    assert any("note N1 added by tester" in r for r in reasons)
    assert any("note N2 removed by tester" in r for r in reasons)
    # Who: the broker user the requests came from, and the name the operator gave, beside it.
    assert {(e["actor"], e["label"]) for e in events["events"]} == {("guest", "tester")}


# ---------------------------------------------------------------------- edits


async def test_edit_name_description_tags_until_publication_studies_until_initialized(
    ready: list[SimulatedService], rc: Rc, store: Store
) -> None:
    release_id = await staged(rc, store, "--tag", "q3", "--description", "first cut", studies=(SD_A,))
    shown = ok(await rc("release", "show", release_id, "--json"))
    assert shown["tags"] == ["q3"]
    assert shown["description"] == "first cut"

    edited = ok(
        await rc(
            "release", "edit", release_id, "--name", "Fall release v2", "--description", "second cut",
            "--tag", "q3", "--tag", "hotfix", "--json",
        )
    )  # fmt: skip
    assert (edited["name"], edited["description"], edited["tags"]) == (
        "Fall release v2",
        "second cut",
        ["q3", "hotfix"],
    )
    assert ok(await rc("release", "edit", release_id, "--clear-tags", "--json"))["tags"] == []

    # studies and classification: only before initialization ends
    refused(
        await rc("release", "edit", release_id, "--study", SD_B, "--json"),
        "studies",
        "before initialization ends",
        "staged",
    )
    refused(
        await rc("release", "edit", release_id, "--major", "--json"), "major/minor", "before initialization"
    )
    refused(await rc("release", "edit", release_id, "--json"), "nothing to edit", code=2)

    await publish(rc, store, release_id)
    refused(
        await rc("release", "edit", release_id, "--name", "Too late", "--json"),
        "publication has started",
        "published",
        "name",
    )
    events = ok(await rc("release", "events", release_id, "--kind", "refused", "--json"))["events"]
    assert any(
        "edit refused" in e["reason"] and (e["actor"], e["label"]) == ("guest", "tester") for e in events
    )
    transitions = ok(await rc("release", "events", release_id, "--kind", "operator", "--json"))["events"]
    assert any("name 'Fall release' -> 'Fall release v2'" in e["reason"] for e in transitions)


async def test_edit_studies_and_classification_while_initializing(
    patient_coordinator: object, admin: AdminClient, services: StartService, rc: Rc, store: Store
) -> None:
    ok(await rc("service", "require", "portal", "--json"))
    portal = await services("portal", behaviour={Action.INITIALIZE: None})  # never answers initialize
    release_id = str((await create(rc, studies=(SD_A,)))["id"])
    await wait_for_state(store, release_id, ReleaseState.INITIALIZING)
    edited = ok(
        await rc("release", "edit", release_id, "--study", SD_A, "--study", SD_B, "--major", "--json")
    )
    assert edited["studies"] == [SD_A, SD_B]
    assert edited["is_major"] is True
    assert edited["state"] == "initializing"
    minor = ok(await rc("release", "edit", release_id, "--minor", "--json"))
    assert minor["is_major"] is False
    assert portal.actions(release_id) == [Action.INITIALIZE]
    ok(await rc("release", "cancel", release_id, "--reason", "done testing", "--json"))


# ---------------------------------------------------------------------- studies


async def test_study_list_and_show(ready: list[SimulatedService], rc: Rc, store: Store) -> None:
    first = await staged(rc, store, name="Spring", studies=(SD_A, SD_B))
    await publish(rc, store, first)
    second = await staged(rc, store, name="Summer", studies=(SD_A,))
    third = str((await create(rc, name="Autumn", studies=(SD_C,)))["id"])
    await wait_for_state(store, third, ReleaseState.STAGED)

    shown = ok(await rc("study", "show", SD_A, "--json"))
    assert shown["study"] == SD_A
    assert shown["release_count"] == 2
    assert (shown["latest"]["id"], shown["latest"]["name"], shown["latest"]["state"]) == (
        second,
        "Summer",
        "staged",
    )
    published = shown["last_published"]
    assert (published["id"], published["version"]) == (first, "0.1.0")
    assert datetime.fromisoformat(published["published_at"]) <= datetime.fromisoformat(
        shown["latest"]["created_at"]
    )
    assert [r["id"] for r in shown["releases"]] == [second, first]
    paged = ok(await rc("study", "show", SD_A, "--limit", "1", "--json"))
    assert [r["id"] for r in paged["releases"]] == [second]
    rest = ok(await rc("study", "show", SD_A, "--limit", "1", "--cursor", paged["next_cursor"], "--json"))
    assert [r["id"] for r in rest["releases"]] == [first]
    assert rest["next_cursor"] is None
    only_published = ok(await rc("study", "show", SD_A, "--state", "published", "--json"))
    assert [r["id"] for r in only_published["releases"]] == [first]
    b = ok(await rc("study", "show", SD_B, "--json"))
    assert b["latest"]["id"] == first
    assert b["last_published"]["id"] == first
    c = ok(await rc("study", "show", SD_C, "--json"))
    assert c["latest"]["id"] == third
    assert c["last_published"] is None
    refused(await rc("study", "show", "SD_NEVERSEEN", "--json"), "no release has included study SD_NEVERSEEN")

    listed = ok(await rc("study", "list", "--json"))
    assert [s["study"] for s in listed["studies"]] == [SD_C, SD_A, SD_B]  # latest release newest first
    by_study = {s["study"]: s for s in listed["studies"]}
    assert by_study[SD_A]["latest"]["id"] == second
    assert by_study[SD_A]["last_published"]["version"] == "0.1.0"
    assert by_study[SD_B]["release_count"] == 1
    assert by_study[SD_C]["last_published"] is None
    page = ok(await rc("study", "list", "--limit", "2", "--json"))
    assert [s["study"] for s in page["studies"]] == [SD_C, SD_A]
    tail = ok(await rc("study", "list", "--limit", "2", "--cursor", page["next_cursor"], "--json"))
    assert [s["study"] for s in tail["studies"]] == [SD_B]
    assert tail["next_cursor"] is None
    assert [s["study"] for s in ok(await rc("study", "list", "--study", "SD_B", "--json"))["studies"]] == [
        SD_B
    ]
    published_latest = ok(await rc("study", "list", "--state", "published", "--json"))
    assert [s["study"] for s in published_latest["studies"]] == [SD_B]
    assert ok(await rc("study", "list", "--since", "1d", "--json"))["studies"]
    refused(await rc("study", "list", "--cursor", "nonsense", "--json"), "invalid cursor")
    human = await rc("study", "show", SD_A)
    assert human.code == 0
    assert "0.1.0" in human.stdout
    assert second in human.stdout


# ---------------------------------------------------------------------- re-run


async def test_rerun_copies_the_release_and_links_it(
    ready: list[SimulatedService], rc: Rc, store: Store
) -> None:
    original = await staged(
        rc, store, "--tag", "q3", "--major", "--description", "d", name="Winter", studies=(SD_A, SD_B)
    )
    refused(await rc("release", "rerun", original, "--json"), "is staged, not ended")
    ok(await rc("release", "cancel", original, "--reason", "bad data in SD_B", "--json"))
    await wait_for_state(store, original, ReleaseState.CANCELED)

    again = ok(await rc("release", "rerun", original, "--json"))
    assert again["id"] != original
    assert again["rerun_of"] == original
    assert (again["name"], again["studies"], again["tags"], again["is_major"], again["description"]) == (
        "Winter",
        [SD_A, SD_B],
        ["q3"],
        True,
        "d",
    )
    await wait_for_state(store, again["id"], ReleaseState.STAGED)
    shown = await rc("release", "show", again["id"])
    assert shown.code == 0
    assert re.search(rf"re-run of\s+{original}", shown.stdout)
    trail = ok(await rc("release", "events", original, "--kind", "operator", "--json"))["events"]
    assert any(f"re-run by tester as {again['id']}" in e["reason"] for e in trail)
    created = ok(await rc("release", "events", again["id"], "--kind", "created", "--json"))["events"]
    assert f"a re-run of {original}" in created[0]["reason"]

    refused(await rc("release", "rerun", "RE_ZZZZZZZZ", "--json"), "unknown release RE_ZZZZZZZZ")
    refused(await rc("release", "rerun", "nope", "--json"), "invalid release id", code=2)


async def _followed_until_published(
    rc: Rc, store: Store, release_id: str, amqp_url: str, namespace: str
) -> list[str]:
    """``rc release events --follow`` from before publication until the release is published: the ids
    of the events it printed."""
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rc_cli", "release", "events", release_id, "--follow", "--json",
        "--limit", "3", "--interval", "0.2",
        env=rc_env(amqp_url, namespace), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert follower.stdout is not None
    first = await asyncio.wait_for(follower.stdout.readline(), 60)  # it has read the latest: it follows
    await publish(rc, store, release_id)
    out, err = await asyncio.wait_for(follower.communicate(), 60)
    assert follower.returncode == 0, err.decode()
    followed = [json.loads(line) for line in (first + out).decode().splitlines()]
    ids = [e["id"] for e in followed]
    assert len(ids) == len(set(ids))  # each event once
    assert [e["at"] for e in followed] == sorted(e["at"] for e in followed)  # oldest first
    assert followed[-1]["state_after"] == "published"
    assert any(e["state_after"] == "publishing" and e["kind"] == "transition" for e in followed)
    return ids


async def _all_events(rc: Rc, release_id: str) -> list[Any]:
    """Every event of the published release, on one page, newest first, of every kind with its actor."""
    everything = ok(await rc("release", "events", release_id, "--limit", "500", "--json"))
    events: list[Any] = everything["events"]
    assert everything["release_state"] == "published"
    assert everything["next_cursor"] is None
    keys = [(e["at"], e["id"]) for e in events]
    assert keys == sorted(keys, reverse=True)  # newest first
    assert events[-1]["kind"] == "created"
    kinds = {e["kind"] for e in events}
    assert {"created", "transition", "accepted", "operator", "refused"} <= kinds
    refusal = next(e for e in events if e["kind"] == "refused")
    assert "publish refused" in refusal["reason"]
    assert (refusal["actor"], refusal["label"]) == ("guest", "tester")  # the broker user, and the name given
    accepted = next(e for e in events if e["kind"] == "accepted")
    assert accepted["service"] in {"file-service", "portal", "search-index"}
    assert accepted["actor"] == "guest"  # the broker user that sent the reply (a trusted one, here)
    assert accepted["message_id"]
    return events


async def _paged_events(rc: Rc, release_id: str) -> list[Any]:
    """Every event of the release, 4 a page, following the cursors."""
    pages: list[Any] = []
    cursor: str | None = None
    while True:
        args = ["release", "events", release_id, "--limit", "4", "--json"]
        page = ok(await rc(*args, *(["--cursor", cursor] if cursor else [])))
        pages += page["events"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return pages


# ---------------------------------------------------------------------- audit trail


async def test_events_paged_newest_first_filtered_and_followed(
    ready: list[SimulatedService], rc: Rc, store: Store, amqp_url: str, namespace: str
) -> None:
    release_id = await staged(rc, store)
    ok(await rc("release", "hold", release_id, "--json"))
    refused(await rc("release", "publish", release_id, "--json"), "on hold")
    ok(await rc("release", "unhold", release_id, "--json"))

    ids = await _followed_until_published(rc, store, release_id, amqp_url, namespace)
    events = await _all_events(rc, release_id)
    assert set(ids) <= {e["id"] for e in events}
    pages = await _paged_events(rc, release_id)
    assert [e["id"] for e in pages] == [e["id"] for e in events]  # paging neither skips nor repeats

    staged_only = ok(await rc("release", "events", release_id, "--state", "staged", "--json"))["events"]
    assert [e["state_after"] for e in staged_only]
    assert all(e["state_after"] == "staged" for e in staged_only)
    assert not ok(await rc("release", "events", release_id, "--since", "2999-01-01", "--json"))["events"]
    refused(await rc("release", "events", release_id, "--cursor", "garbage", "--json"), "invalid cursor")
    refused(await rc("release", "events", release_id, "--since", "yesterday", "--json"), "--since", code=2)
    refused(await rc("release", "events", "RE_ZZZZZZZZ", "--json"), "unknown release RE_ZZZZZZZZ")
    human = await rc("release", "events", release_id, "--limit", "3")
    assert human.code == 0
    assert "published" in human.stdout


# ---------------------------------------------------------------------- list filters


async def test_release_list_filters_and_paging(ready: list[SimulatedService], rc: Rc, store: Store) -> None:
    first = await staged(rc, store, studies=(SD_A,))
    second = await staged(rc, store, studies=(SD_B,))
    third = await staged(rc, store, studies=(SD_A, SD_B))
    await publish(rc, store, first)

    assert [r["id"] for r in ok(await rc("release", "list", "--json"))["releases"]] == [third, second, first]
    with_a = ok(await rc("release", "list", "--study", SD_A, "--json"))["releases"]
    assert [r["id"] for r in with_a] == [third, first]
    assert "notes" in with_a[0]
    assert "note_count" in with_a[0]
    staged_b = ok(await rc("release", "list", "--study", SD_B, "--state", "staged", "--json"))["releases"]
    assert [r["id"] for r in staged_b] == [third, second]
    assert len(ok(await rc("release", "list", "--since", "1h", "--json"))["releases"]) == 3
    assert not ok(await rc("release", "list", "--since", "2999-01-01T00:00:00Z", "--json"))["releases"]
    page = ok(await rc("release", "list", "--limit", "2", "--json"))
    assert [r["id"] for r in page["releases"]] == [third, second]
    rest = ok(await rc("release", "list", "--limit", "2", "--cursor", page["next_cursor"], "--json"))
    assert [r["id"] for r in rest["releases"]] == [first]
    refused(await rc("release", "list", "--cursor", "abc", "--json"), "invalid cursor")
    refused(await rc("release", "list", "--since", "7 days", "--json"), "invalid --since", code=2)
