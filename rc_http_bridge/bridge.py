"""The bridge: a :class:`~task_sdk.TaskHandler` that stands in for one HTTP task service on the broker.

Each command becomes the protocol's ``POST {url}/tasks`` action; the answers, the service's
callbacks and polled ``get_status`` answers become the step's outcome and progress:

========================  =====================================================================
command                   what the bridge does
========================  =====================================================================
initialize                ``GET /status`` (must be 200 with a ``name``, else the release is
                          refused as unhealthy), then ``initialize``: non-200 refuses the release
                          with the body as the reason
start                     ``start`` (unless ``get_status`` shows the task already running, as
                          after a bridge restart), then waits for ``staged``, reporting progress
publish                   ``publish`` (unless already publishing), then waits for ``published``
cancel                    ``cancel`` (404, a task the service never heard of, counts as done)
========================  =====================================================================

While waiting, a callback or a poll saying ``failed`` fails the step, ``canceled`` ends processing as
canceled, an unknown state or an unreadable 200 answer fails it with the text, and a service whose
state and progress stay unchanged for ``stall_seconds`` fails it. The service is polled when it has
said nothing for ``poll_seconds``, so callbacks are never required.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self, cast

import aiohttp
import structlog
from aiohttp import web

from rc_http_bridge.client import Answer, HttpTaskService, ServiceUnreachable
from rc_http_bridge.config import BridgeConfig, default_public_url
from rc_http_bridge.connections import Connections
from rc_http_bridge.protocol import (
    HttpState,
    ProtocolError,
    TaskStatus,
    check_status_body,
    clip,
    parse_task_body,
    task_id_for,
)
from rc_http_bridge.server import make_app
from rc_http_bridge.tracker import TrackedTask, Tracker
from schemas.messages import ReleaseInfo
from task_sdk import ProgressReporter, Reject, Settings, StepCancelled, TaskHandler, serve

log = structlog.get_logger("rc_http_bridge")

#: States in which a ``start`` need not be sent again (the service already took it on).
_STARTED = frozenset({HttpState.RUNNING, HttpState.STAGED, HttpState.PUBLISHING, HttpState.PUBLISHED})
_PUBLISHING = frozenset({HttpState.PUBLISHING, HttpState.PUBLISHED})


class HttpServiceError(Exception):
    """The HTTP service failed the step, could not be reached, or answered outside the protocol."""


def reached(state: HttpState, target: HttpState) -> bool:
    """Whether ``state`` is ``target`` or beyond it on the happy path."""
    return not state.is_final and state.rank >= target.rank


class HttpBridge(TaskHandler):
    """Stands in for the HTTP task service ``config.url`` as task service ``config.service``.

    Create it with :func:`make_bridge` (which sets ``service`` from the configuration), open it
    (``async with bridge:`` starts the callback server and the HTTP client), then serve it with the
    SDK (:func:`run_bridge` does all three).
    """

    def __init__(self, config: BridgeConfig) -> None:
        if getattr(type(self), "service", None) != config.service:
            raise TypeError("create the bridge with make_bridge(config): its service comes from the config")
        self.config = config
        self.tracker = Tracker()
        self.public_url: str | None = config.public_url
        self._session: aiohttp.ClientSession | None = None
        self._http: HttpTaskService | None = None
        self._site_runner: web.AppRunner | None = None
        self.connections: Connections | None = None

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        """Start the callback server (on ``config.listen``) and the HTTP client."""
        host, port = self.config.listen_address
        self.connections = Connections(
            limit=self.config.max_connections, idle_timeout=self.config.idle_timeout
        )
        app = make_app(self.service, self.tracker, self._now, self.config.callback_token, self.connections)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await self.connections.site(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._site_runner = runner
        bound = self.bound_port or port
        self.public_url = self.config.public_url or default_public_url(host, bound)
        self._session = aiohttp.ClientSession()
        self._http = HttpTaskService(
            self._session,
            self.config.url,
            timeout=self.config.http_timeout,
            token=self.config.token,
            public_url=self.public_url,
        )
        log.info(
            "bridge.started",
            callbacks=self.public_url,
            listening=f"{host}:{bound}",
            callbacks_authenticated=self.config.callback_token is not None,
            **self.config.loggable(),
        )
        if self.config.insecure_callbacks:
            log.warning(
                "bridge.insecure_callbacks",
                listening=f"{host}:{bound}",
                callbacks_authenticated=self.config.callback_token is not None,
                warning="--insecure-callbacks: without a callback token, anyone who can reach this "
                "address can report this service's tasks staged or failed (development only)",
            )

    async def close(self) -> None:
        """Stop the callback server and close the HTTP client."""
        if self._session is not None:
            await self._session.close()
            self._session = None
            self._http = None
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def bound_port(self) -> int | None:
        """The port the callback server listens on (useful with port 0), or None before :meth:`open`."""
        if self._site_runner is None:
            return None
        for address in self._site_runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                return int(address[1])
        return None

    @property
    def http(self) -> HttpTaskService:
        if self._http is None:
            raise RuntimeError("the bridge is not open: use `async with bridge:` or run_bridge()")
        return self._http

    # ------------------------------------------------------------------ steps
    async def initialize(self, release: ReleaseInfo) -> None:
        task = self._track(release, "initializing")
        await self._check_health()
        try:
            answer = await self._post(task, "initialize")
        except ServiceUnreachable as error:
            raise Reject(str(error)) from None
        if not answer.ok:
            raise Reject(clip(answer.text) or answer.describe())
        status = self._read(answer, task)
        task.observe(status, self._now(), authoritative=True)
        if status.state is HttpState.FAILED:
            raise HttpServiceError(f"{answer.request} answered state failed")
        if status.state is HttpState.CANCELED:
            raise Reject(f"{answer.request} answered state {status.state.value}")

    async def process(self, release: ReleaseInfo, progress: ProgressReporter) -> None:
        task = self._track(release, "running")
        try:
            if not await self._already(task, _STARTED):
                await self._command(task, "start")
            await self._wait(task, HttpState.STAGED, progress)
        except StepCancelled:
            task.phase = "canceled"
            raise
        except BaseException:
            task.phase = "failed"
            raise
        task.phase = "staged"

    async def publish(self, release: ReleaseInfo) -> None:
        task = self._track(release, "publishing")
        try:
            if not await self._already(task, _PUBLISHING):
                await self._command(task, "publish")
            await self._wait(task, HttpState.PUBLISHED, None)
        except BaseException:
            task.phase = "failed"
            raise
        task.phase = "published"

    async def cancel(self, release: ReleaseInfo) -> None:
        task = self._track(release, "canceling")
        try:
            answer = await self._post(task, "cancel")
        except ServiceUnreachable as error:
            raise HttpServiceError(str(error)) from None
        if answer.status == 404:
            log.info("cancel.unknown_task", task_id=task.task_id, release_id=release.id)
        elif not answer.ok:
            raise HttpServiceError(answer.describe())
        task.phase = "canceled"

    # ------------------------------------------------------------------ helpers
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _track(self, release: ReleaseInfo, phase: str) -> TrackedTask:
        return self.tracker.track(task_id_for(release.id, self.service), release, phase, self._now())

    async def _post(self, task: TrackedTask, action: str) -> Answer:
        answer = await self.http.task(action, task.task_id, task.release.id, task.release.studies)
        report = log.debug if action == "get_status" else log.info
        report("http.answered", action=action, task_id=task.task_id, status=answer.status)
        return answer

    def _read(self, answer: Answer, task: TrackedTask) -> TaskStatus:
        try:
            return parse_task_body(answer.text, task.task_id)
        except ProtocolError as problem:
            raise HttpServiceError(f"{answer.request}: {problem}") from None

    async def _check_health(self) -> None:
        """Refuse the release if ``GET /status`` does not answer 200 with a ``name``."""
        try:
            answer = await self.http.status()
            if not answer.ok:
                raise ProtocolError(answer.describe())
            check_status_body(answer.text)
        except ServiceUnreachable as error:
            reason = str(error)
        except ProtocolError as problem:
            reason = str(problem)
        else:
            return
        log.warning("http.unhealthy", url=self.http.url, reason=reason)
        raise Reject(f"the HTTP service is unhealthy: {reason}")

    async def _already(self, task: TrackedTask, states: frozenset[HttpState]) -> bool:
        """Whether ``get_status`` shows the task in ``states`` already (a resumed or replayed step)."""
        with contextlib.suppress(ServiceUnreachable, HttpServiceError):
            answer = await self._post(task, "get_status")
            if answer.ok:
                status = self._read(answer, task)
                if status.state in states:
                    task.observe(status, self._now(), authoritative=True)
                    log.info("http.already", task_id=task.task_id, state=status.state.value)
                    return True
        return False

    async def _command(self, task: TrackedTask, action: str) -> None:
        """Send ``action``; a connection error, a non-200 or an unreadable answer fails the step."""
        try:
            answer = await self._post(task, action)
        except ServiceUnreachable as error:
            raise HttpServiceError(str(error)) from None
        if not answer.ok:
            raise HttpServiceError(answer.describe())
        task.observe(self._read(answer, task), self._now(), authoritative=True)

    async def _wait(self, task: TrackedTask, target: HttpState, progress: ProgressReporter | None) -> None:
        """Until the task reaches ``target``: wake on callbacks, poll when the service is quiet."""
        poll = self.config.poll_seconds
        stall = self.config.stall_seconds
        last_poll = self._now()
        reported: TaskStatus | None = None
        while True:
            task.arm()
            status = self._check(task, progress is not None)
            if status is not None and reached(status.state, target):
                if progress is not None:
                    await progress.report(100, f"HTTP service: {status.describe()}")
                return
            if progress is not None and status is not None and status != reported:
                percent = status.progress if status.progress is not None else progress.percent
                await progress.report(percent, f"HTTP service: {status.describe()}")
                reported = status
            now = self._now()
            if stall and now - task.changed_at >= stall:
                last = status.describe() if status else "nothing"
                raise HttpServiceError(
                    f"the HTTP service's task {task.task_id} has not changed for {stall:g} s "
                    f"(last heard: {last})"
                )
            next_poll = max(task.heard_at, last_poll) + poll
            wake = min(next_poll, task.changed_at + stall) if stall else next_poll
            if wake > now and await task.wait(wake - now):
                continue  # news from a callback
            if self._now() < next_poll:
                continue  # woke up for the stall check
            last_poll = self._now()
            await self._poll(task)

    def _check(self, task: TrackedTask, processing: bool) -> TaskStatus | None:
        """The task's status, or the step's end if the service failed or canceled it."""
        if task.error is not None:
            raise HttpServiceError(task.error)
        status = task.status
        if status is None:
            return None
        if status.state is HttpState.FAILED:
            raise HttpServiceError(f"the HTTP service reports task {task.task_id} failed")
        if status.state is HttpState.CANCELED:
            if processing:
                raise StepCancelled(f"the HTTP service reports task {task.task_id} canceled")
            raise HttpServiceError(
                f"the HTTP service reports task {task.task_id} canceled during publication"
            )
        return status

    async def _poll(self, task: TrackedTask) -> None:
        """``get_status``: a 4xx or an unreadable answer fails the step; no answer or a 5xx is retried."""
        try:
            answer = await self._post(task, "get_status")
        except ServiceUnreachable as error:
            log.warning("http.poll_failed", task_id=task.task_id, error=str(error))
            return
        if 400 <= answer.status < 500:
            task.fail(answer.describe())
        elif not answer.ok:
            log.warning("http.poll_failed", task_id=task.task_id, error=answer.describe())
        else:
            try:
                task.observe(parse_task_body(answer.text, task.task_id), self._now())
            except ProtocolError as problem:
                task.fail(f"{answer.request}: {problem}")


def make_bridge(config: BridgeConfig) -> HttpBridge:
    """An :class:`HttpBridge` whose ``service`` is ``config.service`` (a class generated for it)."""
    cls = type(f"HttpBridge[{config.service}]", (HttpBridge,), {"service": config.service})
    return cast(HttpBridge, cls(config))


async def run_bridge(config: BridgeConfig, settings: Settings) -> None:
    """Open the bridge and serve it on the broker until SIGTERM/SIGINT (then drain and close)."""
    async with make_bridge(config) as bridge:
        await serve(bridge, settings)
