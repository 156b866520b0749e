"""The aiohttp application: routes, error pages, static files, the live stream, and serving it.

Routes::

    GET  /                                 releases, newest first (?state= ?study= ?cursor=)
    GET  /releases/{id}                    one release (?events_cursor= pages its audit trail)
    GET  /releases/{id}/fragments/actions  its actions for this visitor (reloaded live)
    GET  /releases/{id}/fragments/events   the newest page of its audit trail (reloaded live)
    GET  /releases/{id}/{action}           confirm hold, unhold, publish or cancel (with the token)
    POST /releases/{id}/{action}           do it
    GET  /services, /studies               the registry; the studies across releases
    GET  /live[?release=ID]                server-sent events: updates of every release, or of one
    GET  /login; POST /login, /logout      signing in with the operator token
    GET  /healthz                          200 while the broker feed is up, else 503 (JSON)
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

import structlog
from aiohttp import web

from rc_dashboard import actions, pages
from rc_dashboard.context import FEED, GATEWAY, HUB, RENDERER, SESSIONS, SETTINGS, render
from rc_dashboard.feed import BrokerFeed
from rc_dashboard.gateway import Gateway, Unavailable
from rc_dashboard.live import Hub
from rc_dashboard.security import Forbidden, Sessions, add_security_headers
from rc_dashboard.settings import DashboardSettings
from rc_dashboard.templates import STATIC_FILES, Renderer

log = structlog.get_logger("rc_dashboard")

#: Seconds between keep-alive comments on an idle live stream (also how soon a closed page is noticed).
KEEPALIVE_SECONDS = 15.0
#: Live streams served at once; more are answered 503 (the page's script tries again a little later).
MAX_LIVE_PAGES = 2000

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    try:
        return render(request, "error.html", status=status, title=title, message=message)
    except Exception:  # the error page itself failed: plain text, still no traceback
        log.exception("dashboard.error_page_failed")
        return web.Response(text=f"{title}: {message}\n", status=status)


@web.middleware
async def error_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as a page with one line of explanation; never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return error_page(request, error.status, error.reason, "There is no such page here.")
    except pages.PageError as error:
        return error_page(request, error.status, error.title, error.message)
    except Forbidden as error:
        return error_page(request, 403, "Forbidden", str(error))
    except Unavailable as error:
        return error_page(request, 503, "Coordinator unavailable", str(error))
    except Exception:
        log.exception("dashboard.page_failed", path=request.path)
        return error_page(request, 500, "Internal error", "The dashboard failed on this page; see its log.")


async def static_file(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC_FILES:
        raise web.HTTPNotFound()
    body = resources.files("rc_dashboard").joinpath("static", name).read_bytes()
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.Response(
        body=body,
        content_type=kind,
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


async def live(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the broker status, then updates (those missed since ``Last-Event-ID`` first)."""
    release_id = request.query.get("release") or None
    if release_id is not None and not pages.RELEASE_ID.match(release_id):
        raise pages.bad_request(f"invalid release id {release_id!r}")
    hub = request.app[HUB]
    if hub.subscribers >= MAX_LIVE_PAGES:
        raise web.HTTPServiceUnavailable(reason="too many live pages open")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"})
    await response.prepare(request)
    subscription = hub.subscribe(
        release_id, request.headers.get("Last-Event-ID") or request.query.get("since")
    )
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(subscription.queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                chunk = b": keep-alive\n\n"
            if chunk is None:
                break
            chunks = [chunk]
            while not subscription.queue.empty() and (more := subscription.queue.get_nowait()) is not None:
                chunks.append(more)
            await response.write(b"".join(chunks))
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        hub.unsubscribe(subscription)
    return response


async def healthz(request: web.Request) -> web.Response:
    status = request.app[HUB].status
    body = {"broker": status.connected, "status": status.text, "pages": request.app[HUB].subscribers}
    return web.json_response(body, status=200 if status.connected else 503)


async def _run_live_parts(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the broker feed and the hub's poll run as long as the application."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(app[FEED].run(stop)), asyncio.create_task(app[HUB].run(stop))]
    yield
    stop.set()
    await app[HUB].close()
    await asyncio.gather(*tasks, return_exceptions=True)
    await app[GATEWAY].close()


async def _end_streams(app: web.Application) -> None:
    await app[HUB].close()


def create_app(settings: DashboardSettings) -> web.Application:
    app = web.Application(middlewares=[error_pages], client_max_size=256 * 1024)
    renderer = Renderer(namespace=settings.namespace)
    gateway = Gateway(
        settings.amqp_url, settings.namespace, timeout=settings.timeout, operator=settings.operator
    )
    hub = Hub(gateway, renderer.parts, poll_seconds=settings.poll_seconds)
    app[SETTINGS] = settings
    app[RENDERER] = renderer
    app[GATEWAY] = gateway
    app[HUB] = hub
    app[FEED] = BrokerFeed(
        settings.amqp_url,
        settings.namespace,
        hub,
        reconnect_seconds=settings.reconnect_seconds,
        trusted_users=settings.trusted_users,
    )
    app[SESSIONS] = Sessions(settings.token, public_origin=settings.public_origin)
    app.on_response_prepare.append(add_security_headers)
    app.on_shutdown.append(_end_streams)
    app.cleanup_ctx.append(_run_live_parts)
    app.add_routes(
        [
            web.get("/", pages.releases_page),
            web.get("/releases", pages.releases_page),
            web.get("/releases/{release_id}", pages.release_page),
            web.get("/releases/{release_id}/fragments/actions", pages.actions_fragment),
            web.get("/releases/{release_id}/fragments/events", pages.events_fragment),
            web.get("/releases/{release_id}/{action}", actions.confirm_page),
            web.post("/releases/{release_id}/{action}", actions.do_action),
            web.get("/services", pages.services_page),
            web.get("/studies", pages.studies_page),
            web.get("/live", live),
            web.get("/login", actions.login_page),
            web.post("/login", actions.login),
            web.post("/logout", actions.logout),
            web.get("/healthz", healthz),
            web.get("/static/{name}", static_file),
        ]
    )
    return app


async def serve(
    settings: DashboardSettings, stop: asyncio.Event, *, on_ready: Callable[[int], None] | None = None
) -> None:
    """Serve until ``stop`` is set; ``on_ready(port)`` once listening (useful with port 0)."""
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        host, port = settings.listen_address
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = port
        with contextlib.suppress(Exception):
            bound = runner.addresses[0][1]
        log.info(
            "dashboard.serving",
            url=f"http://{host}:{bound}/",
            mode="read-only" if settings.read_only else "operator token set",
            public_origin=settings.public_origin,
            operator=settings.operator,
        )
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
    finally:
        await runner.cleanup()
