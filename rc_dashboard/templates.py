"""Jinja2 templates, autoescaped: every name, note, reason and message a page shows is text, never markup.

The only markup that does not come from a template is a note, rendered by
:func:`~rc_dashboard.notes.render_markdown` (sanitized). The same fragments make a page and its live
updates (:meth:`Renderer.parts`).
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from rc_dashboard import views
from rc_dashboard.notes import render_markdown
from schemas.documents import ReleaseView
from schemas.enums import ReleaseState

STATIC_FILES = ("dashboard.css", "live.js", "favicon.svg")


def _static_version() -> str:
    digest = hashlib.sha256()
    for name in STATIC_FILES:
        digest.update(resources.files("rc_dashboard").joinpath("static", name).read_bytes())
    return digest.hexdigest()[:12]


def _age(moment: datetime | None) -> str:
    return views.age(moment, datetime.now(UTC)) if moment is not None else "-"


class Renderer:
    def __init__(self, *, namespace: str) -> None:
        self.env = Environment(
            loader=PackageLoader("rc_dashboard", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        version = _static_version()
        self.env.globals.update(
            namespace=namespace,
            static=lambda name: f"/static/{name}?v={version}",
            age=_age,
            utc=views.utc,
            iso=lambda moment: moment.astimezone(UTC).isoformat() if moment else "",
            duration=views.duration,
            release_progress=views.release_progress,
            count_tasks=views.count_tasks,
            ordered_tasks=views.ordered_tasks,
            timelines=views.timelines,
            rc_commands=views.rc_commands,
            markdown=render_markdown,
            states=[state.value for state in ReleaseState],
            steps=views.STEPS,
        )
        self.env.filters["micros"] = views.micros

    def page(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render(**context)

    def parts(self, view: ReleaseView, before: ReleaseView | None = None) -> dict[str, str]:
        """The live fragments of a release, by element id: every one, or those that may differ from
        ``before`` (the view the pages show now; a task's row only if that task changed)."""
        render = self.page
        parts = {
            f"row-{view.id}": render("_row.html", v=view),
            f"head-{view.id}": render("_head.html", v=view),
        }
        if before is None or _timeline_inputs(view) != _timeline_inputs(before):
            parts[f"timeline-{view.id}"] = render("_timeline.html", v=view)
        for task in views.ordered_tasks(view):
            if before is None or before.tasks.get(task.service) != task:
                parts[f"task-{view.id}-{task.service}"] = render("_task.html", v=view, t=task)
        if before is None or before.notes != view.notes:
            parts[f"notes-{view.id}"] = render("_notes.html", v=view)
        return parts


def _timeline_inputs(view: ReleaseView) -> tuple[object, ...]:
    tasks = tuple((name, task.state, task.entered) for name, task in sorted(view.tasks.items()))
    return (view.updated_at, view.entered, tasks)
