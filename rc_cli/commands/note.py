"""``rc note``: release notes in markdown, added, listed, edited and removed."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rc_cli import render
from rc_cli.calls import request
from rc_cli.checks import build, check_note_id, check_release_id, note_text, since_option
from rc_cli.options import CursorOption, LimitOption, Settings, SinceOption, with_connection
from rc_cli.output import console, show_result
from schemas.messages import AddNote, AdminResult, EditNote, ListNotes, ReleaseResult, RemoveNote

app = typer.Typer(help="Release notes in markdown: add, list, edit, remove.", no_args_is_help=True)

NoteReleaseArgument = Annotated[str, typer.Argument(metavar="RELEASE", help="Release id, e.g. RE_0A1B2C3D.")]
NoteIdArgument = Annotated[
    str, typer.Argument(metavar="NOTE_ID", help="Note id, e.g. N1 (see rc note list).")
]
NoteFileOption = Annotated[
    Path | None, typer.Option("--file", help="Read the markdown from this file ('-' for standard input).")
]
NoteTextOption = Annotated[str | None, typer.Option("--text", help="The markdown itself.")]


def _show_note(settings: Settings, result: AdminResult | None, verb: str) -> None:
    """After a note change: the release's notes (JSON: the release, as ``rc release show``)."""
    if settings.json or not isinstance(result, ReleaseResult):
        show_result(settings, result, verb)
        return
    out = console()
    out.print(render.plain(render.release_summary(verb, result.release)), soft_wrap=True)
    if result.events:
        out.print(render.plain(result.events[0].reason), soft_wrap=True)


@app.command("add")
@with_connection
def note_add(
    settings: Settings,
    release_id: NoteReleaseArgument,
    study: Annotated[
        str | None, typer.Option("--study", help="The study it is about (one of the release's).")
    ] = None,
    file: NoteFileOption = None,
    text: NoteTextOption = None,
) -> None:
    """Add a markdown note to a release, or to one of its studies (at most 64 KiB)."""
    check_release_id(settings, release_id)
    body = note_text(settings, file, text)
    operation = build(settings, lambda: AddNote(release_id=release_id, study=study, text=body))
    _show_note(settings, request(settings, operation), "noted")


@app.command("list")
@with_connection
def note_list(
    settings: Settings,
    release_id: NoteReleaseArgument,
    study: Annotated[str | None, typer.Option("--study", help="Only notes on this study.")] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
) -> None:
    """List a release's notes, newest first."""
    check_release_id(settings, release_id)
    moment = since_option(settings, since)
    operation = build(
        settings,
        lambda: ListNotes(release_id=release_id, study=study, since=moment, limit=limit, cursor=cursor),
    )
    show_result(settings, request(settings, operation))


@app.command("edit")
@with_connection
def note_edit(
    settings: Settings,
    release_id: NoteReleaseArgument,
    note_id: NoteIdArgument,
    file: NoteFileOption = None,
    text: NoteTextOption = None,
) -> None:
    """Replace the text of a note."""
    check_release_id(settings, release_id)
    check_note_id(settings, note_id)
    body = note_text(settings, file, text)
    operation = build(settings, lambda: EditNote(release_id=release_id, note_id=note_id, text=body))
    _show_note(settings, request(settings, operation), "noted")


@app.command("remove")
@with_connection
def note_remove(settings: Settings, release_id: NoteReleaseArgument, note_id: NoteIdArgument) -> None:
    """Remove a note (its id is not reused)."""
    check_release_id(settings, release_id)
    check_note_id(settings, note_id)
    operation = build(settings, lambda: RemoveNote(release_id=release_id, note_id=note_id))
    _show_note(settings, request(settings, operation), "noted")
