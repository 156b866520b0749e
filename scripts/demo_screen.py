"""What the demo shows: each service's progress live (or one line per change when not on a terminal),
and at the end how long every step took."""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rc_cli import render
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState, TaskState


def span(start: datetime | None, end: datetime | None) -> str:
    """``end - start`` as ``1.2s``, or ``-`` when either is unknown."""
    if start is None or end is None:
        return "-"
    return f"{(end - start).total_seconds():.1f}s"


def final_table(view: ReleaseView) -> Table:
    """Per service and for the release: how long each step took, and where it ended."""
    table = Table(box=box.SIMPLE_HEAD, title=f"{view.id}  {view.name}", title_justify="left")
    table.add_column("service", no_wrap=True)
    for column in ("initialize", "process", "review", "publish", "total"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for task in render.ordered_tasks(view):
        at = task.entered.get
        begun = at(TaskState.WAITING, view.created_at)
        ended = at(TaskState.PUBLISHED) or (task.updated_at if task.state.is_final else None)
        table.add_row(
            task.service,
            span(begun, at(TaskState.INITIALIZED)),
            span(at(TaskState.RUNNING), at(TaskState.STAGED)),
            "",
            span(at(TaskState.PUBLISHING), at(TaskState.PUBLISHED)),
            span(begun, ended),
            render.styled_state(task.state.value),
        )
    was = view.entered.get
    table.add_section()
    table.add_row(
        Text("release", style="bold"),
        span(was(ReleaseState.INITIALIZING), was(ReleaseState.RUNNING)),
        span(was(ReleaseState.RUNNING), was(ReleaseState.STAGED)),
        span(was(ReleaseState.STAGED), was(ReleaseState.PUBLISHING)),
        span(was(ReleaseState.PUBLISHING), was(ReleaseState.PUBLISHED)),
        span(view.created_at, was(view.state) if view.state.is_terminal else None),
        render.styled_state(view.state.value),
    )
    return table


class Screen:
    """Live progress on a terminal; one line per change of a task's state or quarter of progress otherwise."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self._printed: dict[str, tuple[str, int]] = {}
        self._state: str | None = None
        self._note: str | None = None

    def __enter__(self) -> Screen:
        if self.console.is_terminal:
            self.live = Live(console=self.console, auto_refresh=False, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def show(self, view: ReleaseView, note: str | None) -> None:
        elapsed = (datetime.now(UTC) - view.created_at).total_seconds()
        if self.live is not None:
            footer = Text(f"{elapsed:5.1f}s" + (f"  {note}" if note else ""), style="dim")
            parts: list[RenderableType] = [render.watch_view(view), footer]
            self.live.update(Group(*parts), refresh=True)
            return
        if view.state.value != self._state:
            self._state = view.state.value
            self.console.print(f"{elapsed:5.1f}s  release {render.release_state_line(view)}", soft_wrap=True)
        for task in render.ordered_tasks(view):
            mark = (task.state.value, int(task.progress // 25))
            if self._printed.get(task.service) != mark:
                self._printed[task.service] = mark
                self.console.print(
                    f"{elapsed:5.1f}s    {task.service:<13} {task.state.value:<10} "
                    f"{render.percent(task.progress):>4}  {task.last_message or ''}",
                    soft_wrap=True,
                )
        if note and note != self._note:
            self.console.print(f"{elapsed:5.1f}s  {note}", soft_wrap=True)
        self._note = note
