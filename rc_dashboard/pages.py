"""The pages: releases, a release, services, studies, and the fragments a release page reloads live."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from rc_dashboard.context import FEED, GATEWAY, HUB, SETTINGS, render, render_fragment
from rc_dashboard.gateway import Refused
from rc_dashboard.views import available_actions
from schemas._base import RELEASE_ID_PATTERN
from schemas.documents import ReleaseView, ServiceRecord
from schemas.enums import ReleaseState
from schemas.messages import EventPage, ListEvents, ListReleases, ListStudies, ReleaseResult
from schemas.topology import Topology

RELEASE_ID = re.compile(RELEASE_ID_PATTERN)
#: How many of the newest releases the services page looks through for each service's last releases.
RECENT_RELEASES = 200
RECENT_PER_SERVICE = 5


class PageError(Exception):
    """A page that cannot be shown: ``status`` and a one-line ``message`` for the error page."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def not_found(message: str) -> PageError:
    return PageError(404, "Not found", message)


def bad_request(message: str) -> PageError:
    return PageError(400, "Bad request", message)


def describe_invalid(error: ValidationError) -> str:
    problems = [
        f"{'.'.join(str(part) for part in item['loc']) or 'input'}: {item['msg']}"
        for item in error.errors(include_url=False)[:3]
    ]
    return "invalid input: " + "; ".join(problems)


def release_id_of(request: web.Request) -> str:
    release_id = request.match_info["release_id"]
    if not RELEASE_ID.match(release_id):
        raise not_found(f"no release {release_id!r}: a release id is RE_ followed by 8 letters or digits")
    return release_id


def query_url(path: str, **params: str | None) -> str:
    kept = {key: value for key, value in params.items() if value}
    return f"{path}?{urllib.parse.urlencode(kept)}" if kept else path


async def show_release(request: web.Request, release_id: str) -> ReleaseView:
    """The release as the coordinator shows it; the 404 page if it does not know it."""
    try:
        result = await request.app[GATEWAY].release(release_id)
    except Refused as refusal:
        raise not_found(str(refusal)) from None
    watch(request, result.release)
    return result.release


def watch(request: web.Request, view: ReleaseView) -> None:
    """Hand a fresh view to the live hub (an ended release only if pages may still show it as open)."""
    hub = request.app[HUB]
    if not view.state.is_terminal or view.id in hub.known:
        hub.observe(view)


# ---------------------------------------------------------------------- releases


def _release_filters(request: web.Request) -> ListReleases:
    state = request.query.get("state", "").strip() or None
    study = request.query.get("study", "").strip() or None
    if state is not None and state not in {s.value for s in ReleaseState}:
        raise bad_request(f"unknown state {state!r}: one of {', '.join(s.value for s in ReleaseState)}")
    try:
        return ListReleases(
            state=ReleaseState(state) if state else None,
            study=study,
            limit=request.app[SETTINGS].page_size,
            cursor=request.query.get("cursor") or None,
        )
    except ValidationError as error:
        raise bad_request(describe_invalid(error)) from None


async def releases_page(request: web.Request) -> web.Response:
    operation = _release_filters(request)
    since = request.app[HUB].last_id
    try:
        page = await request.app[GATEWAY].releases(operation)
    except Refused as refusal:
        raise bad_request(str(refusal)) from None
    for view in page.releases:
        request.app[HUB].observe(view, complete=False)
    state = operation.state.value if operation.state else None
    return render(
        request,
        "releases.html",
        section="releases",
        since=since,
        releases=page.releases,
        state=state,
        study=operation.study,
        first_page=operation.cursor is None,
        first_url=query_url("/", state=state, study=operation.study),
        next_url=page.next_cursor
        and query_url("/", state=state, study=operation.study, cursor=page.next_cursor),
    )


# ---------------------------------------------------------------------- one release


async def _events_page(request: web.Request, release_id: str, cursor: str | None) -> EventPage:
    try:
        operation = ListEvents(
            release_id=release_id, limit=request.app[SETTINGS].page_size, cursor=cursor or None
        )
    except ValidationError as error:
        raise bad_request(describe_invalid(error)) from None
    return await request.app[GATEWAY].events(operation)


