"""Edits and release notes in the pure state machine: which state allows what, and why a change is refused."""

from __future__ import annotations

import pytest

from coordinator.machine import (
    DESCRIPTION_EDITABLE,
    NOTES_EDITABLE,
    STUDIES_EDITABLE,
    Edit,
    NoteChange,
    Verdict,
    decide,
    edit_refusal,
    note_refusal,
)
from schemas.documents import MAX_NOTE_BYTES, MAX_NOTES, MAX_NOTES_TOTAL_BYTES, Release
from schemas.enums import ReleaseState
from schemas.messages import AddNote, EditNote, RemoveNote
from tests.unit.releases import T0, TIMEOUTS, new_release

SD_A, SD_B, SD_C = "SD_AAAAAAAA", "SD_BBBBBBBB", "SD_CCCCCCCC"


RID = new_release().id


def add(who: str, text: str, study: str | None = None) -> NoteChange:
    return NoteChange(T0, who, AddNote(release_id=RID, text=text, study=study))


def in_state(state: ReleaseState, **changes: object) -> Release:
    return new_release().model_copy(update={"state": state, "studies": (SD_A, SD_B), **changes})


@pytest.mark.parametrize("state", list(ReleaseState))
def test_name_description_and_tags_change_only_until_publication_starts(state: ReleaseState) -> None:
    release = in_state(state)
    decision = decide(release, Edit(T0, "ann", name="Renamed", description="new", tags=("x",)), TIMEOUTS)
    if state in DESCRIPTION_EDITABLE:
        assert decision.verdict is Verdict.APPLIED
        assert (decision.release.name, decision.release.description, decision.release.tags) == (
            "Renamed",
            "new",
            ("x",),
        )
        assert decision.release.revision == release.revision + 1
        assert decision.release.state is state
        assert not decision.messages
        assert "name 'Spring data release' -> 'Renamed'" in decision.reason
    else:
        assert decision.verdict is Verdict.REFUSED
        assert decision.release is release
        assert "can no longer change" in decision.reason
        assert str(state) in decision.reason
    assert (state in DESCRIPTION_EDITABLE) == (
        state in {ReleaseState.WAITING, ReleaseState.INITIALIZING, ReleaseState.RUNNING, ReleaseState.STAGED}
    )


@pytest.mark.parametrize("state", list(ReleaseState))
def test_studies_and_classification_change_only_before_initialization_ends(state: ReleaseState) -> None:
    release = in_state(state)
    for edit in (Edit(T0, "ann", studies=(SD_C,)), Edit(T0, "ann", is_major=True)):
        decision = decide(release, edit, TIMEOUTS)
        if state in (ReleaseState.WAITING, ReleaseState.INITIALIZING):
            assert decision.verdict is Verdict.APPLIED
        else:
            assert decision.verdict is Verdict.REFUSED
            assert (
                "before initialization ends" in decision.reason or "can no longer change" in decision.reason
            )
    assert {ReleaseState.WAITING, ReleaseState.INITIALIZING} == STUDIES_EDITABLE


def test_refusal_after_initialization_names_what_and_why() -> None:
    reason = edit_refusal(in_state(ReleaseState.STAGED), Edit(T0, "ann", studies=(SD_C,), is_major=True))
    assert reason == (
        "the studies and major/minor of a release can change only before initialization ends "
        "(waiting or initializing); this one is staged"
    )
    publishing = edit_refusal(in_state(ReleaseState.PUBLISHING), Edit(T0, "ann", tags=("x",)))
    assert publishing is not None
    assert publishing.startswith("publication has started (the release is publishing): its tags")


def test_an_edit_that_changes_nothing_is_a_duplicate() -> None:
    release = in_state(ReleaseState.RUNNING)
    decision = decide(release, Edit(T0, "ann", name=release.name, tags=release.tags), TIMEOUTS)
    assert decision.verdict is Verdict.DUPLICATE
    assert decision.release is release


def test_studies_with_notes_cannot_be_dropped_and_duplicates_are_refused() -> None:
    release = in_state(ReleaseState.INITIALIZING)
    noted = decide(release, add("ann", "about B", SD_B), TIMEOUTS).release
    refusal = decide(noted, Edit(T0, "ann", studies=(SD_A,)), TIMEOUTS)
    assert refusal.verdict is Verdict.REFUSED
    assert "notes are attached to SD_BBBBBBBB" in refusal.reason
    twice = decide(release, Edit(T0, "ann", studies=(SD_A, SD_A)), TIMEOUTS)
    assert twice.verdict is Verdict.REFUSED


