"""Output of the ``rc`` command line: JSON documents and Rich renderables. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from schemas.documents import AuditEvent, Note, ReleaseBrief, ReleaseView, ServiceRecord, StudySummary, Task
from schemas.enums import ReleaseState, TaskState
from schemas.messages import (
    EventPage,
    NotePage,
    ReleasePage,
    ReleaseResult,
    ServiceList,
    StudyPage,
    StudyResult,
)

# ---------------------------------------------------------------------- JSON


def release_json(view: ReleaseView, events: Iterable[AuditEvent] = ()) -> dict[str, Any]:
    """A release as JSON: every ReleaseView field at the top level (``id``, ``state``, ``version``, ``tasks``,
    ...) plus ``events`` (the recent events the coordinator sent along, oldest first)."""
    data: dict[str, Any] = view.model_dump(mode="json")
    data["events"] = [event.model_dump(mode="json") for event in events]
    return data


def release_result_json(result: ReleaseResult) -> dict[str, Any]:
    return release_json(result.release, result.events)


def release_page_json(page: ReleasePage) -> dict[str, Any]:
    return {
        "releases": [release.model_dump(mode="json") for release in page.releases],
        "next_cursor": page.next_cursor,
    }


def service_list_json(services: ServiceList) -> dict[str, Any]:
    return {"services": [service.model_dump(mode="json") for service in services.services]}


def error_json(message: str) -> dict[str, Any]:
    return {"error": message}


# ---------------------------------------------------------------------- human output

STATE_STYLES: dict[str, str] = {
    ReleaseState.WAITING: "dim",
    ReleaseState.INITIALIZING: "cyan",
    ReleaseState.RUNNING: "cyan",
    ReleaseState.STAGED: "bold yellow",
    ReleaseState.PUBLISHING: "magenta",
    ReleaseState.PUBLISHED: "bold green",
    ReleaseState.CANCELING: "red",
    ReleaseState.CANCELED: "red",
    ReleaseState.FAILED: "bold red",
    TaskState.INITIALIZED: "cyan",
    TaskState.REJECTED: "bold red",
}


def when(moment: datetime | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM:SSZ`` (UTC), or ``-``."""
    if moment is None:
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + "Z"


def styled_state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def percent(value: float) -> str:
    return f"{value:.0f}%"


def release_state_line(view: ReleaseView) -> str:
    """``staged (held)``, ``failed: search-index did not answer``: the state with hold flag and reason."""
    text = view.state.value
    if view.held:
        text += " (held)"
    if view.state_reason:
        text += f": {view.state_reason}"
    return text


def version_line(view: ReleaseView) -> str:
    if view.final_version:
        return view.final_version
    return f"{view.tentative_version} (tentative)"


