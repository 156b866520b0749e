"""The cells every rendering shares: states in their colours, times, percentages, rows of data as text."""

from __future__ import annotations

from datetime import UTC, datetime

from rich import box
from rich.console import RenderableType
from rich.table import Column, Table
from rich.text import Text

from rc_cli.render.safe import plain
from schemas.enums import ReleaseState, TaskState

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


def simple_table(*columns: str | Column) -> Table:
    """A borderless table; a column given by its header alone never wraps (ids, states, times)."""
    headers = [Column(c, no_wrap=True) if isinstance(c, str) else c for c in columns]
    return Table(*headers, box=box.SIMPLE, show_edge=False, pad_edge=False)


def wrapping(header: str) -> Column:
    """A column of free text, wrapped to the terminal's width."""
    return Column(header)


def right(header: str) -> Column:
    """A column of numbers, aligned right."""
    return Column(header, justify="right", no_wrap=True)


def add_row(table: Table, *cells: RenderableType) -> None:
    """Add a row whose text cells are data: printed as written (never markup), controls made visible."""
    table.add_row(*(plain(cell) if isinstance(cell, str) else cell for cell in cells))


def styled_state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def percent(value: float) -> str:
    return f"{value:.0f}%"
