"""What the bridge knows about each task: the last status heard (callback, poll or answer) and when."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass, field

from rc_http_bridge.protocol import TaskStatus
from schemas.messages import ReleaseInfo

#: Tasks remembered at most; the oldest are forgotten first (a forgotten task's callbacks get 404).
MAX_TASKS = 10_000


@dataclass(eq=False)
class TrackedTask:
    """One (release, service) task. Updated by callbacks and polls; waited on by a step.

    ``phase`` is the release's state as the bridge knows it (answered by ``GET /releases/{id}``).
    ``changed_at`` is when the state or progress last changed, ``heard_at`` when the service last
    said anything about the task (both event-loop times).
    """

    task_id: str
    release: ReleaseInfo
    phase: str
    changed_at: float
    heard_at: float
    status: TaskStatus | None = None
    error: str | None = None
    _signal: asyncio.Event = field(default_factory=asyncio.Event)

    def begin_step(self, phase: str, release: ReleaseInfo, now: float) -> None:
        """A new step starts: forget an earlier step's protocol error, restart the stall clock."""
        self.phase = phase
        self.release = release
        self.error = None
        self.changed_at = now

    def observe(self, status: TaskStatus, now: float, *, authoritative: bool = False) -> bool:
        """Record ``status``; True if the state or progress changed (waiters are then woken).

        A non-authoritative observation (a callback or a poll) never moves the task back along the
        happy path nor out of ``failed``/``canceled``: answers may arrive out of order. The answer to
        the step's own command is authoritative (a retried step may start from ``failed``).
        """
        self.heard_at = now
        current = self.status
        if current is not None and not authoritative:
            if current.state.is_final or status.state.rank < current.state.rank:
                return False
            if status.progress is None and status.state is current.state:
                status = TaskStatus(status.state, current.progress)
        if status == current:
            return False
        self.status = status
        self.changed_at = now
        self._signal.set()
        return True

    def fail(self, error: str) -> None:
        """The service said something unreadable about the task: the waiting step fails with ``error``."""
        self.error = error
        self._signal.set()

    def arm(self) -> None:
        """Called by a waiter before it looks at the task; :meth:`wait` then returns on any later news."""
        self._signal.clear()

    async def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for news since :meth:`arm`; True if there was some."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._signal.wait()
        return self._signal.is_set()


class Tracker:
    """Tasks by task id and by release id (one service per bridge, so one task per release)."""

    def __init__(self, max_tasks: int = MAX_TASKS) -> None:
        self._tasks: OrderedDict[str, TrackedTask] = OrderedDict()
        self._by_release: dict[str, str] = {}
        self._max = max_tasks

    def track(self, task_id: str, release: ReleaseInfo, phase: str, now: float) -> TrackedTask:
        task = self._tasks.get(task_id)
        if task is None:
            task = TrackedTask(task_id, release, phase, changed_at=now, heard_at=now)
            self._tasks[task_id] = task
            self._by_release[release.id] = task_id
            while len(self._tasks) > self._max:
                _, old = self._tasks.popitem(last=False)
                self._by_release.pop(old.release.id, None)
        self._tasks.move_to_end(task_id)
        task.begin_step(phase, release, now)
        return task

    def task(self, task_id: str) -> TrackedTask | None:
        return self._tasks.get(task_id)

    def by_release(self, release_id: str) -> TrackedTask | None:
        task_id = self._by_release.get(release_id)
        return self._tasks.get(task_id) if task_id is not None else None
