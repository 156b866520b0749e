"""The callback endpoints an HTTP task service calls, as the original coordinator served them.

* ``PATCH /tasks/{task_id}`` with ``{state, progress}``: the service reports on a task.
  200 with the task; 400 for a body the bridge cannot read (and if it names an unknown state, the
  waiting step also fails with that text); 404 for a task the bridge does not know.
* ``GET /releases/{release_id}``: ``{id, kf_id, name, description, version, studies, tags, is_major,
  state}``; 404 for a release the bridge does not know.
* ``GET /status``: the bridge's own health (``{name, service}``), never authenticated.

With a callback token configured, the first two need ``Authorization: Bearer <token>`` (401 otherwise).
A body that cannot be read (not JSON, nested too deep, not valid in its charset, an unknown charset, or
not sent in time) is answered 400 or 408, and anything unexpected 500, always as a one-line JSON error.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from rc_http_bridge.connections import Connections
from rc_http_bridge.protocol import ProtocolError, UnknownState, clip, parse_task_body
from rc_http_bridge.tracker import TrackedTask, Tracker

log = structlog.get_logger("rc_http_bridge")

Clock = Callable[[], float]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The largest callback body accepted (the protocol's are a few dozen bytes).
MAX_CALLBACK_BYTES = 64 * 1024


def task_view(service: str, task: TrackedTask) -> dict[str, Any]:
    """A task as the protocol shows it."""
    status = task.status
    return {
        "name": service,
        "kf_id": task.task_id,
        "release_id": task.release.id,
        "state": status.state.value if status else None,
        "progress": status.progress if status else None,
    }


def release_view(task: TrackedTask) -> dict[str, Any]:
    """A release as the protocol shows it (``state`` as far as this bridge knows)."""
    release = task.release
    return {
        "id": release.id,
        "kf_id": release.id,
        "name": release.name,
        "description": release.description,
        "version": release.version,
        "studies": list(release.studies),
        "tags": list(release.tags),
        "is_major": release.is_major,
        "state": task.phase,
    }


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>`` (compared in constant time)."""
    if header is None:
        return False
    scheme, _, given = header.strip().partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


class Unreadable(Exception):
    """A callback's body could not be read; ``status`` is the answer (400, or 408 when too slow)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


async def read_body(request: web.Request, seconds: float) -> str:
    """The request's body as text, decoded strictly with its charset (default UTF-8) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            raw = await request.read()
    except TimeoutError:
        raise Unreadable(408, f"the body did not arrive within {seconds:g} s") from None
    charset = request.charset or "utf-8"
    try:
        return raw.decode(charset)
    except LookupError:
        raise Unreadable(400, f"unknown charset {clip(charset, 40)!r}") from None
    except ValueError:
        raise Unreadable(400, f"the body is not valid {clip(charset, 40)}") from None


@web.middleware
async def one_line_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Anything unexpected is a 500 with a one-line JSON error (logged here), never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as error:
        log.error("callback.error", method=request.method, path=request.path, error=repr(error))
        return web.json_response({"error": "internal error"}, status=500)


def error(status: int, text: str) -> web.Response:
    return web.json_response({"error": text}, status=status)


def token_check(callback_token: str | None) -> Middleware:
    """A middleware answering 401 to a request without ``Bearer <callback_token>`` (but ``GET /status``)."""

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        checked = callback_token is not None and request.path != "/status"
        if checked and not authorized(request.headers.get("Authorization"), callback_token or ""):
            log.warning("callback.unauthorized", method=request.method, path=request.path)
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="rc-http-bridge"'},
            )
        return await handler(request)

    return require_token


class Endpoints:
    """The handlers of the callback endpoints, for the tasks of one service."""

    def __init__(self, service: str, tracker: Tracker, clock: Clock, body_seconds: float) -> None:
        self.service = service
        self.tracker = tracker
        self.clock = clock
        self.body_seconds = body_seconds

    async def status(self, request: web.Request) -> web.Response:
        return web.json_response({"name": "rc-http-bridge", "service": self.service})

    async def patch_task(self, request: web.Request) -> web.Response:
        task_id = request.match_info["task_id"]
        task = self.tracker.task(task_id)
        if task is None:
            return error(404, f"unknown task {task_id!r}")
        try:
            update = parse_task_body(await read_body(request, self.body_seconds), task_id)
        except Unreadable as problem:
            log.warning("callback.unreadable", task_id=task_id, error=str(problem))
            return error(problem.status, str(problem))
        except ProtocolError as problem:
            log.warning("callback.unreadable", task_id=task_id, error=str(problem))
            if isinstance(problem, UnknownState):
                task.fail(f"callback PATCH /tasks/{task_id}: {problem}")
            return error(400, str(problem))
        changed = task.observe(update, self.clock())
        log.info(
            "callback.received",
            task_id=task_id,
            release_id=task.release.id,
            state=update.state.value,
            progress=update.progress,
            changed=changed,
        )
        return web.json_response(task_view(self.service, task))

    async def get_release(self, request: web.Request) -> web.Response:
        release_id = request.match_info["release_id"]
        task = self.tracker.by_release(release_id)
        if task is None:
            return error(404, f"unknown release {clip(release_id, 100)!r}")
        return web.json_response(release_view(task))


def make_app(
    service: str,
    tracker: Tracker,
    clock: Clock,
    callback_token: str | None,
    connections: Connections | None = None,
) -> web.Application:
    """The aiohttp application serving the callback endpoints (guarded by ``connections`` if given)."""
    body_seconds = connections.idle_timeout if connections is not None else 15.0
    endpoints = Endpoints(service, tracker, clock, body_seconds)
    guard = [connections.middleware] if connections is not None else []
    app = web.Application(
        middlewares=[*guard, one_line_errors, token_check(callback_token)],
        client_max_size=MAX_CALLBACK_BYTES,
    )
    app.router.add_get("/status", endpoints.status)
    app.router.add_patch("/tasks/{task_id}", endpoints.patch_task)
    app.router.add_get("/releases/{release_id}", endpoints.get_release)
    return app
