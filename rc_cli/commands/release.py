"""``rc release``: create, list, show, watch, hold, publish, cancel, edit and re-run releases, and their audit
trail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from rc_cli import following
from rc_cli.calls import request
from rc_cli.checks import build, check_release_id, since_option
from rc_cli.events import DEFAULT_FOLLOW_INTERVAL
from rc_cli.options import (
    CursorOption,
    LimitOption,
    ReleaseIdArgument,
    Settings,
    SinceOption,
    with_connection,
)
from rc_cli.output import EXIT_BAD_INPUT, fail, show_result
from schemas.enums import EventKind, ReleaseState
from schemas.messages import (
    AdminOperation,
    CancelRelease,
    CreateRelease,
    EditRelease,
    HoldRelease,
    ListEvents,
    ListReleases,
    PublishRelease,
    RerunRelease,
    ShowRelease,
    UnholdRelease,
)

app = typer.Typer(help="Create, list, show, watch, hold, publish and cancel releases.", no_args_is_help=True)


def _act(settings: Settings, release_id: str, make: Callable[[str], AdminOperation], verb: str) -> None:
    """An action on one release: check the id, send it, print the summary line (``verb``)."""
    check_release_id(settings, release_id)
    operation = build(settings, lambda: make(release_id))
    show_result(settings, request(settings, operation), verb)


@app.command("create")
@with_connection
def release_create(
    settings: Settings,
    name: Annotated[str, typer.Option("--name", help="Release name.")],
    study: Annotated[list[str], typer.Option("--study", help="Study id (repeat for several).")],
    major: Annotated[bool, typer.Option("--major", help="A major release (default: minor).")] = False,
    description: Annotated[str, typer.Option("--description", help="Free text.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
) -> None:
    """Create a release; the coordinator then drives every required service through it."""
    operation = build(
        settings,
        lambda: CreateRelease(
            name=name, studies=tuple(study), description=description, tags=tuple(tag or ()), is_major=major
        ),
    )
    show_result(settings, request(settings, operation), "created")


@app.command("list")
@with_connection
def release_list(
    settings: Settings,
    state: Annotated[
        ReleaseState | None, typer.Option("--state", help="Only releases in this state.")
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Only releases with this study.")] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
) -> None:
    """List releases, newest first, a page at a time."""
    moment = since_option(settings, since)
    operation = build(
        settings, lambda: ListReleases(state=state, study=study, since=moment, limit=limit, cursor=cursor)
    )
    show_result(settings, request(settings, operation))


@app.command("show")
@with_connection
def release_show(
    settings: Settings,
    release_id: ReleaseIdArgument,
    events: Annotated[int, typer.Option("--events", min=0, max=500, help="How many recent events.")] = 20,
) -> None:
    """Show a release: its state, versions, tasks and recent events."""
    check_release_id(settings, release_id)
    show_result(settings, request(settings, ShowRelease(release_id=release_id, events=events)))


@app.command("hold")
@with_connection
def release_hold(settings: Settings, release_id: ReleaseIdArgument) -> None:
    """Hold a staged release: it cannot be published until unheld."""
    _act(settings, release_id, lambda rid: HoldRelease(release_id=rid), "held")


@app.command("unhold")
@with_connection
def release_unhold(settings: Settings, release_id: ReleaseIdArgument) -> None:
    """Release a held release from hold."""
    _act(settings, release_id, lambda rid: UnholdRelease(release_id=rid), "unheld")


@app.command("publish")
@with_connection
def release_publish(settings: Settings, release_id: ReleaseIdArgument) -> None:
    """Publish a staged, unheld release (the final version is assigned now)."""
    _act(settings, release_id, lambda rid: PublishRelease(release_id=rid), "publishing")


@app.command("cancel")
@with_connection
def release_cancel(
    settings: Settings,
    release_id: ReleaseIdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the release's events).")],
) -> None:
    """Cancel a release that is not yet publishing; services discard what they staged."""
    if not reason.strip():
        fail(settings, "--reason must not be empty", EXIT_BAD_INPUT)
    _act(settings, release_id, lambda rid: CancelRelease(release_id=rid, reason=reason.strip()), "canceling")


@app.command("watch")
@with_connection
def release_watch(
    settings: Settings,
    release_id: ReleaseIdArgument,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls for progress.")
    ] = 1.0,
) -> None:
    """Follow a release live until it is published (exit 0), canceled or failed (exit 1), or Ctrl-C.

    With --json, prints one JSON line (the release) each time it changes.
    """
    check_release_id(settings, release_id)
    following.watch(settings, release_id, interval)


@app.command("edit")
@with_connection
def release_edit(
    settings: Settings,
    release_id: ReleaseIdArgument,
    name: Annotated[str | None, typer.Option("--name", help="New name.")] = None,
    description: Annotated[str | None, typer.Option("--description", help="New description.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag (repeatable); replaces every tag.")
    ] = None,
    clear_tags: Annotated[bool, typer.Option("--clear-tags", help="Remove every tag.")] = False,
    study: Annotated[
        list[str] | None, typer.Option("--study", help="Study id (repeatable); replaces every study.")
    ] = None,
    major: Annotated[
        bool | None, typer.Option("--major/--minor", help="Classification.", show_default=False)
    ] = None,
) -> None:
    """Edit a release. Name, description and tags may change until publication starts; studies and
    --major/--minor only until initialization ends. Options left out stay as they are."""
    check_release_id(settings, release_id)
    if clear_tags and tag:
        fail(settings, "give either --tag or --clear-tags, not both", EXIT_BAD_INPUT)
    tags = () if clear_tags else (tuple(tag) if tag else None)
    if name is None and description is None and tags is None and not study and major is None:
        fail(
            settings,
            "nothing to edit: give --name, --description, --tag, --clear-tags, --study, --major or --minor",
            EXIT_BAD_INPUT,
        )
    operation = build(
        settings,
        lambda: EditRelease(
            release_id=release_id,
            name=name,
            description=description,
            tags=tags,
            studies=tuple(study) if study else None,
            is_major=major,
        ),
    )
    show_result(settings, request(settings, operation), "edited")


@app.command("rerun")
@with_connection
def release_rerun(settings: Settings, release_id: ReleaseIdArgument) -> None:
    """Create a new release with the name, description, studies, tags and classification of an ended one
    (published, canceled or failed), linked to it (its rerun_of)."""
    _act(settings, release_id, lambda rid: RerunRelease(release_id=rid), "created")


@app.command("events")
@with_connection
def release_events(
    settings: Settings,
    release_id: ReleaseIdArgument,
    state: Annotated[
        ReleaseState | None, typer.Option("--state", help="Only transitions into this state.")
    ] = None,
    kind: Annotated[EventKind | None, typer.Option("--kind", help="Only events of this kind.")] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Then print new events as they happen, until the release ends."),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="With --follow: seconds between polls.")
    ] = DEFAULT_FOLLOW_INTERVAL,
) -> None:
    """The audit trail of a release, newest first: every transition, every message accepted or refused,
    who or what caused it and why.

    With --follow, prints the latest events oldest first, then each new one (one JSON line each with --json)
    until the release is published, canceled or failed.
    """
    check_release_id(settings, release_id)
    moment = since_option(settings, since)
    operation = build(
        settings,
        lambda: ListEvents(
            release_id=release_id, state=state, kind=kind, since=moment, limit=limit, cursor=cursor
        ),
    )
    if follow:
        following.follow(settings, operation, interval)
    else:
        show_result(settings, request(settings, operation))
