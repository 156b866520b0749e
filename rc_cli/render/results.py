"""From a result's type to its rendering: one entry per kind of :class:`~schemas.messages.AdminResult`.

``result_json`` gives the ``--json`` document; ``result_view`` the parts to print for people, either the
full rendering or, after an action (``verb``), its one-line summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType

from rc_cli.render import data
from rc_cli.render.history import event_page, note_page, study_details, study_page
from rc_cli.render.releases import release_details, release_page, release_summary, services_table
from rc_cli.render.safe import plain
from schemas.messages import (
    AdminResult,
    EventPage,
    NotePage,
    ReleasePage,
    ReleaseResult,
    ServiceList,
    StudyPage,
    StudyResult,
)


@dataclass(frozen=True)
class Part:
    """Something to print, never a markup string; ``soft_wrap`` for lines that must not be folded."""

    renderable: RenderableType
    soft_wrap: bool = False


@dataclass(frozen=True)
class Renderer:
    #: The ``--json`` document.
    json: Callable[[Any], dict[str, Any]]
    #: What to print for people, given the verb of the action that led to it (``None`` for a query).
    view: Callable[[Any, str | None], list[Part]]


def _full(render: Callable[[Any], RenderableType]) -> Callable[[Any, str | None], list[Part]]:
    """The full rendering, whatever the verb."""
    return lambda result, verb: [Part(render(result))]


def _release_view(result: ReleaseResult, verb: str | None) -> list[Part]:
    if verb is None:
        return [Part(release_details(result))]
    return [Part(plain(release_summary(verb, result.release)), soft_wrap=True)]


def _service_view(result: ServiceList, verb: str | None) -> list[Part]:
    heading = [] if verb is None else [Part(plain(verb), soft_wrap=True)]
    return [*heading, Part(services_table(result.services))]


RENDERERS: dict[type[Any], Renderer] = {
    ReleaseResult: Renderer(data.release_result_json, _release_view),
    ReleasePage: Renderer(data.release_page_json, _full(release_page)),
    ServiceList: Renderer(data.service_list_json, _service_view),
    EventPage: Renderer(data.event_page_json, _full(event_page)),
    NotePage: Renderer(data.note_page_json, _full(note_page)),
    StudyPage: Renderer(data.study_page_json, _full(study_page)),
    StudyResult: Renderer(data.study_result_json, _full(study_details)),
}


def result_json(result: AdminResult | None) -> dict[str, Any]:
    """The ``--json`` document of a result; ``{"ok": true}`` for an action that answers nothing."""
    renderer = RENDERERS.get(type(result))
    return {"ok": True} if renderer is None else renderer.json(result)


def result_view(result: AdminResult | None, verb: str | None = None) -> list[Part]:
    """What to print for people; the verb alone (or ``ok``) for an action that answers nothing."""
    renderer = RENDERERS.get(type(result))
    if renderer is None:
        return [Part(plain(verb or "ok"), soft_wrap=True)]
    return renderer.view(result, verb)
