"""``ReleaseView.of`` and ``ReleaseView.listed`` build a view from a validated release without validating
it again: the view must be the one validation would build, in every state, notes or not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import Field

from schemas._base import DocumentModel, Version
from schemas.documents import Note, Release, ReleaseView, _same_types
from schemas.enums import ReleaseState
from tests.unit.releases import T0, Driver


def validated_view(release: Release, *, notes: bool) -> ReleaseView:
    """The view as it was built before: the release dumped, then validated as a view."""
    data = release.model_dump(exclude={"outbox", "revision", "seq", "next_note", "notes"})
    return ReleaseView.model_validate(
        {
            **data,
            "version": release.version,
            "notes": [n.model_dump() for n in release.notes] if notes else [],
            "note_count": len(release.notes),
        }
    )


def with_notes(release: Release) -> Release:
    notes = tuple(
        Note(
            id=f"N{i}",
            study="SD_AAAAAAAA" if i % 2 else None,
            text=f"Notes {i}: données — 数据 ✓ \u2028 🧬",
            author="tester",
            created_at=T0 + timedelta(minutes=i),
            updated_at=T0 + timedelta(minutes=i + 1),
        )
        for i in (1, 2, 4)
    )
    changes = {"notes": notes, "next_note": 5, "held": True, "state_reason": "why", "rerun_of": "RE_00000009"}
    return release.model_copy(update=changes)


@pytest.mark.parametrize("state", list(ReleaseState))
@pytest.mark.parametrize("noted", [False, True])
def test_a_view_is_the_one_validation_builds(state: ReleaseState, noted: bool) -> None:
    release = Driver().to(state).release
    if noted:
        release = with_notes(release)
    view = ReleaseView.of(release)
    assert view == validated_view(release, notes=True)
    assert view.model_dump_json() == validated_view(release, notes=True).model_dump_json()
    assert ReleaseView.model_validate_json(view.model_dump_json()) == view
    listed = ReleaseView.listed(release, len(release.notes))
    assert listed == validated_view(release, notes=False)
    assert listed.model_dump_json() == validated_view(release, notes=False).model_dump_json()
    assert listed.notes == ()
    assert listed.note_count == (3 if noted else 0)


def test_a_view_field_that_the_release_lacks_types_otherwise_or_checks_less_is_refused_at_import() -> None:
    class Document(DocumentModel):
        name: str = Field(max_length=10)
        version: Version
        count: int

    class Lacking(DocumentModel):
        other: str

    class Otherwise(DocumentModel):
        count: str

    class Stricter(DocumentModel):
        name: str = Field(max_length=5)

    class Looser(DocumentModel):
        name: str
        version: Version

    views: list[tuple[type[DocumentModel], tuple[str, ...]]] = [
        (Lacking, ("other",)),
        (Otherwise, ("count",)),
        (Stricter, ("name",)),
    ]
    for view, names in views:
        with pytest.raises(TypeError, match=f"{view.__name__}.{names[0]} is not Document.{names[0]}"):
            _same_types(view, Document, names)
    _same_types(Looser, Document, ("name", "version"))  # a view may check less than its document: no error
