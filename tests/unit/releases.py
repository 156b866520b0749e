"""Builders for releases and messages, and a driver that walks a release through the machine."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from coordinator.machine import Begin, Decision, Input, ReplyReceived, Timeouts, decide
from schemas.documents import Release, Task
from schemas.enums import Action, Outcome, ReleaseState
from schemas.messages import Progress, TaskReply

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SERVICES = ("file-service", "portal", "search-index")
TIMEOUTS = Timeouts()
_ids = itertools.count(1)


def new_release(services: tuple[str, ...] = SERVICES, *, is_major: bool = False, seq: int = 1) -> Release:
    return Release(
        id=f"RE_{seq:08d}",
        seq=seq,
        name="Spring data release",
        studies=("SD_AAAAAAAA",),
        is_major=is_major,
        tentative_version="0.0.1",
        tasks={s: Task(service=s) for s in services},
        created_at=T0,
        updated_at=T0,
    )


def reply(
    release: Release, service: str, action: Action, outcome: Outcome, reason: str | None = None
) -> TaskReply:
    return TaskReply(
        message_id=f"reply-{next(_ids)}",
        release_id=release.id,
        service=service,
        sent_at=T0,
        in_reply_to=f"{release.id}.{action}.{service}",
        action=action,
        outcome=outcome,
        reason=reason,
        instance_id="test:1",
        sdk_version="test",
    )


def progress(release: Release, service: str, percent: float) -> Progress:
    return Progress(
        message_id=f"progress-{next(_ids)}",
        release_id=release.id,
        service=service,
        sent_at=T0,
        in_reply_to=f"{release.id}.start.{service}",
        percent=percent,
        instance_id="test:1",
    )


@dataclass
class Driver:
    """Applies events to one release, keeping the time and every decision."""

    release: Release = field(default_factory=new_release)
    now: datetime = T0
    decisions: list[Decision] = field(default_factory=list)
    timeouts: Timeouts = TIMEOUTS

    def tick(self, seconds: float = 1) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def apply(self, event: Input) -> Decision:
        decision = decide(self.release, event, self.timeouts)
        self.decisions.append(decision)
        self.release = decision.release
        return decision

    def answer_all(self, action: Action, outcome: Outcome) -> None:
        for service in self.release.tasks:
            self.apply(ReplyReceived(reply(self.release, service, action, outcome), self.tick()))

    def to(self, state: ReleaseState) -> Driver:
        """Walk the release along the happy path (or the shortest path) to ``state``."""
        from coordinator.machine import Cancel, Publish

        steps = {
            ReleaseState.WAITING: [],
            ReleaseState.INITIALIZING: ["begin"],
            ReleaseState.RUNNING: ["begin", "accept"],
            ReleaseState.STAGED: ["begin", "accept", "stage"],
            ReleaseState.PUBLISHING: ["begin", "accept", "stage", "publish"],
            ReleaseState.PUBLISHED: ["begin", "accept", "stage", "publish", "published"],
            ReleaseState.CANCELING: ["begin", "cancel"],
            ReleaseState.CANCELED: ["begin", "cancel", "canceled"],
            ReleaseState.FAILED: ["begin", "accept", "fail"],
        }[state]
        for step in steps:
            match step:
                case "begin":
                    self.apply(Begin(self.tick()))
                case "accept":
                    self.answer_all(Action.INITIALIZE, Outcome.ACCEPTED)
                case "stage":
                    self.answer_all(Action.START, Outcome.STAGED)
                case "publish":
                    self.apply(Publish(self.tick(), "ops", None))
                case "published":
                    self.answer_all(Action.PUBLISH, Outcome.PUBLISHED)
                case "cancel":
                    self.apply(Cancel(self.tick(), "ops", "testing"))
                case "canceled":
                    self.answer_all(Action.CANCEL, Outcome.CANCELED)
                case "fail":
                    service = next(iter(self.release.tasks))
                    self.apply(
                        ReplyReceived(reply(self.release, service, Action.START, Outcome.FAILED), self.tick())
                    )
        assert self.release.state is state, (state, self.release.state, self.decisions[-1].reason)
        return self
