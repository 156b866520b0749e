"""``rc --json``: every result as a JSON document. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from schemas.documents import AuditEvent, ReleaseView
from schemas.messages import (
    EventPage,
    NotePage,
    ReleasePage,
    ReleaseResult,
    ServiceList,
    StudyPage,
    StudyResult,
)


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
