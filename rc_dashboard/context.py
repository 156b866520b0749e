"""What every handler shares: the application's parts (under typed keys) and how a page is rendered."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rc_dashboard.feed import BrokerFeed
from rc_dashboard.gateway import Gateway
from rc_dashboard.live import Hub
from rc_dashboard.security import Sessions
from rc_dashboard.settings import DashboardSettings
from rc_dashboard.templates import Renderer

SETTINGS = web.AppKey("settings", DashboardSettings)
GATEWAY = web.AppKey("gateway", Gateway)
HUB = web.AppKey("hub", Hub)
FEED = web.AppKey("feed", BrokerFeed)
RENDERER = web.AppKey("renderer", Renderer)
SESSIONS = web.AppKey("sessions", Sessions)


def _common(request: web.Request) -> dict[str, Any]:
    app = request.app
    session = app[SESSIONS].of(request)
    return {
        "read_only": app[SETTINGS].read_only,
        "session": session,
        "operator": app[SETTINGS].operator,
        "request_path": request.path_qs,
    }


def render(
    request: web.Request, template: str, *, status: int = 200, section: str | None = None, **context: Any
) -> web.Response:
    """A whole page; the session's flash messages are shown on it (and so forgotten)."""
    values = {**_common(request), **context}
    session = values["session"]
    flashes = session.take_flashes() if session is not None else []
    html = request.app[RENDERER].page(template, section=section, flashes=flashes, **values)
    return web.Response(text=html, content_type="text/html", status=status)


def render_fragment(request: web.Request, template: str, **context: Any) -> web.Response:
    """A piece of a page, for the page's script to put in place."""
    html = request.app[RENDERER].page(template, **{**_common(request), **context})
    return web.Response(text=html, content_type="text/html")
