"""The class a task team subclasses, and how the runner calls its methods."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, TypeVar

from schemas.messages import ReleaseInfo
from schemas.topology import check_service_name
from task_sdk._progress import ProgressReporter

#: What a step method returns: ``async def`` methods return an awaitable, plain ``def`` methods ``None``.
StepResult = Awaitable[None] | None

F = TypeVar("F", bound=Callable[..., Any])


class Reject(Exception):
    """Raise from ``initialize`` to refuse a release; ``reason`` is shown to operators."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _default_step(method: F) -> F:
    """Mark a base-class no-op so the runner skips it instead of starting a thread for nothing."""
    method.__task_sdk_default__ = True  # type: ignore[attr-defined]
    return method


class TaskHandler:
    """One service's part in a data release. Subclass it, set ``service``, override the steps.

    Every step may be ``async def`` (runs on the event loop: never block in it) or plain ``def``
    (runs in a worker thread, so blocking code never stalls heartbeats). ``initialize`` accepts by
    default; ``publish`` and ``cancel`` do nothing by default; ``process`` must be written.
    """

    #: The service name: lowercase letters, digits and ``-``; names the queue and routing keys.
    service: ClassVar[str]

    @_default_step
    def initialize(self, release: ReleaseInfo) -> StepResult:
        """Check that the release can be served; ``raise Reject("why")`` to refuse it."""
        return None

    def process(self, release: ReleaseInfo, progress: ProgressReporter) -> StepResult:
        """Retrieve and stage the release's data (the heavy work); report progress as you go."""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    @_default_step
    def publish(self, release: ReleaseInfo) -> StepResult:
        """Make the staged data public (do the minimum: swap an alias, flip a flag)."""
        return None

    @_default_step
    def cancel(self, release: ReleaseInfo) -> StepResult:
        """Discard whatever was staged for the release."""
        return None


def check_handler(handler: TaskHandler) -> str:
    """Return the handler's service name, or raise ``TypeError``/``ValueError`` saying what is wrong."""
    if not isinstance(handler, TaskHandler):
        raise TypeError(f"{handler!r} is not a TaskHandler")
    service = getattr(handler, "service", None)
    if not isinstance(service, str):
        raise TypeError(f"{type(handler).__name__} must set the class attribute `service`")
    if type(handler).process is TaskHandler.process:
        raise TypeError(f"{type(handler).__name__} must implement process()")
    return check_service_name(service)


async def invoke_step(method: Callable[..., StepResult], *args: object) -> None:
    """Call a step method: coroutines on the loop, plain functions in a worker thread."""
    if getattr(method, "__task_sdk_default__", False):
        return
    if inspect.iscoroutinefunction(method):
        await method(*args)
        return
    result = await asyncio.to_thread(method, *args)
    if inspect.isawaitable(result):
        await result
