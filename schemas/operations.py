"""What an operator may ask the coordinator: one model per admin operation, told apart by ``op``.

An :class:`~schemas.messages.AdminRequest` carries exactly one of these (:data:`AdminOperation`);
:mod:`schemas.messages` re-exports them all.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from schemas._base import ReleaseId, ServiceName, ShortText, StrictModel, StudyId, Tag
from schemas.documents import MAX_NOTE_BYTES, NOTE_ID_PATTERN
from schemas.enums import EventKind, ReleaseState

ReleaseName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class CreateRelease(StrictModel):
    op: Literal["create"] = "create"
    name: ReleaseName
    studies: tuple[StudyId, ...] = Field(min_length=1)
    description: str = Field(default="", max_length=10_000)
    tags: tuple[Tag, ...] = ()
    is_major: bool = False


Description = Annotated[str, StringConstraints(max_length=10_000)]
NoteText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NOTE_BYTES)]
NoteId = Annotated[str, StringConstraints(pattern=NOTE_ID_PATTERN)]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=300)]
PageSize = Annotated[int, Field(ge=1, le=500)]


class ListReleases(StrictModel):
    """Releases newest first; optionally only those in ``state``, with ``study``, created since ``since``."""

    op: Literal["list"] = "list"
    state: ReleaseState | None = None
    study: StudyId | None = None
    since: datetime | None = None
    limit: PageSize = 50
    #: The ``next_cursor`` of the previous page.
    cursor: Cursor | None = None


class EditRelease(StrictModel):
    """Change what describes a release. Name, description and tags may change until publication starts;
    studies and the classification only until initialization ends. Fields left out stay as they are."""

    op: Literal["edit"] = "edit"
    release_id: ReleaseId
    name: ReleaseName | None = None
    description: Description | None = None
    tags: tuple[Tag, ...] | None = None
    studies: Annotated[tuple[StudyId, ...], Field(min_length=1)] | None = None
    is_major: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> EditRelease:
        fields = (self.name, self.description, self.tags, self.studies, self.is_major)
        if all(value is None for value in fields):
            raise ValueError("give at least one of name, description, tags, studies, is_major")
        return self


class RerunRelease(StrictModel):
    """Create a new release with the name, description, studies, tags and classification of an ended one."""

    op: Literal["rerun"] = "rerun"
    release_id: ReleaseId


class ListEvents(StrictModel):
    """A release's audit trail, newest first."""

    op: Literal["events"] = "events"
    release_id: ReleaseId
    #: Only events that moved the release into this state.
    state: ReleaseState | None = None
    kind: EventKind | None = None
    since: datetime | None = None
    limit: PageSize = 50
    cursor: Cursor | None = None


class AddNote(StrictModel):
    """A markdown note on a release, or on one of its studies."""

    op: Literal["note_add"] = "note_add"
    release_id: ReleaseId
    study: StudyId | None = None
    text: NoteText


class EditNote(StrictModel):
    op: Literal["note_edit"] = "note_edit"
    release_id: ReleaseId
    note_id: NoteId
    text: NoteText


class RemoveNote(StrictModel):
    op: Literal["note_remove"] = "note_remove"
    release_id: ReleaseId
    note_id: NoteId


class ListNotes(StrictModel):
    """A release's notes, newest first."""

    op: Literal["notes"] = "notes"
    release_id: ReleaseId
    study: StudyId | None = None
    since: datetime | None = None
    limit: PageSize = 50
    cursor: Cursor | None = None


class ListStudies(StrictModel):
    """Every study ever released, the one whose latest release is newest first."""

    op: Literal["studies"] = "studies"
    #: Only studies whose id starts with this.
    study: StudyId | None = None
    #: Only studies whose latest release is in this state.
    state: ReleaseState | None = None
    #: Only studies whose latest release was created since.
    since: datetime | None = None
    limit: PageSize = 50
    cursor: Cursor | None = None


class ShowStudy(StrictModel):
    """One study: its latest and last published release, and its releases newest first."""

    op: Literal["study"] = "study"
    study: StudyId
    state: ReleaseState | None = None
    since: datetime | None = None
    limit: PageSize = 20
    cursor: Cursor | None = None


class ShowRelease(StrictModel):
    op: Literal["show"] = "show"
    release_id: ReleaseId
    events: int = Field(default=20, ge=0, le=500)


class HoldRelease(StrictModel):
    op: Literal["hold"] = "hold"
    release_id: ReleaseId


class UnholdRelease(StrictModel):
    op: Literal["unhold"] = "unhold"
    release_id: ReleaseId


class PublishRelease(StrictModel):
    op: Literal["publish"] = "publish"
    release_id: ReleaseId


class CancelRelease(StrictModel):
    op: Literal["cancel"] = "cancel"
    release_id: ReleaseId
    reason: ShortText = Field(min_length=1)


class ListServices(StrictModel):
    op: Literal["services"] = "services"


class RequireService(StrictModel):
    op: Literal["require"] = "require"
    service: ServiceName


class UnrequireService(StrictModel):
    op: Literal["unrequire"] = "unrequire"
    service: ServiceName


AdminOperation = Annotated[
    CreateRelease
    | ListReleases
    | ShowRelease
    | HoldRelease
    | UnholdRelease
    | PublishRelease
    | CancelRelease
    | ListServices
    | RequireService
    | UnrequireService
    | EditRelease
    | RerunRelease
    | ListEvents
    | AddNote
    | EditNote
    | RemoveNote
    | ListNotes
    | ListStudies
    | ShowStudy,
    Field(discriminator="op"),
]
