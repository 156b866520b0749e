"""The real state machine behind a memo: ``decide()`` on real release documents, asked once per
(release, event).

A release is known by an integer: the id of its *canonical key*, the part of the document that
``decide()`` reads to choose what happens (state, hold flag, versions, and per task its state, its
recorded answers and whether it has a deadline). What only describes (timestamps, reasons, the
revision, the journal, progress) is left out, so two documents that differ only there are one state.
The first document met for a key is kept and is the one given to ``decide()``;
``Machine(cross_check=True)`` also keeps the others and checks that ``decide()`` treats them alike
(``tests/explore/test_explore.py`` runs it), so the abstraction is tested, not assumed.
"""

from __future__ import annotations

from collections.abc import Hashable
from datetime import UTC, datetime
from typing import NamedTuple

from coordinator.machine import (
    Begin,
    Cancel,
    DeadlineCheck,
    HealthVerdict,
    Hold,
    Input,
    Publish,
    ReplyReceived,
    Timeouts,
    Unhold,
    decide,
    next_deadline,
)
from coordinator.versioning import highest
from schemas.documents import Release, Task
from schemas.enums import Action, MessageKind, Outcome, ReleaseState, TaskState
from schemas.messages import Command, TaskReply, decode

#: The moment of every event but deadline checks.
NOW = datetime(2026, 1, 1, tzinfo=UTC)
TIMEOUTS = Timeouts()
SERVICE_NAMES = ("portal", "search-index", "file-service")

#: What may happen to a release: ("begin", unhealthy service indexes), ("reply", service, action,
#: outcome), ("unhealthy", service), ("deadline",), ("hold",), ("unhold",), ("publish", highest
#: final version), ("cancel",).
EventKey = tuple[Hashable, ...]


class Facts(NamedTuple):
    """What the explorer reads of a stored release."""

    state: ReleaseState
    held: bool
    tentative_version: str
    final_version: str | None
    #: Per service (in order): the task's state and its recorded answers.
    tasks: tuple[tuple[TaskState, dict[Action, Outcome]], ...]
    #: Whether the coordinator arms a deadline for it (``next_deadline`` is set).
    armed: bool

    @property
    def version(self) -> str:
        return self.final_version or self.tentative_version


class Step(NamedTuple):
    """One decision: whether it applied, the release after it, the commands it put in the outbox."""

    applied: bool
    release: int
    commands: tuple[tuple[int, Action], ...]
    reason: str


def canonical_key(release: Release) -> tuple[Hashable, ...]:
    return (
        release.id,
        release.state,
        release.held,
        release.is_major,
        release.tentative_version,
        release.final_version,
        tuple(
            (name, t.state, tuple(sorted(t.answers.items())), t.deadline_at is None)
            for name, t in release.tasks.items()
        ),
    )


def release_id(index: int) -> str:
    return f"RE_{index + 1:08d}"


