"""An HTTP task service following the original protocol, with switches to make it misbehave.

It serves ``POST /tasks`` (initialize, start, publish, get_status, cancel) and ``GET /status`` on
127.0.0.1 (port 0), checks the bridge's bearer token on every call, and works through a task in
``steps`` timed steps. With ``callbacks`` it reports each step to the bridge
(``PATCH {callback_url}/tasks/{task_id}``) and reads the release (``GET {callback_url}/releases/{id}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiohttp import web

NAME = "fake-portal"


@dataclass
class Behaviour:
    """How the fake behaves; the defaults make a well-behaved, poll-only service."""

    #: Call the bridge back with every state change.
    callbacks: bool = False
    #: Answer ``get_status`` (False: 500 to every poll, so only callbacks can move a release).
    answers_status: bool = True
    #: ``GET /status`` answers 200 with a name (False: 500).
    healthy: bool = True
    #: Answer ``initialize`` with 503 and this body.
    reject: str | None = None
    #: Answer ``start`` with this HTTP status and body instead of 200 + the task.
    start_answer: tuple[int, str] | None = None
    #: The state processing ends in (None: it never ends); may be a state the protocol does not know.
    end_state: str | None = "staged"
    #: Progress steps before ``end_state``, and the seconds each takes.
    steps: int = 3
    step_seconds: float = 0.1
    #: Bearer token sent with callbacks (None: no Authorization header).
    callback_token: str | None = None
    #: Seconds every answer to ``POST /tasks`` is delayed (to trip the bridge's HTTP timeout).
    answer_delay: float = 0.0


@dataclass
class Task:
    task_id: str
    release_id: str
    studies: list[str]
    state: str = "pending"
    progress: int = 0
    date_submitted: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


class FakeTaskService:
    """The HTTP task service; ``url`` once started. Records what it was asked and what it got."""

    def __init__(self, behaviour: Behaviour | None = None, *, token: str | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.token = token
        self.callback_url: str | None = None
        self.tasks: dict[str, Task] = {}
        #: (action, task_id) of every authorized POST /tasks, in order.
        self.calls: list[tuple[str, str]] = []
        #: Requests refused for a missing or wrong token.
        self.unauthorized: list[str] = []
        #: HTTP status of every callback the bridge answered.
        self.callback_statuses: list[int] = []
        #: Releases read back from the bridge, by id.
        self.releases: dict[str, dict[str, Any]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeTaskService:
        app = web.Application(middlewares=[self._check_token])
        app.router.add_post("/tasks", self._tasks)
        app.router.add_get("/status", self._status)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for worker in self._workers.values():
            worker.cancel()
        await asyncio.gather(*self._workers.values(), return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def actions(self, task_id: str | None = None) -> list[str]:
        """The actions received (for one task), without the polls."""
        return [a for a, t in self.calls if a != "get_status" and (task_id is None or t == task_id)]

    def polls(self) -> int:
        return sum(1 for action, _ in self.calls if action == "get_status")

    # ------------------------------------------------------------------ HTTP side
    @web.middleware
    async def _check_token(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None and request.headers.get("Authorization") != f"Bearer {self.token}":
            self.unauthorized.append(f"{request.method} {request.path}")
            return web.json_response({"message": "unauthorized"}, status=401)
        response: web.StreamResponse = await handler(request)
        return response

    async def _status(self, request: web.Request) -> web.Response:
        if not self.behaviour.healthy:
            return web.Response(status=500, text="database unreachable")
        return web.json_response({"name": NAME, "version": "1.0"})

    async def _tasks(self, request: web.Request) -> web.Response:
        body = await request.json()
        action, task_id = body["action"], body["task_id"]
        self.calls.append((action, task_id))
        if self.behaviour.answer_delay:
            await asyncio.sleep(self.behaviour.answer_delay)
        if action == "initialize":
            if self.behaviour.reject is not None:
                return web.Response(status=503, text=self.behaviour.reject)
            self.tasks[task_id] = Task(task_id, body["release_id"], body["studies"])
            return self._answer(self.tasks[task_id])
        task = self.tasks.get(task_id)
        if task is None:
            return web.json_response({"message": f"task {task_id} not found"}, status=404)
        if action == "get_status":
            if not self.behaviour.answers_status:
                return web.Response(status=500, text="status not implemented")
            return self._answer(task)
        if action == "start":
            if self.behaviour.start_answer is not None:
                status, text = self.behaviour.start_answer
                return web.Response(status=status, text=text)
            task.state, task.progress = "running", 0
            self._work(task, self._process(task))
        elif action == "publish":
            task.state = "publishing"
            self._work(task, self._publish(task))
        elif action == "cancel":
            worker = self._workers.pop(task_id, None)
            if worker is not None:
                worker.cancel()
            task.state = "canceled"
        else:
            return web.json_response({"message": f"unknown action {action}"}, status=400)
        return self._answer(task)

    def _answer(self, task: Task) -> web.Response:
        return web.json_response(
            {
                "name": NAME,
                "kf_id": task.task_id,
                "release_id": task.release_id,
                "state": task.state,
                "progress": task.progress,
                "date_submitted": task.date_submitted,
            }
        )

    # ------------------------------------------------------------------ the work
    def _work(self, task: Task, work: Any) -> None:
        self._workers[task.task_id] = asyncio.create_task(work)

    async def _process(self, task: Task) -> None:
        if self.behaviour.callbacks:
            await self._read_release(task)
        for step in range(1, self.behaviour.steps + 1):
            await asyncio.sleep(self.behaviour.step_seconds)
            task.progress = 100 * step // (self.behaviour.steps + 1)
            await self._call_back(task)
        if self.behaviour.end_state is None:
            return  # hangs: stays running forever
        await asyncio.sleep(self.behaviour.step_seconds)
        task.state = self.behaviour.end_state
        task.progress = 100 if task.state == "staged" else task.progress
        await self._call_back(task)

    async def _publish(self, task: Task) -> None:
        await asyncio.sleep(self.behaviour.step_seconds)
        task.state, task.progress = "published", 100
        await self._call_back(task)

    async def _call_back(self, task: Task) -> None:
        if not self.behaviour.callbacks:
            return
        assert self._session is not None
        assert self.callback_url is not None
        body = {"state": task.state, "progress": f"{task.progress}%"}
        async with self._session.patch(
            f"{self.callback_url}/tasks/{task.task_id}",
            data=json.dumps(body),
            headers=self._callback_headers(),
        ) as response:
            self.callback_statuses.append(response.status)

    async def _read_release(self, task: Task) -> None:
        assert self._session is not None
        assert self.callback_url is not None
        url = f"{self.callback_url}/releases/{task.release_id}"
        async with self._session.get(url, headers=self._callback_headers()) as response:
            self.callback_statuses.append(response.status)
            if response.status == 200:
                with contextlib.suppress(ValueError):
                    self.releases[task.release_id] = await response.json()

    def _callback_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.behaviour.callback_token is not None:
            headers["Authorization"] = f"Bearer {self.behaviour.callback_token}"
        return headers
