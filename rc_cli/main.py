"""``rc``: the operators' command line. It talks to the coordinator only through the broker (request/reply).

Exit codes: 0 success; 1 the coordinator refused (or ``watch`` ended canceled/failed); 2 bad input;
3 no coordinator answering or broker unreachable; 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live

from rc_cli import render
from rc_cli.client import (
    DEFAULT_AMQP_URL,
    DEFAULT_NAMESPACE,
    DEFAULT_TIMEOUT,
    AdminClient,
    AdminClientError,
    Refused,
    expect_ok,
)
from rc_cli.events import DEFAULT_FOLLOW_INTERVAL, follow_events
from rc_cli.watch import watch_release
from schemas._base import RELEASE_ID_PATTERN
from schemas.broker_url import mask_url
from schemas.documents import MAX_NOTE_BYTES, NOTE_ID_PATTERN, AuditEvent, ReleaseView
from schemas.enums import EventKind, ReleaseState
from schemas.messages import (
    AddNote,
    AdminOperation,
    AdminResult,
    CancelRelease,
    CreateRelease,
    EditNote,
    EditRelease,
    HoldRelease,
    ListEvents,
    ListNotes,
    ListReleases,
    ListServices,
    ListStudies,
    PublishRelease,
    ReleaseResult,
    RemoveNote,
    RequireService,
    RerunRelease,
    ShowRelease,
    ShowStudy,
    UnholdRelease,
    UnrequireService,
)
from schemas.topology import check_service_name

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130

_RELEASE_ID = re.compile(RELEASE_ID_PATTERN)
T = TypeVar("T")

app = typer.Typer(
    name="rc",
    help="Release Coordinator: create, follow, hold, publish and cancel data releases.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold the broker URL and its password
)
release_app = typer.Typer(
    help="Create, list, show, watch, hold, publish and cancel releases.", no_args_is_help=True
)
service_app = typer.Typer(
    help="The registry of task services and which of them a release needs.", no_args_is_help=True
)
note_app = typer.Typer(help="Release notes in markdown: add, list, edit, remove.", no_args_is_help=True)
study_app = typer.Typer(
    help="Studies across releases: the latest release of each, and its last published version.",
    no_args_is_help=True,
)
app.add_typer(release_app, name="release")
app.add_typer(note_app, name="note")
app.add_typer(study_app, name="study")
app.add_typer(service_app, name="service")

# ---------------------------------------------------------------------- options

_PANEL = "Connection and output"
_MASKED_DEFAULT_URL = mask_url(DEFAULT_AMQP_URL)

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--amqp-url",
        help=(
            "Broker URL, or a cluster's nodes comma-separated "
            f"(env RC_AMQP_URL; default {_MASKED_DEFAULT_URL})."
        ),
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        help=f"Installation namespace (env RC_NAMESPACE; default {DEFAULT_NAMESPACE}).",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=0.001,
        help=f"Seconds to wait for the coordinator (env RC_TIMEOUT; default {DEFAULT_TIMEOUT:g}).",
        show_default=False,
        rich_help_panel=_PANEL,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON.", rich_help_panel=_PANEL)
]


@dataclass(frozen=True)
class Settings:
    amqp_url: str = DEFAULT_AMQP_URL
    namespace: str = DEFAULT_NAMESPACE
    timeout: float = DEFAULT_TIMEOUT
    json: bool = False


@app.callback()
def root(
    ctx: typer.Context,
    amqp_url: Annotated[
        str,
        typer.Option(
            "--amqp-url",
            envvar="RC_AMQP_URL",
            help="Broker URL; a cluster's nodes as several URLs separated by commas.",
            show_default=_MASKED_DEFAULT_URL,
            rich_help_panel=_PANEL,
        ),
    ] = DEFAULT_AMQP_URL,
    namespace: Annotated[
        str,
        typer.Option(
            "--namespace", envvar="RC_NAMESPACE", help="Installation namespace.", rich_help_panel=_PANEL
        ),
    ] = DEFAULT_NAMESPACE,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            envvar="RC_TIMEOUT",
            min=0.001,
            help="Seconds to wait for the coordinator's answer.",
            rich_help_panel=_PANEL,
        ),
    ] = DEFAULT_TIMEOUT,
    json_output: JsonOption = False,
) -> None:
    """Release Coordinator: create, follow, hold, publish and cancel data releases.

    Connection options may be given here or after any command.
    """
    ctx.obj = Settings(amqp_url=amqp_url, namespace=namespace, timeout=timeout, json=json_output)


def _settings(
    ctx: typer.Context, amqp_url: str | None, namespace: str | None, timeout: float | None, json_output: bool
) -> Settings:
    """The root options, overridden by the same options given after the command."""
    base = ctx.find_object(Settings) or Settings()
    return Settings(
        amqp_url=amqp_url if amqp_url is not None else base.amqp_url,
        namespace=namespace if namespace is not None else base.namespace,
        timeout=timeout if timeout is not None else base.timeout,
        json=json_output or base.json,
    )


# ---------------------------------------------------------------------- output and errors


def _console() -> Console:
    return Console(highlight=False)


def _print_json(data: Any, *, compact: bool = False) -> None:
    text = json.dumps(data, separators=(",", ":")) if compact else json.dumps(data, indent=2)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _fail(settings: Settings, message: str, code: int) -> NoReturn:
    """One line on stderr (and ``{"error": ...}`` on stdout with ``--json``), then exit with ``code``."""
    if settings.json:
        _print_json(render.error_json(message))
    sys.stderr.write(f"rc: {message}\n")
    sys.stderr.flush()
    raise typer.Exit(code)


def _check_release_id(settings: Settings, release_id: str) -> str:
    if not _RELEASE_ID.match(release_id):
        _fail(
            settings,
            f"invalid release id {release_id!r}: expected RE_ followed by 8 uppercase letters or digits "
            "(e.g. RE_0A1B2C3D)",
            EXIT_BAD_INPUT,
        )
    return release_id


def _check_service(settings: Settings, name: str) -> str:
    try:
        return check_service_name(name)
    except ValueError as error:
        _fail(settings, str(error), EXIT_BAD_INPUT)


_OPTION_NAMES = {
    "name": "--name",
    "studies": "--study",
    "description": "--description",
    "tags": "--tag",
    "reason": "--reason",
    "limit": "--limit",
    "cursor": "--cursor",
    "state": "--state",
    "study": "--study",
    "since": "--since",
    "kind": "--kind",
    "text": "--text",
    "note_id": "NOTE_ID",
    "is_major": "--major/--minor",
}


def _describe_invalid(error: ValidationError) -> str:
    problems = []
    for item in error.errors(include_url=False)[:3]:
        location = [str(part) for part in item["loc"]]
        if location and location[0] in _OPTION_NAMES:
            location[0] = _OPTION_NAMES[location[0]]
            where = location[0] + (
                f" #{int(location[1]) + 1}" if len(location) > 1 and location[1].isdigit() else ""
            )
        else:
            where = ".".join(location) or "input"
        problems.append(f"{where}: {item['msg']}")
    return "invalid input: " + "; ".join(problems)


def _build(settings: Settings, factory: Callable[[], T]) -> T:
    """Build an operation from the command line, turning a validation error into exit 2."""
    try:
        return factory()
    except ValidationError as error:
        _fail(settings, _describe_invalid(error), EXIT_BAD_INPUT)


def _client(settings: Settings) -> AdminClient:
    try:
        return AdminClient(settings.amqp_url, settings.namespace, timeout=settings.timeout)
    except ValueError as error:  # a malformed broker URL (list)
        _fail(settings, str(error), EXIT_BAD_INPUT)


def _run(settings: Settings, work: Callable[[AdminClient], Awaitable[T]]) -> T:
    """Run ``work`` with a connected client, mapping failures to exit codes."""

    async def go() -> T:
        async with _client(settings) as client:
            return await work(client)

    try:
        return asyncio.run(go())
    except Refused as refusal:
        _fail(settings, str(refusal), EXIT_REFUSED)
    except AdminClientError as error:
        _fail(settings, str(error), EXIT_UNAVAILABLE)


def _request(settings: Settings, operation: AdminOperation) -> AdminResult | None:
    async def work(client: AdminClient) -> AdminResult | None:
        return expect_ok(await client.request(operation))

    return _run(settings, work)


def _show_result(settings: Settings, result: AdminResult | None, verb: str | None = None) -> None:
    """Print any result: JSON with ``--json``, else a summary line (``verb``) or the full rendering."""
    if settings.json:
        _print_json(render.result_json(result))
        return
    console = _console()
    for part in render.result_view(result, verb):
        console.print(part.renderable, soft_wrap=part.soft_wrap)


# ---------------------------------------------------------------------- paging and filters

LimitOption = Annotated[int, typer.Option("--limit", min=1, max=500, help="Page size.")]
CursorOption = Annotated[str | None, typer.Option("--cursor", help="next_cursor of the previous page.")]
SinceOption = Annotated[
    str | None,
    typer.Option(
        "--since",
        help="Only since this moment: an ISO date or time (UTC if no zone), or an age like 7d, 12h, 30m.",
    ),
]

_AGE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``7d`` (an age: seconds, minutes, hours, days or weeks ago), or an ISO date or date and time."""
    match = _AGE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_AGE_UNITS[unit]: amount})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid --since {text!r}: give an ISO date or time (2026-01-31, 2026-01-31T12:00:00Z) "
            "or an age (90s, 30m, 12h, 7d, 2w)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _since(settings: Settings, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_since(text)
    except (ValueError, OverflowError) as error:
        _fail(settings, str(error), EXIT_BAD_INPUT)


