"""What the pages show of a release, computed from the coordinator's views. Pure functions, no I/O."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from schemas.documents import ReleaseView, Task
from schemas.enums import ReleaseState, TaskState

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Action(StrEnum):
    """What an operator may do to a release from the dashboard."""

    HOLD = "hold"
    UNHOLD = "unhold"
    PUBLISH = "publish"
    CANCEL = "cancel"


#: States in which a release may still be canceled (a publishing release may not: docs/design.md, section 5).
CANCELABLE = frozenset(
    {ReleaseState.WAITING, ReleaseState.INITIALIZING, ReleaseState.RUNNING, ReleaseState.STAGED}
)
#: From staged on, every service has its data staged: the release's processing is complete.
PROCESSED = frozenset({ReleaseState.STAGED, ReleaseState.PUBLISHING, ReleaseState.PUBLISHED})


def micros(moment: datetime) -> int:
    """``moment`` as whole microseconds since the epoch: what pages compare to order updates."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def available_actions(view: ReleaseView) -> list[Action]:
    """The actions the coordinator would accept now, in the order they are offered."""
    actions: list[Action] = []
    if view.state is ReleaseState.STAGED:
        actions.append(Action.UNHOLD if view.held else Action.HOLD)
        if not view.held:
            actions.append(Action.PUBLISH)
    elif view.state is ReleaseState.PUBLISHING:
        actions.append(Action.PUBLISH)  # re-sends the command to the services that have not answered
    if view.state in CANCELABLE:
        actions.append(Action.CANCEL)
    return actions


def rc_command(action: Action | str, release_id: str, reason: str | None = None) -> str:
    """The ``rc`` command line that does ``action`` (quoted for a POSIX shell)."""
    words = ["rc", "release", str(action), release_id]
    if action == Action.CANCEL:
        words += ["--reason", reason or "why"]
    return shlex.join(words)


def rc_commands(view: ReleaseView) -> list[str]:
    """Every ``rc`` command that applies to the release now: its actions, then following it."""
    commands = [rc_command(action, view.id) for action in available_actions(view)]
    if not view.state.is_terminal:
        commands.append(rc_command("watch", view.id))
    commands.append(f"rc release events {view.id}")
    return commands


def ordered_tasks(view: ReleaseView) -> list[Task]:
    return [view.tasks[name] for name in sorted(view.tasks)]


def release_progress(view: ReleaseView) -> float:
    """How far processing is, 0 to 100: the mean of the services' progress; 100 once staged everywhere."""
    if view.state in PROCESSED:
        return 100.0
    if not view.tasks:
        return 0.0
    return sum(task.progress for task in view.tasks.values()) / len(view.tasks)


def count_tasks(view: ReleaseView) -> str:
    """``2/3 staged``: how many services have reached the release's current step."""
    target = {
        ReleaseState.INITIALIZING: (TaskState.INITIALIZED, "initialized"),
        ReleaseState.RUNNING: (TaskState.STAGED, "staged"),
        ReleaseState.STAGED: (TaskState.STAGED, "staged"),
        ReleaseState.PUBLISHING: (TaskState.PUBLISHED, "published"),
        ReleaseState.PUBLISHED: (TaskState.PUBLISHED, "published"),
    }.get(view.state)
    if target is None:
        return f"{len(view.tasks)} services"
    reached = sum(1 for task in view.tasks.values() if task.state is target[0])
    return f"{reached}/{len(view.tasks)} {target[1]}"


def duration(seconds: float) -> str:
    """``0.4s``, ``12s``, ``3m 04s``, ``2h 05m``, ``3d 4h``: short and exact enough to compare."""
    if seconds < 10:
        return f"{max(seconds, 0):.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d {whole % 86400 // 3600}h"


def age(moment: datetime, now: datetime) -> str:
    """``5m 03s ago``; ``just now`` for less than a second (or a clock slightly ahead)."""
    seconds = (now - moment).total_seconds()
    return "just now" if seconds < 1 else f"{duration(seconds)} ago"


def utc(moment: datetime | None) -> str:
    """``2026-11-23 14:05:09Z``, or ``-``."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# ---------------------------------------------------------------------- the timeline

STEPS = ("initialize", "process", "review", "publish")


@dataclass(frozen=True)
class Segment:
    step: str
    #: Seconds the step took, or ``None`` while it is still going on.
    seconds: float | None
    #: Where the bar starts and how long it is, in thousandths of the timeline's width.
    left: int
    width: int

    @property
    def label(self) -> str:
        return "running" if self.seconds is None else duration(self.seconds)


@dataclass(frozen=True)
class TaskTimeline:
    service: str
    state: TaskState
    #: One entry per step, ``None`` where the service never entered it.
    segments: tuple[Segment | None, ...]
    total: str


def _step_bounds(task: Task, view: ReleaseView) -> list[tuple[datetime | None, datetime | None]]:
    at = task.entered.get
    return [
        (at(TaskState.WAITING, view.created_at), at(TaskState.INITIALIZED)),
        (at(TaskState.RUNNING), at(TaskState.STAGED)),
        (at(TaskState.STAGED), at(TaskState.PUBLISHING)),
        (at(TaskState.PUBLISHING), at(TaskState.PUBLISHED)),
    ]


def timeline_end(view: ReleaseView) -> datetime:
    """The right edge of the timeline: the view's time, or a later moment a state was entered."""
    moments = [view.created_at, view.updated_at, *view.entered.values()]
    for task in view.tasks.values():
        moments += task.entered.values()
    return max(moments)


def timelines(view: ReleaseView) -> list[TaskTimeline]:
    """Per service, the time spent in each step, as bars on one scale (the release's lifetime so far).

    A step still going on is drawn to the right edge (the view's time) and labelled ``running``.
    """
    start, end = view.created_at, timeline_end(view)
    span = max((end - start).total_seconds(), 1e-6)

    def position(moment: datetime) -> int:
        return round(1000 * (moment - start).total_seconds() / span)

    result = []
    for task in ordered_tasks(view):
        segments: list[Segment | None] = []
        for step, (begun, ended) in zip(STEPS, _step_bounds(task, view), strict=True):
            if ended is None and task.state.is_final:  # it ended (failed, canceled...) during this step
                ended = task.entered.get(task.state) or task.updated_at
            if begun is None:
                segments.append(None)
                continue
            left = position(begun)
            right = position(ended) if ended else 1000
            seconds = (ended - begun).total_seconds() if ended else None
            segments.append(Segment(step, seconds, left, max(right - left, 4)))
        finished = task.entered.get(TaskState.PUBLISHED) or (task.updated_at if task.state.is_final else None)
        total = duration((finished - view.created_at).total_seconds()) if finished else "-"
        result.append(TaskTimeline(task.service, task.state, tuple(segments), total))
    return result
