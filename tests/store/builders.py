"""Releases and audit events for the store tests, moved along by the real state machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from coordinator.audit import Cause, of_decision
from coordinator.machine import Begin, Input, Publish, ReplyReceived, Timeouts, decide
from coordinator.versioning import next_tentative
from schemas.documents import AuditEvent, Note, Release, Task
from schemas.enums import Action, EventKind, Outcome, ReleaseState
from tests.unit.releases import reply

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUTS = Timeouts()


def release(
    seq: int,
    *,
    studies: tuple[str, ...] = ("SD_AAAAAAAA",),
    services: tuple[str, ...] = ("portal", "search-index"),
    created: datetime | None = None,
    notes: tuple[Note, ...] = (),
    name: str = "Spring data release",
) -> Release:
    at = created or T0 + timedelta(minutes=seq)
    return Release(
        id=f"RE_{seq:08d}",
        seq=seq,
        name=name,
        studies=studies,
        tentative_version=next_tentative(None if seq == 1 else f"0.0.{seq - 1}"),
        tasks={s: Task(service=s) for s in services},
        created_at=at,
        updated_at=at,
        notes=notes,
        next_note=len(notes) + 1,
    )


def created_event(release: Release) -> AuditEvent:
    return AuditEvent(
        id=f"{release.id}.r0",
        release_id=release.id,
        at=release.created_at,
        kind=EventKind.CREATED,
        reason="created",
        state_after=ReleaseState.WAITING,
        actor="operator:tester",
    )


def step(release: Release, event: Input) -> tuple[Release, AuditEvent]:
    """The release after ``event`` (which must apply) and its audit event."""
    decision = decide(release, event, TIMEOUTS)
    assert decision.applied, decision.reason
    return decision.release, of_decision(release.state, decision, Cause(event))


def begin(release: Release) -> tuple[Release, AuditEvent]:
    return step(release, Begin(release.updated_at + timedelta(seconds=1)))


def answer_all(release: Release, action: Action, outcome: Outcome) -> list[tuple[Release, AuditEvent]]:
    steps = []
    for service in release.tasks:
        at = release.updated_at + timedelta(seconds=1)
        release, event = step(release, ReplyReceived(reply(release, service, action, outcome), at))
        steps.append((release, event))
    return steps


def publish(release: Release, highest_final: str | None) -> tuple[Release, AuditEvent]:
    return step(release, Publish(release.updated_at + timedelta(seconds=1), "tester", highest_final))


def note(number: int, text: str, at: datetime = T0, study: str | None = None) -> Note:
    return Note(id=f"N{number}", study=study, text=text, author="tester", created_at=at, updated_at=at)