# ---------------------------------------------------------------------- service commands


@service_app.command("list")
def service_list(
    ctx: typer.Context,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """List the registered task services: required or not, health, last heartbeat."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _show_result(settings, _request(settings, ListServices()))


@service_app.command("require")
def service_require(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Service name, e.g. search-index.")],
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Require a service: releases created from now on wait for it."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    service = _check_service(settings, name)
    _show_result(settings, _request(settings, RequireService(service=service)), f"{service} is now required")


@service_app.command("unrequire")
def service_unrequire(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Service name, e.g. search-index.")],
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Stop requiring a service: releases created from now on do without it."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    service = _check_service(settings, name)
    _show_result(
        settings, _request(settings, UnrequireService(service=service)), f"{service} is no longer required"
    )


# ---------------------------------------------------------------------- release commands


@release_app.command("create")
def release_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="Release name.")],
    study: Annotated[list[str], typer.Option("--study", help="Study id (repeat for several).")],
    major: Annotated[bool, typer.Option("--major", help="A major release (default: minor).")] = False,
    description: Annotated[str, typer.Option("--description", help="Free text.")] = "",
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a release; the coordinator then drives every required service through it."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    operation = _build(
        settings,
        lambda: CreateRelease(
            name=name, studies=tuple(study), description=description, tags=tuple(tag or ()), is_major=major
        ),
    )
    _show_result(settings, _request(settings, operation), "created")


@release_app.command("list")
def release_list(
    ctx: typer.Context,
    state: Annotated[
        ReleaseState | None, typer.Option("--state", help="Only releases in this state.")
    ] = None,
    study: Annotated[str | None, typer.Option("--study", help="Only releases with this study.")] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """List releases, newest first, a page at a time."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    moment = _since(settings, since)
    operation = _build(
        settings, lambda: ListReleases(state=state, study=study, since=moment, limit=limit, cursor=cursor)
    )
    _show_result(settings, _request(settings, operation))


ReleaseIdArgument = Annotated[str, typer.Argument(metavar="ID", help="Release id, e.g. RE_0A1B2C3D.")]


@release_app.command("show")
def release_show(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    events: Annotated[int, typer.Option("--events", min=0, max=500, help="How many recent events.")] = 20,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show a release: its state, versions, tasks and recent events."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    _show_result(settings, _request(settings, ShowRelease(release_id=release_id, events=events)))


def _simple_action(
    ctx: typer.Context,
    release_id: str,
    make: Callable[[str], AdminOperation],
    verb: str,
    options: tuple[str | None, str | None, float | None, bool],
) -> None:
    settings = _settings(ctx, *options)
    _check_release_id(settings, release_id)
    operation = _build(settings, lambda: make(release_id))
    _show_result(settings, _request(settings, operation), verb)


@release_app.command("hold")
def release_hold(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Hold a staged release: it cannot be published until unheld."""
    options = (amqp_url, namespace, timeout, json_output)
    _simple_action(ctx, release_id, lambda rid: HoldRelease(release_id=rid), "held", options)


@release_app.command("unhold")
def release_unhold(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Release a held release from hold."""
    options = (amqp_url, namespace, timeout, json_output)
    _simple_action(ctx, release_id, lambda rid: UnholdRelease(release_id=rid), "unheld", options)


@release_app.command("publish")
def release_publish(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Publish a staged, unheld release (the final version is assigned now)."""
    options = (amqp_url, namespace, timeout, json_output)
    _simple_action(ctx, release_id, lambda rid: PublishRelease(release_id=rid), "publishing", options)


@release_app.command("cancel")
def release_cancel(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the release's events).")],
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Cancel a release that is not yet publishing; services discard what they staged."""
    options = (amqp_url, namespace, timeout, json_output)
    if not reason.strip():
        _fail(_settings(ctx, *options), "--reason must not be empty", EXIT_BAD_INPUT)
    _simple_action(
        ctx,
        release_id,
        lambda rid: CancelRelease(release_id=rid, reason=reason.strip()),
        "canceling",
        options,
    )


@release_app.command("watch")
def release_watch(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between polls for progress.")
    ] = 1.0,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Follow a release live until it is published (exit 0), canceled or failed (exit 1), or Ctrl-C.

    With --json, prints one JSON line (the release) each time it changes.
    """
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    console = _console()

    async def work(client: AdminClient) -> ReleaseView:
        if settings.json:
            last: list[dict[str, Any]] = []

            def print_line(view: ReleaseView, note: str | None) -> None:
                data = render.release_json(view)
                if not last or last[0] != data:
                    last[:] = [data]
                    _print_json(data, compact=True)
                if note:
                    sys.stderr.write(f"rc: {note}\n")

            return await watch_release(client, release_id, print_line, poll_interval=interval)

        with Live(console=console, auto_refresh=False, transient=False) as live:

            def redraw(view: ReleaseView, note: str | None) -> None:
                live.update(render.watch_view(view, note), refresh=True)

            return await watch_release(client, release_id, redraw, poll_interval=interval)

    try:
        final = _run(settings, work)
    except KeyboardInterrupt:
        sys.stderr.write(f"rc: stopped watching {release_id} (the release goes on)\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if final.state is ReleaseState.PUBLISHED:
        if not settings.json:
            console.print(f"{final.id} published as version {final.version}", soft_wrap=True)
        return
    sys.stderr.write(f"rc: {final.id} ended {render.release_state_line(final)}\n")
    raise typer.Exit(EXIT_REFUSED)


@release_app.command("edit")
def release_edit(
    ctx: typer.Context,
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
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Edit a release. Name, description and tags may change until publication starts; studies and
    --major/--minor only until initialization ends. Options left out stay as they are."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    if clear_tags and tag:
        _fail(settings, "give either --tag or --clear-tags, not both", EXIT_BAD_INPUT)
    tags = () if clear_tags else (tuple(tag) if tag else None)
    if name is None and description is None and tags is None and not study and major is None:
        _fail(
            settings,
            "nothing to edit: give --name, --description, --tag, --clear-tags, --study, --major or --minor",
            EXIT_BAD_INPUT,
        )
    operation = _build(
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
    _show_result(settings, _request(settings, operation), "edited")


@release_app.command("rerun")
def release_rerun(
    ctx: typer.Context,
    release_id: ReleaseIdArgument,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Create a new release with the name, description, studies, tags and classification of an ended one
    (published, canceled or failed), linked to it (its rerun_of)."""
    options = (amqp_url, namespace, timeout, json_output)
    _simple_action(ctx, release_id, lambda rid: RerunRelease(release_id=rid), "created", options)


@release_app.command("events")
def release_events(
    ctx: typer.Context,
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
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """The audit trail of a release, newest first: every transition, every message accepted or refused,
    who or what caused it and why.

    With --follow, prints the latest events oldest first, then each new one (one JSON line each with --json)
    until the release is published, canceled or failed.
    """
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    moment = _since(settings, since)
    operation = _build(
        settings,
        lambda: ListEvents(
            release_id=release_id, state=state, kind=kind, since=moment, limit=limit, cursor=cursor
        ),
    )
    if not follow:
        _show_result(settings, _request(settings, operation))
        return

    def print_event(event: AuditEvent) -> None:
        if settings.json:
            _print_json(event.model_dump(mode="json"), compact=True)
        else:
            sys.stdout.write(render.event_line(event) + "\n")
            sys.stdout.flush()

    def note(text: str) -> None:
        sys.stderr.write(f"rc: {text}\n")

    async def work(client: AdminClient) -> ReleaseState:
        return await follow_events(client, operation, print_event, interval=interval, on_note=note)

    try:
        final = _run(settings, work)
    except KeyboardInterrupt:
        sys.stderr.write(f"rc: stopped following {release_id} (the release goes on)\n")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not settings.json:
        sys.stderr.write(f"rc: {release_id} is {final.value}\n")


# ---------------------------------------------------------------------- note commands

_NOTE_ID = re.compile(NOTE_ID_PATTERN)
NoteReleaseArgument = Annotated[str, typer.Argument(metavar="RELEASE", help="Release id, e.g. RE_0A1B2C3D.")]
NoteIdArgument = Annotated[
    str, typer.Argument(metavar="NOTE_ID", help="Note id, e.g. N1 (see rc note list).")
]
NoteFileOption = Annotated[
    Path | None, typer.Option("--file", help="Read the markdown from this file ('-' for standard input).")
]
NoteTextOption = Annotated[str | None, typer.Option("--text", help="The markdown itself.")]


def _note_text(settings: Settings, file: Path | None, text: str | None) -> str:
    if (file is None) == (text is None):
        _fail(settings, "give the note with exactly one of --file or --text", EXIT_BAD_INPUT)
    if file is not None:
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            _fail(settings, f"cannot read --file {str(file)!r}: {error}", EXIT_BAD_INPUT)
    assert text is not None
    if not text.strip():
        _fail(settings, "the note is empty", EXIT_BAD_INPUT)
    size = len(text.encode())
    if size > MAX_NOTE_BYTES:
        _fail(
            settings,
            f"the note is {size} bytes; a note may have at most {MAX_NOTE_BYTES} bytes (64 KiB)",
            EXIT_BAD_INPUT,
        )
    return text


def _check_note_id(settings: Settings, note_id: str) -> str:
    if not _NOTE_ID.match(note_id):
        _fail(
            settings,
            f"invalid note id {note_id!r}: expected N followed by a number (e.g. N1)",
            EXIT_BAD_INPUT,
        )
    return note_id


def _show_note(settings: Settings, result: AdminResult | None, verb: str) -> None:
    """After a note change: the release's notes (JSON: the release, as ``rc release show``)."""
    if settings.json or not isinstance(result, ReleaseResult):
        _show_result(settings, result, verb)
        return
    console = _console()
    console.print(render.release_summary(verb, result.release), soft_wrap=True)
    if result.events:
        console.print(result.events[0].reason, soft_wrap=True)


@note_app.command("add")
def note_add(
    ctx: typer.Context,
    release_id: NoteReleaseArgument,
    study: Annotated[
        str | None, typer.Option("--study", help="The study it is about (one of the release's).")
    ] = None,
    file: NoteFileOption = None,
    text: NoteTextOption = None,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Add a markdown note to a release, or to one of its studies (at most 64 KiB)."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    body = _note_text(settings, file, text)
    operation = _build(settings, lambda: AddNote(release_id=release_id, study=study, text=body))
    _show_note(settings, _request(settings, operation), "noted")


@note_app.command("list")
def note_list(
    ctx: typer.Context,
    release_id: NoteReleaseArgument,
    study: Annotated[str | None, typer.Option("--study", help="Only notes on this study.")] = None,
    since: SinceOption = None,
    limit: LimitOption = 50,
    cursor: CursorOption = None,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """List a release's notes, newest first."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    moment = _since(settings, since)
    operation = _build(
        settings,
        lambda: ListNotes(release_id=release_id, study=study, since=moment, limit=limit, cursor=cursor),
    )
    _show_result(settings, _request(settings, operation))


@note_app.command("edit")
def note_edit(
    ctx: typer.Context,
    release_id: NoteReleaseArgument,
    note_id: NoteIdArgument,
    file: NoteFileOption = None,
    text: NoteTextOption = None,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Replace the text of a note."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    _check_note_id(settings, note_id)
    body = _note_text(settings, file, text)
    operation = _build(settings, lambda: EditNote(release_id=release_id, note_id=note_id, text=body))
    _show_note(settings, _request(settings, operation), "noted")


@note_app.command("remove")
def note_remove(
    ctx: typer.Context,
    release_id: NoteReleaseArgument,
    note_id: NoteIdArgument,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Remove a note (its id is not reused)."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    _check_release_id(settings, release_id)
    _check_note_id(settings, note_id)
    operation = _build(settings, lambda: RemoveNote(release_id=release_id, note_id=note_id))
    _show_note(settings, _request(settings, operation), "noted")


# ---------------------------------------------------------------------- study commands


@study_app.command("list")
def study_list(
    ctx: typer.Context,
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
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """Every study: its latest release (id, name, state), last published version and when it was published.
    Newest first: the study whose latest release is newest comes first."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    moment = _since(settings, since)
    operation = _build(
        settings, lambda: ListStudies(study=study, state=state, since=moment, limit=limit, cursor=cursor)
    )
    _show_result(settings, _request(settings, operation))


@study_app.command("show")
def study_show(
    ctx: typer.Context,
    study: Annotated[str, typer.Argument(metavar="STUDY", help="Study id, e.g. SD_ABCDEFGH.")],
    state: Annotated[
        ReleaseState | None, typer.Option("--state", help="Only list releases in this state.")
    ] = None,
    since: SinceOption = None,
    limit: LimitOption = 20,
    cursor: CursorOption = None,
    amqp_url: UrlOption = None,
    namespace: NamespaceOption = None,
    timeout: TimeoutOption = None,
    json_output: JsonOption = False,
) -> None:
    """One study: its latest release, last published version and when, and its releases newest first."""
    settings = _settings(ctx, amqp_url, namespace, timeout, json_output)
    moment = _since(settings, since)
    operation = _build(
        settings, lambda: ShowStudy(study=study, state=state, since=moment, limit=limit, cursor=cursor)
    )
    _show_result(settings, _request(settings, operation))


# ---------------------------------------------------------------------- entry point


def main() -> None:
    # The AMQP libraries log connection failures through logging's last-resort handler; the command reports
    # them itself, in one line and without credentials.
    logging.getLogger().addHandler(logging.NullHandler())
    app()


if __name__ == "__main__":
    main()