class Machine:
    """Interns release documents and memoises ``decide()`` on (release, event)."""

    def __init__(self, services: tuple[str, ...], *, cross_check: bool = False) -> None:
        self.services = services
        self._service_index = {name: i for i, name in enumerate(services)}
        self.documents: list[Release] = []
        self.facts: list[Facts] = []
        self._ids: dict[tuple[Hashable, ...], int] = {}
        self._steps: dict[tuple[int, EventKey], Step] = {}
        self._cross_check = cross_check
        self._others: dict[int, list[Release]] = {}
        self._archive: dict[tuple[ReleaseState, str, str | None], int] = {}
        self._created: dict[tuple[int, str, int | None], int] = {}
        self._highest: dict[tuple[int, ...], str | None] = {}
        #: Calls of the real ``decide()``, and how many of them cross-checked another document.
        self.decisions = 0
        self.cross_checked = 0

    def intern(self, release: Release) -> int:
        key = canonical_key(release)
        found = self._ids.get(key)
        if found is not None:
            if self._cross_check and release is not self.documents[found]:
                others = self._others.setdefault(found, [])
                if len(others) < 3 and release not in others:
                    others.append(release)
            return found
        self._ids[key] = len(self.documents)
        self.documents.append(release)
        self.facts.append(_facts(release))
        return len(self.documents) - 1

    def archived(self, release: int) -> int:
        """An ended release as a re-run archives it: only its state and versions still matter (nothing
        changes an ended release, which ``ended_releases_never_change`` checks), so every ended
        release with the same state and versions becomes one."""
        facts = self.facts[release]
        return self._archive.setdefault((facts.state, facts.tentative_version, facts.final_version), release)

    def create(self, index: int, tentative_version: str, rerun_of: int | None) -> int:
        """A new ``waiting`` release, as the coordinator inserts it (services snapshotted)."""
        key = (index, tentative_version, rerun_of)
        found = self._created.get(key)
        if found is None:
            found = self._created[key] = self._create(index, tentative_version, rerun_of)
        return found

    def _create(self, index: int, tentative_version: str, rerun_of: int | None) -> int:
        return self.intern(
            Release(
                id=release_id(index),
                seq=index + 1,
                name="Spring data release",
                studies=("SD_AAAAAAAA",),
                tentative_version=tentative_version,
                tasks={name: Task(service=name) for name in self.services},
                entered={ReleaseState.WAITING: NOW},
                created_at=NOW,
                updated_at=NOW,
                rerun_of=None if rerun_of is None else release_id(rerun_of),
            )
        )

    def highest_final_version(self, releases: tuple[int, ...]) -> str | None:
        """What the store answers: the highest final version of these releases (``versioning.highest``)."""
        found = self._highest.get(releases, "")
        if found == "":
            finals = (self.facts[r].final_version for r in releases)
            found = self._highest[releases] = highest(v for v in finals if v is not None)
        return found

    def step(self, release: int, key: EventKey) -> Step:
        memo = (release, key)
        found = self._steps.get(memo)
        if found is None:
            found = self._decide(self.documents[release], release, key)
            self._steps[memo] = found
            if self._cross_check:
                for other in self._others.get(release, ()):
                    again = self._decide(other, release, key)
                    self.cross_checked += 1
                    assert again[:3] == found[:3], (self.facts[release], key, found, again)
        return found

    def _decide(self, document: Release, release: int, key: EventKey) -> Step:
        self.decisions += 1
        decision = decide(document, self._event(document, key), TIMEOUTS)
        commands = []
        for entry in decision.messages:
            if entry.kind is MessageKind.COMMAND:
                command = decode(entry.body.encode(), Command)
                commands.append((self._service_index[command.service], command.action))
        after = self.intern(decision.release) if decision.applied else release
        return Step(decision.applied, after, tuple(commands), decision.reason)

    def _event(self, release: Release, key: EventKey) -> Input:
        names = self.services
        match key:
            case ("begin", frozenset() as unhealthy):
                return Begin(NOW, {names[s]: "no consumer on its queue" for s in unhealthy})
            case ("reply", int(s), Action() as action, Outcome() as outcome):
                return ReplyReceived(_reply(release, names[s], action, outcome), NOW)
            case ("unhealthy", int(s)):
                return HealthVerdict(NOW, {names[s]: "the service reports itself unhealthy"})
            case ("deadline",):
                return DeadlineCheck(_after_every_deadline(release))
            case ("hold",):
                return Hold(NOW, "ops")
            case ("unhold",):
                return Unhold(NOW, "ops")
            case ("publish", highest):
                return Publish(NOW, "ops", highest)  # type: ignore[arg-type]
            case ("cancel",):
                return Cancel(NOW, "ops", "explorer")
        raise ValueError(f"unknown event {key!r}")


def _reply(release: Release, service: str, action: Action, outcome: Outcome) -> TaskReply:
    return TaskReply(
        message_id=f"{release.id}.{service}.{action}.{outcome}",
        release_id=release.id,
        service=service,
        sent_at=NOW,
        in_reply_to=f"{release.id}.{action}.{service}",
        action=action,
        outcome=outcome,
        instance_id="explorer:1",
        sdk_version="explorer",
    )


def _after_every_deadline(release: Release) -> datetime:
    """The moment every deadline of the release has passed: a deadline check then finds every service
    it waits on silent. (Time is not otherwise modelled: every other event happens at ``NOW``.)"""
    return max((t.deadline_at for t in release.tasks.values() if t.deadline_at is not None), default=NOW)


def _facts(release: Release) -> Facts:
    return Facts(
        state=release.state,
        held=release.held,
        tentative_version=release.tentative_version,
        final_version=release.final_version,
        tasks=tuple((t.state, dict(t.answers)) for t in release.tasks.values()),
        armed=next_deadline(release) is not None,
    )
