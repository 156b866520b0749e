"""Releases and services for people: tables, the release's details, the summary line and the watch view."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rc_cli.render.cells import (
    STATE_STYLES,
    add_row,
    percent,
    right,
    simple_table,
    styled_state,
    when,
    wrapping,
)
from rc_cli.render.history import events_table, more, notes_view
from rc_cli.render.safe import plain, visible
from schemas.documents import ReleaseView, ServiceRecord, Task
from schemas.messages import ReleasePage, ReleaseResult


def release_state_line(view: ReleaseView) -> str:
    """``staged (held)``, ``failed: search-index did not answer``: the state with hold flag and reason."""
    text = view.state.value
    if view.held:
        text += " (held)"
    if view.state_reason:
        text += f": {view.state_reason}"
    return visible(text)


def version_line(view: ReleaseView) -> str:
    if view.final_version:
        return visible(view.final_version)
    return visible(f"{view.tentative_version} (tentative)")


def releases_table(releases: Sequence[ReleaseView]) -> Table:
    table = simple_table("id", wrapping("name"), "state", "version", "held", "created")
    for release in releases:
        add_row(
            table,
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
    return Group(releases_table(page.releases), *more(page.next_cursor))


def ordered_tasks(view: ReleaseView) -> list[Task]:
    return [view.tasks[name] for name in sorted(view.tasks)]


def tasks_table(view: ReleaseView) -> Table:
    table = simple_table("service", "state", right("progress"), wrapping("last message"))
    for task in ordered_tasks(view):
        add_row(
            table,
            task.service,
            styled_state(task.state.value),
            percent(task.progress),
            task.last_message or "",
        )
    return table


def release_header(view: ReleaseView) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    add_row(grid, "release", f"{view.id}  {view.name}")
    add_row(grid, "state", Text(release_state_line(view), style=STATE_STYLES.get(view.state.value, "")))
    add_row(grid, "version", version_line(view) + ("  major" if view.is_major else "  minor"))
    add_row(grid, "studies", ", ".join(view.studies))
    if view.tags:
        add_row(grid, "tags", ", ".join(view.tags))
    add_row(grid, "author", view.author)
    if view.description:
        add_row(grid, "description", view.description)
    if view.rerun_of:
        add_row(grid, "re-run of", view.rerun_of)
    add_row(grid, "created", when(view.created_at))
    add_row(grid, "updated", when(view.updated_at))
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
    """One line after an action: ``created RE_0000ABCD 'June' (waiting, 1.2.4 (tentative))``; print it as
    text (:func:`~rc_cli.render.safe.plain`), not markup."""
    line = f"{verb} {view.id} {view.name!r} ({release_state_line(view)}, version {version_line(view)})"
    return visible(line)


def services_table(services: Sequence[ServiceRecord]) -> RenderableType:
    if not services:
        return Text("no services registered")
    table = simple_table("service", "required", "healthy", "last heartbeat", right("instances"), "sdk")
    for service in sorted(services, key=lambda s: s.name):
        health = Text("yes", style="green") if service.healthy else Text("no", style="bold red")
        if not service.healthy and service.health_detail:
            health.append(f" ({visible(service.health_detail)})")
        add_row(
            table,
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
        (visible(f"{view.id} "), "bold"),
        visible(f"{view.name}  "),
        (release_state_line(view), STATE_STYLES.get(view.state.value, "")),
        f"  version {version_line(view)}",
    )
    table = simple_table("service", "state", "progress", right(""), wrapping("last message"))
    for task in ordered_tasks(view):
        add_row(
            table,
            task.service,
            styled_state(task.state.value),
            ProgressBar(total=100, completed=task.progress, width=30),
            percent(task.progress),
            task.last_message or "",
        )
    parts: list[RenderableType] = [header, table]
    if note:
        parts.append(plain(note, style="yellow"))
    return Group(*parts)