def releases_table(releases: Sequence[ReleaseView]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("state", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("held", no_wrap=True)
    table.add_column("created", no_wrap=True)
    for release in releases:
        table.add_row(
            release.id,
            release.name,
            styled_state(release.state.value),
            release.version,
            "yes" if release.held else "",
            when(release.created_at),
        )
    return table


def release_page(page: ReleasePage) -> RenderableType:
    if not page.releases:
        return Text("no releases")
    parts: list[RenderableType] = [releases_table(page.releases)]
    if page.next_cursor:
        parts.append(Text(f"more: --cursor {page.next_cursor}", style="dim"))
    return Group(*parts)


def ordered_tasks(view: ReleaseView) -> list[Task]:
    return [view.tasks[name] for name in sorted(view.tasks)]


def tasks_table(view: ReleaseView) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("service", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("progress", justify="right", no_wrap=True)
    table.add_column("last message")
    for task in ordered_tasks(view):
        table.add_row(
            task.service, styled_state(task.state.value), percent(task.progress), task.last_message or ""
        )
    return table


def events_table(events: Sequence[AuditEvent]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("at", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("actor", no_wrap=True)
    table.add_column("what")
    for event in events:
        what = event.reason
        if event.state_before is not None and event.state_after is not None:
            what = f"{event.state_before.value} -> {event.state_after.value}: {what}"
        table.add_row(when(event.at), event.kind.value, event.actor, what)
    return table


def release_header(view: ReleaseView) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("release", f"{view.id}  {view.name}")
    grid.add_row("state", Text(release_state_line(view), style=STATE_STYLES.get(view.state.value, "")))
    grid.add_row("version", version_line(view) + ("  major" if view.is_major else "  minor"))
    grid.add_row("studies", ", ".join(view.studies))
    if view.tags:
        grid.add_row("tags", ", ".join(view.tags))
    grid.add_row("author", view.author)
    if view.description:
        grid.add_row("description", view.description)
    if view.rerun_of:
        grid.add_row("re-run of", view.rerun_of)
    grid.add_row("created", when(view.created_at))
    grid.add_row("updated", when(view.updated_at))
    return grid


def release_details(result: ReleaseResult) -> RenderableType:
    parts: list[RenderableType] = [release_header(result.release), Text("")]
    if result.release.tasks:
        parts.append(tasks_table(result.release))
    else:
        parts.append(Text("no tasks (no service was required when the release was created)", style="dim"))
    if result.release.notes:
        parts += [Text(""), Text("notes", style="bold"), notes_view(result.release.notes)]
    if result.events:
        parts += [Text(""), Text("recent events", style="bold"), events_table(result.events)]
    return Group(*parts)


def release_summary(verb: str, view: ReleaseView) -> str:
    """One line after an action: ``created RE_0000ABCD 'June' (waiting, 1.2.4 (tentative))``."""
    return f"{verb} {view.id} {view.name!r} ({release_state_line(view)}, version {version_line(view)})"


def services_table(services: Sequence[ServiceRecord]) -> RenderableType:
    if not services:
        return Text("no services registered")
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("service", no_wrap=True)
    table.add_column("required", no_wrap=True)
    table.add_column("healthy", no_wrap=True)
    table.add_column("last heartbeat", no_wrap=True)
    table.add_column("instances", justify="right", no_wrap=True)
    table.add_column("sdk", no_wrap=True)
    for service in sorted(services, key=lambda s: s.name):
        health = Text("yes", style="green") if service.healthy else Text("no", style="bold red")
        if not service.healthy and service.health_detail:
            health.append(f" ({service.health_detail})")
        table.add_row(
            service.name,
            "yes" if service.required else "",
            health,
            when(service.last_heartbeat_at),
            str(len(service.instances)),
            service.sdk_version or "-",
        )
    return table


def watch_view(view: ReleaseView, note: str | None = None) -> RenderableType:
    """What ``rc release watch`` shows: a header line and one progress bar per task."""
    header = Text.assemble(
        (f"{view.id} ", "bold"),
        f"{view.name}  ",
        (release_state_line(view), STATE_STYLES.get(view.state.value, "")),
        f"  version {version_line(view)}",
    )
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("service", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("progress", no_wrap=True)
    table.add_column("", justify="right", no_wrap=True)
    table.add_column("last message")
    for task in ordered_tasks(view):
        table.add_row(
            task.service,
            styled_state(task.state.value),
            ProgressBar(total=100, completed=task.progress, width=30),
            percent(task.progress),
            task.last_message or "",
        )
    parts: list[RenderableType] = [header, table]
    if note:
        parts.append(Text(note, style="yellow"))
    return Group(*parts)


# ---------------------------------------------------------------------- notes, events, studies


def event_page_json(page: EventPage) -> dict[str, Any]:
    return {
        "release_id": page.release_id,
        "release_state": page.release_state.value,
        "events": [event.model_dump(mode="json") for event in page.events],
        "next_cursor": page.next_cursor,
    }


def note_page_json(page: NotePage) -> dict[str, Any]:
    return {
        "release_id": page.release_id,
        "notes": [note.model_dump(mode="json") for note in page.notes],
        "next_cursor": page.next_cursor,
    }


def study_page_json(page: StudyPage) -> dict[str, Any]:
    return {
        "studies": [study.model_dump(mode="json") for study in page.studies],
        "next_cursor": page.next_cursor,
    }


def study_result_json(result: StudyResult) -> dict[str, Any]:
    """A study as JSON: the summary's fields at the top level, plus its ``releases`` and ``next_cursor``."""
    data: dict[str, Any] = result.study.model_dump(mode="json")
    data["releases"] = [release.model_dump(mode="json") for release in result.releases]
    data["next_cursor"] = result.next_cursor
    return data


def _more(cursor: str | None) -> list[RenderableType]:
    return [Text(f"more: --cursor {cursor}", style="dim")] if cursor else []


def event_page(page: EventPage) -> RenderableType:
    if not page.events:
        return Text(f"no events for {page.release_id}")
    return Group(events_table(page.events), *_more(page.next_cursor))


def event_line(event: AuditEvent) -> str:
    """One event on one line (``rc release events --follow``)."""
    what = event.reason
    if event.state_before is not None and event.state_after is not None:
        what = f"{event.state_before.value} -> {event.state_after.value}: {what}"
    return f"{when(event.at)}  {event.kind.value:<13} {event.actor}  {what}"


def note_heading(note: Note) -> str:
    about = f" on {note.study}" if note.study else ""
    edited = f", edited {when(note.updated_at)}" if note.updated_at != note.created_at else ""
    return f"{note.id}{about} by {note.author}, {when(note.created_at)}{edited}"


def notes_view(notes: Sequence[Note]) -> RenderableType:
    """Notes as headed markdown blocks."""
    parts: list[RenderableType] = []
    for note in notes:
        if parts:
            parts.append(Text(""))
        parts += [Text(note_heading(note), style="bold"), Markdown(note.text)]
    return Group(*parts)


def note_page(page: NotePage) -> RenderableType:
    if not page.notes:
        return Text(f"no notes on {page.release_id}")
    return Group(notes_view(page.notes), *_more(page.next_cursor))


def _brief_cells(brief: ReleaseBrief | None) -> tuple[str, str, Text | str]:
    if brief is None:
        return "-", "-", "-"
    return brief.id, brief.name, styled_state(brief.state.value)


def studies_table(studies: Sequence[StudySummary]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("study", no_wrap=True)
    table.add_column("releases", justify="right", no_wrap=True)
    table.add_column("latest release", no_wrap=True)
    table.add_column("name")
    table.add_column("state", no_wrap=True)
    table.add_column("published", no_wrap=True)
    table.add_column("published at", no_wrap=True)
    for study in studies:
        published = study.last_published
        table.add_row(
            study.study,
            str(study.release_count),
            *_brief_cells(study.latest),
            published.version if published else "-",
            when(published.published_at) if published else "-",
        )
    return table


def study_page(page: StudyPage) -> RenderableType:
    if not page.studies:
        return Text("no studies")
    return Group(studies_table(page.studies), *_more(page.next_cursor))


def briefs_table(releases: Sequence[ReleaseBrief]) -> Table:
    table = Table(box=box.SIMPLE, show_edge=False, pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("name")
    table.add_column("state", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("published", no_wrap=True)
    for release in releases:
        table.add_row(
            release.id,
            release.name,
            styled_state(release.state.value),
            release.version,
            when(release.created_at),
            when(release.published_at),
        )
    return table


def study_details(result: StudyResult) -> RenderableType:
    study = result.study
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    grid.add_row("study", study.study)
    latest = study.latest
    grid.add_row(
        "latest release",
        Text.assemble(
            f"{latest.id}  {latest.name}  ", styled_state(latest.state.value), f"  {latest.version}"
        ),
    )
    published = study.last_published
    if published is None:
        grid.add_row("last published", "never")
    else:
        grid.add_row(
            "last published",
            f"{published.version} ({published.id} {published.name}) at {when(published.published_at)}",
        )
    grid.add_row("releases", str(study.release_count))
    parts: list[RenderableType] = [grid, Text("")]
    if result.releases:
        parts.append(briefs_table(result.releases))
    return Group(*parts, *_more(result.next_cursor))
