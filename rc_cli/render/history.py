"""The audit trail, notes and studies for people."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from rc_cli.render.cells import add_row, right, simple_table, styled_state, when, wrapping
from rc_cli.render.safe import plain, visible, visible_block
from schemas.documents import AuditEvent, Note, ReleaseBrief, StudySummary
from schemas.messages import EventPage, NotePage, StudyPage, StudyResult


def actor(event: AuditEvent) -> str:
    """Who caused an event: the broker user, and beside it the name the operator gave (``ops (alice)``)."""
    if event.label and event.label != event.actor:
        return f"{event.actor} ({event.label})"
    return event.actor


def _what(event: AuditEvent) -> str:
    if event.state_before is not None and event.state_after is not None:
        return f"{event.state_before.value} -> {event.state_after.value}: {event.reason}"
    return event.reason


def events_table(events: Sequence[AuditEvent]) -> Table:
    table = simple_table("at", "kind", "actor", wrapping("what"))
    for event in events:
        add_row(table, when(event.at), event.kind.value, actor(event), _what(event))
    return table


def more(cursor: str | None) -> list[RenderableType]:
    """The hint to the next page, if there is one."""
    return [plain(f"more: --cursor {cursor}", style="dim")] if cursor else []


def event_page(page: EventPage) -> RenderableType:
    if not page.events:
        return plain(f"no events for {page.release_id}")
    return Group(events_table(page.events), *more(page.next_cursor))


def event_line(event: AuditEvent) -> str:
    """One event on one line (``rc release events --follow``), its controls made visible."""
    return visible(f"{when(event.at)}  {event.kind.value:<13} {actor(event)}  {_what(event)}")


def note_heading(note: Note) -> str:
    about = f" on {note.study}" if note.study else ""
    edited = f", edited {when(note.updated_at)}" if note.updated_at != note.created_at else ""
    return visible(f"{note.id}{about} by {note.author}, {when(note.created_at)}{edited}")


def notes_view(notes: Sequence[Note]) -> RenderableType:
    """Notes as headed markdown blocks."""
    # Imported here: markdown-it would cost every other command 0.2 s of start-up.
    from rich.markdown import Markdown

    parts: list[RenderableType] = []
    for note in notes:
        if parts:
            parts.append(Text(""))
        parts += [Text(note_heading(note), style="bold"), Markdown(visible_block(note.text))]
    return Group(*parts)


def note_page(page: NotePage) -> RenderableType:
    if not page.notes:
        return plain(f"no notes on {page.release_id}")
    return Group(notes_view(page.notes), *more(page.next_cursor))


def _brief_cells(brief: ReleaseBrief | None) -> tuple[str, str, Text | str]:
    if brief is None:
        return "-", "-", "-"
    return brief.id, brief.name, styled_state(brief.state.value)


def studies_table(studies: Sequence[StudySummary]) -> Table:
    table = simple_table(
        "study", right("releases"), "latest release", wrapping("name"), "state", "published", "published at"
    )
    for study in studies:
        published = study.last_published
        add_row(
            table,
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
    return Group(studies_table(page.studies), *more(page.next_cursor))


def briefs_table(releases: Sequence[ReleaseBrief]) -> Table:
    table = simple_table("id", wrapping("name"), "state", "version", "created", "published")
    for release in releases:
        add_row(
            table,
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
    add_row(grid, "study", study.study)
    latest = study.latest
    add_row(
        grid,
        "latest release",
        Text.assemble(
            visible(f"{latest.id}  {latest.name}  "),
            styled_state(latest.state.value),
            visible(f"  {latest.version}"),
        ),
    )
    published = study.last_published
    if published is None:
        add_row(grid, "last published", "never")
    else:
        add_row(
            grid,
            "last published",
            f"{published.version} ({published.id} {published.name}) at {when(published.published_at)}",
        )
    add_row(grid, "releases", str(study.release_count))
    parts: list[RenderableType] = [grid, Text("")]
    if result.releases:
        parts.append(briefs_table(result.releases))
    return Group(*parts, *more(result.next_cursor))
