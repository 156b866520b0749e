"""``rc release watch`` and ``rc release events --follow``: a release followed live until it ends.

With ``--json``, one compact JSON line per change (``watch``: the release; ``--follow``: each event); else a
live view (``watch``) or one line per event. Notes about the following itself go to stderr as ``rc:`` lines.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import typer
from rich.live import Live

from rc_cli import render
from rc_cli.calls import run
from rc_cli.client import AdminClient
from rc_cli.events import follow_events
from rc_cli.options import Settings
from rc_cli.output import EXIT_INTERRUPTED, EXIT_REFUSED, console, note, print_json
from rc_cli.watch import OnUpdate, watch_release
from schemas.documents import AuditEvent, ReleaseView
from schemas.enums import ReleaseState
from schemas.messages import ListEvents


def _json_lines() -> OnUpdate:
    """Print the release as one JSON line each time it changes; notes go to stderr."""
    last: list[dict[str, Any]] = []

    def print_line(view: ReleaseView, remark: str | None) -> None:
        data = render.release_json(view)
        if not last or last[0] != data:
            last[:] = [data]
            print_json(data, compact=True)
        if remark:
            note(remark)

    return print_line


def _stopped(what: str) -> NoReturn:
    note(f"stopped {what} (the release goes on)")
    raise typer.Exit(EXIT_INTERRUPTED) from None


def watch(settings: Settings, release_id: str, interval: float) -> None:
    """Follow the release until it ends: exit 0 once published, 1 if canceled or failed, 130 on Ctrl-C."""
    out = console()

    async def work(client: AdminClient) -> ReleaseView:
        if settings.json:
            return await watch_release(client, release_id, _json_lines(), poll_interval=interval)
        with Live(console=out, auto_refresh=False, transient=False) as live:

            def redraw(view: ReleaseView, remark: str | None) -> None:
                live.update(render.watch_view(view, remark), refresh=True)

            return await watch_release(client, release_id, redraw, poll_interval=interval)

    try:
        final = run(settings, work)
    except KeyboardInterrupt:
        _stopped(f"watching {release_id}")
    if final.state is ReleaseState.PUBLISHED:
        if not settings.json:
            out.print(render.plain(f"{final.id} published as version {final.version}"), soft_wrap=True)
        return
    note(f"{final.id} ended {render.release_state_line(final)}")
    raise typer.Exit(EXIT_REFUSED)


def follow(settings: Settings, operation: ListEvents, interval: float) -> None:
    """Print the latest events oldest first, then each new one, until the release has ended."""

    def print_event(event: AuditEvent) -> None:
        if settings.json:
            print_json(event.model_dump(mode="json"), compact=True)
        else:
            sys.stdout.write(render.event_line(event) + "\n")
            sys.stdout.flush()

    async def work(client: AdminClient) -> ReleaseState:
        return await follow_events(client, operation, print_event, interval=interval, on_note=note)

    try:
        final = run(settings, work)
    except KeyboardInterrupt:
        _stopped(f"following {operation.release_id}")
    if not settings.json:
        note(f"{operation.release_id} is {final.value}")
