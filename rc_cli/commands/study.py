"""``rc study``: studies across releases, the latest release of each and its last published version."""

from __future__ import annotations

from typing import Annotated

import typer

from rc_cli.calls import request
from rc_cli.checks import build, since_option
from rc_cli.options import CursorOption, LimitOption, Settings, SinceOption, with_connection
from rc_cli.output import show_result
from schemas.enums import ReleaseState
from schemas.messages import ListStudies, ShowStudy

app = typer.Typer(
    help="Studies across releases: the latest release of each, and its last published version.",
    no_args_is_help=True,
)


@app.command("list")
@with_connection
def study_list(
    settings: Settings,
    study: Annotated[
        str | None, typer.Option("--study", help="Only studies whose id starts with this.")
    ] = None,
    state: Annotated[
        ReleaseState | None,
        typer.Option("--state", help="Only studies whose latest release is in this state."),
    ] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
) -> None:
    """Every study: its latest release (id, name, state), last published version and when it was published.
    Newest first: the study whose latest release is newest comes first."""
    moment = since_option(settings, since)
    operation = build(
        settings, lambda: ListStudies(study=study, state=state, since=moment, limit=limit, cursor=cursor)
    )
    show_result(settings, request(settings, operation))


@app.command("show")
@with_connection
def study_show(
    settings: Settings,
    study: Annotated[str, typer.Argument(metavar="STUDY", help="Study id, e.g. SD_ABCDEFGH.")],
    state: Annotated[
        ReleaseState | None, typer.Option("--state", help="Only list releases in this state.")
    ] = None,
    since: SinceOption = None,
    limit: LimitOption = 20,
    cursor: CursorOption = None,
) -> None:
    """One study: its latest release, last published version and when, and its releases newest first."""
    moment = since_option(settings, since)
    operation = build(
        settings, lambda: ShowStudy(study=study, state=state, since=moment, limit=limit, cursor=cursor)
    )
    show_result(settings, request(settings, operation))