async def release_page(request: web.Request) -> web.Response:
    release_id = release_id_of(request)
    cursor = request.query.get("events_cursor")
    since = request.app[HUB].last_id
    shown, listed = await asyncio.gather(
        request.app[GATEWAY].release(release_id),
        _events_page(request, release_id, cursor),
        return_exceptions=True,
    )
    if isinstance(shown, Refused):
        raise not_found(str(shown))
    if isinstance(shown, BaseException):
        raise shown
    if isinstance(listed, Refused):
        raise bad_request(str(listed))
    if isinstance(listed, BaseException):
        raise listed
    assert isinstance(shown, ReleaseResult)
    assert isinstance(listed, EventPage)
    watch(request, shown.release)
    view = request.app[HUB].shown(shown.release)
    return render(request, "release.html", since=since, **_release_context(request, view, listed, cursor))


def _release_context(
    request: web.Request, view: ReleaseView, events: EventPage, cursor: str | None
) -> dict[str, Any]:
    return {
        "v": view,
        "actions": available_actions(view),
        "events": events.events,
        "events_first_page": not cursor,
        "events_next_url": events.next_cursor
        and query_url(f"/releases/{view.id}", events_cursor=events.next_cursor) + "#audit",
    }


async def actions_fragment(request: web.Request) -> web.Response:
    """The actions of a release for this visitor: reloaded by the page when the state or hold changes."""
    view = await show_release(request, release_id_of(request))
    return render_fragment(request, "_actions.html", v=view, actions=available_actions(view))


async def events_fragment(request: web.Request) -> web.Response:
    """The newest page of the audit trail: reloaded by the page when the release changes state."""
    release_id = release_id_of(request)
    view, events = await asyncio.gather(
        show_release(request, release_id), _events_page(request, release_id, None)
    )
    return render_fragment(request, "_events.html", **_release_context(request, view, events, None))


# ---------------------------------------------------------------------- services and studies


@dataclass(frozen=True)
class ServiceRow:
    record: ServiceRecord
    consumers: int | None
    health: str
    detail: str | None
    recent: list[ReleaseView]


def health_of(
    record: ServiceRecord, consumers: int | None, now: datetime, *, silent_after: float
) -> tuple[str, str | None]:
    """A one-word health (never told by colour alone) and what it rests on; a service is silent after
    ``silent_after`` seconds without a heartbeat (the coordinator's ``RC_HEARTBEAT_TIMEOUT``)."""
    if record.last_heartbeat_at is None:
        return "unknown", "never sent a heartbeat"
    silent = (now - record.last_heartbeat_at).total_seconds()
    if silent > silent_after:
        return "silent", f"no heartbeat for {silent:.0f}s"
    if consumers == 0:
        return "down", "no consumer on its queue"
    if not record.healthy:
        return "unhealthy", record.health_detail
    return "healthy", record.health_detail


async def services_page(request: web.Request) -> web.Response:
    gateway = request.app[GATEWAY]
    services, recent = await asyncio.gather(
        gateway.services(), gateway.releases(ListReleases(limit=RECENT_RELEASES))
    )
    topology = Topology(request.app[SETTINGS].namespace)
    queues = {record.name: topology.task_queue(record.name) for record in services.services}
    counts = await request.app[FEED].consumers(queues.values())
    now = datetime.now(UTC)
    silent_after = request.app[SETTINGS].heartbeat_timeout
    rows = []
    for record in sorted(services.services, key=lambda r: (not r.required, r.name)):
        consumers = counts.get(queues[record.name])
        health, detail = health_of(record, consumers, now, silent_after=silent_after)
        took_part = [v for v in recent.releases if record.name in v.tasks][:RECENT_PER_SERVICE]
        rows.append(ServiceRow(record, consumers, health, detail, took_part))
    return render(
        request,
        "services.html",
        section="services",
        rows=rows,
        scanned=len(recent.releases),
        silent_after=silent_after,
    )


async def studies_page(request: web.Request) -> web.Response:
    prefix = request.query.get("study", "").strip() or None
    cursor = request.query.get("cursor") or None
    try:
        operation = ListStudies(study=prefix, limit=request.app[SETTINGS].page_size, cursor=cursor)
    except ValidationError as error:
        raise bad_request(describe_invalid(error)) from None
    try:
        page = await request.app[GATEWAY].studies(operation)
    except Refused as refusal:
        raise bad_request(str(refusal)) from None
    return render(
        request,
        "studies.html",
        section="studies",
        studies=page.studies,
        study=prefix,
        first_page=cursor is None,
        first_url=query_url("/studies", study=prefix),
        next_url=page.next_cursor and query_url("/studies", study=prefix, cursor=page.next_cursor),
    )
