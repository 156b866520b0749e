"""The class a task team subclasses, and how the runner calls its methods."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, NamedTuple, TypeVar

from schemas.messages import ReleaseInfo
from schemas.topology import check_service_name
from task_sdk._progress import ProgressReporter

#: The longest reason or detail the SDK sends (a rejection's reason, a heartbeat's detail).
MAX_REASON_CHARS = 4000


def describe_error(error: BaseException) -> str:
    """What a handler raised, in one bounded line: ``ValueError: bad input``."""
    return f"{type(error).__name__}: {error}"[:MAX_REASON_CHARS]


#: What a step method returns: ``async def`` methods return an awaitable, plain ``def`` methods ``None``.
StepResult = Awaitable[None] | None

F = TypeVar("F", bound=Callable[..., Any])


class HealthStatus(NamedTuple):
    """What :meth:`TaskHandler.health` returns: whether the service can do its work, and why not.

    ``detail`` (at most 4000 characters are sent) is shown to operators; it may also be given when
    healthy (``HealthStatus(True, "3 index nodes up")``).
    """

    healthy: bool
    detail: str | None = None


#: What :meth:`TaskHandler.health` may return: a :class:`HealthStatus`, a ``(healthy, detail)``
#: tuple, or just a ``bool``.
HealthResult = HealthStatus | tuple[bool, str | None] | bool


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

    Override :meth:`health` to report whether the service's own dependencies (a database, a search
    cluster) are usable: its answer goes into every heartbeat, and the coordinator cancels a release
    that is initializing on an unhealthy service instead of waiting for it.
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

    @_default_step
    def health(self) -> HealthResult | Awaitable[HealthResult]:
        """Whether the service can do its work now; called before every heartbeat (default: healthy).

        Return a :class:`HealthStatus` (or a ``(healthy, detail)`` tuple, or a ``bool``). It may be
        ``async def`` (keep it short: it runs on the event loop) or plain ``def`` (runs in a worker
        thread, so a blocking ping is fine). Keep it quick: an answer that takes longer than half the
        heartbeat period is reported as unhealthy ("did not answer in time") and the check is not
        started again until it returns. An exception counts as unhealthy, with the error as detail;
        it never stops the heartbeats.
        """
        return HealthStatus(True)


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


async def invoke(method: Callable[..., object], *args: object) -> object:
    """Call a handler method: coroutines on the loop, plain functions in a worker thread."""
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    result = await asyncio.to_thread(method, *args)
    if inspect.isawaitable(result):
        return await result
    return result


async def invoke_step(method: Callable[..., StepResult], *args: object) -> None:
    """Call a step method (see :func:`invoke`); base-class no-ops are skipped."""
    if is_default(method):
        return
    await invoke(method, *args)


def is_default(method: Callable[..., object]) -> bool:
    """Whether ``method`` is a base-class default the subclass did not override."""
    return bool(getattr(method, "__task_sdk_default__", False))


def as_health_status(result: object) -> HealthStatus:
    """What ``health()`` returned, as a :class:`HealthStatus`; anything else counts as unhealthy."""
    if isinstance(result, bool):
        return HealthStatus(result)
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[0], bool)
        and (result[1] is None or isinstance(result[1], str))
    ):
        return HealthStatus(result[0], result[1])
    return HealthStatus(False, f"health() returned {result!r:.200}, not a HealthStatus")