def test_notes_are_added_edited_removed_with_ids_never_reused() -> None:
    release = in_state(ReleaseState.STAGED)
    first = decide(release, add("ann", "# Whole release"), TIMEOUTS)
    assert first.verdict is Verdict.APPLIED
    assert first.reason == "note N1 added by ann (15 bytes)"
    second = decide(first.release, add("bob", "about A", SD_A), TIMEOUTS).release
    assert [(n.id, n.study, n.author) for n in second.notes] == [("N1", None, "ann"), ("N2", SD_A, "bob")]
    edited = decide(
        second,
        NoteChange(T0.replace(hour=1), "bob", EditNote(release_id=RID, note_id="N1", text="# Revised")),
        TIMEOUTS,
    ).release
    assert edited.notes[0].text == "# Revised"
    assert edited.notes[0].updated_at > edited.notes[0].created_at
    removed = decide(
        edited, NoteChange(T0, "bob", RemoveNote(release_id=RID, note_id="N2")), TIMEOUTS
    ).release
    assert [n.id for n in removed.notes] == ["N1"]
    again = decide(removed, add("bob", "again"), TIMEOUTS).release
    assert [n.id for n in again.notes] == ["N1", "N3"]
    assert again.revision == release.revision + 5


def test_note_refusals() -> None:
    release = in_state(ReleaseState.RUNNING)
    assert note_refusal(release, AddNote(release_id=RID, text="x", study=SD_C)) == (
        f"study {SD_C} is not part of {release.id} (its studies: {SD_A}, {SD_B})"
    )
    assert (
        note_refusal(release, EditNote(release_id=RID, note_id="N7", text="x"))
        == f"no note N7 on {release.id} (its notes: none)"
    )
    assert note_refusal(release, RemoveNote(release_id=RID, note_id="N7")) is not None
    assert note_refusal(release, AddNote(release_id=RID, text="   ")) == "the note is empty"
    oversize = note_refusal(release, AddNote(release_id=RID, text="é" * (MAX_NOTE_BYTES // 2 + 1)))
    assert (
        oversize
        == f"the note is {MAX_NOTE_BYTES + 2} bytes; a note may have at most {MAX_NOTE_BYTES} bytes (64 KiB)"
    )
    assert note_refusal(release, AddNote(release_id=RID, text="a" * MAX_NOTE_BYTES)) is None


@pytest.mark.parametrize("state", list(ReleaseState))
def test_notes_change_until_the_release_ends(state: ReleaseState) -> None:
    decision = decide(in_state(state), add("ann", "text"), TIMEOUTS)
    assert (decision.verdict is Verdict.APPLIED) == (state in NOTES_EDITABLE)
    assert (state in NOTES_EDITABLE) == (not state.is_terminal)
    if not decision.applied:
        assert f"the release is {state}: its notes can no longer change" in decision.reason


def test_notes_are_bounded_in_total_and_in_number() -> None:
    release = in_state(ReleaseState.STAGED)
    big = "a" * MAX_NOTE_BYTES
    release = decide(release, add("ann", big), TIMEOUTS).release
    release = decide(release, add("ann", big[:-1000]), TIMEOUTS).release
    third = decide(release, add("ann", "a" * 2000), TIMEOUTS)
    assert third.verdict is Verdict.REFUSED
    assert f"at most {MAX_NOTES_TOTAL_BYTES} bytes together" in third.reason

    many = in_state(ReleaseState.STAGED)
    for _ in range(MAX_NOTES):
        many = decide(many, add("ann", "n"), TIMEOUTS).release
    refused = decide(many, add("ann", "n"), TIMEOUTS)
    assert refused.verdict is Verdict.REFUSED
    assert f"already has {MAX_NOTES} notes" in refused.reason


def test_notes_travel_in_the_published_announcement() -> None:
    from schemas.messages import Announcement

    release = decide(in_state(ReleaseState.STAGED), add("ann", "# Notes", SD_A), TIMEOUTS).release
    publishing = release.model_copy(update={"state": ReleaseState.PUBLISHING})
    from coordinator.machine import ReplyReceived
    from schemas.enums import Action, Outcome, TaskState
    from tests.unit.releases import reply

    publishing = publishing.model_copy(
        update={
            "tasks": {
                k: t.model_copy(update={"state": TaskState.PUBLISHING}) for k, t in release.tasks.items()
            }
        }
    )
    for service in publishing.tasks:
        publishing = decide(
            publishing,
            ReplyReceived(reply(publishing, service, Action.PUBLISH, Outcome.PUBLISHED), T0),
            TIMEOUTS,
        ).release
    assert publishing.state is ReleaseState.PUBLISHED
    entry = next(e for e in publishing.outbox if e.routing_key.endswith("release.published"))
    announcement = Announcement.model_validate_json(entry.body)
    assert [(n.id, n.study, n.text) for n in announcement.release.notes] == [("N1", SD_A, "# Notes")]
