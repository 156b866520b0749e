"""A decision written down: the working copy of a release, and the commands and announcements it causes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from coordinator.machine.decision import Decision, Verdict
from coordinator.machine.inputs import (
    Timeouts,
)
from schemas.documents import (
    OutboxEntry,
    Release,
    ReleaseView,
    Task,
)
from schemas.enums import Action, MessageKind, ReleaseState, TaskState
from schemas.messages import (
    Announcement,
    Command,
    ReleaseInfo,
    encode,
)
from schemas.topology import Topology


@dataclass(slots=True)
class _Draft:
    """The working copy of the release and the messages it causes."""

    original: Release
    timeouts: Timeouts
    topology: Topology
    tasks: dict[str, Task] = field(init=False)
    outbox: list[OutboxEntry] = field(init=False, default_factory=list)
    _infos: dict[str | None, ReleaseInfo] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.tasks = dict(self.original.tasks)

    # ------------------------------------------------------------------ events

    def _set_task(self, service: str, state: TaskState, now: datetime, message: str | None) -> None:
        task = self.tasks[service]
        self.tasks[service] = task.model_copy(
            update={
                "state": state,
                "last_message": message if message is not None else task.last_message,
                "entered": {**task.entered, state: now},
                "deadline_at": None,
                "updated_at": now,
            }
        )

    def _send(
        self,
        service: str,
        action: Action,
        now: datetime,
        timeout: timedelta,
        *,
        task_state: TaskState | None = TaskState.WAITING,
        reason: str | None = None,
        final_version: str | None = None,
    ) -> None:
        task = self.tasks[service]
        entered = task.entered if task_state is None else {**task.entered, task_state: now}
        starting = action is Action.START
        self.tasks[service] = task.model_copy(
            update={
                "state": task.state if task_state is None else task_state,
                "deadline_at": now + timeout,
                "entered": entered,
                "updated_at": now,
                "instance": None if starting else task.instance,
                "starts": task.starts + 1 if starting else task.starts,
                "resend_at": None,
            }
        )
        key = self.topology.command_key(service, action)
        self.outbox.append(self._command(service, action, now, key, reason, final_version))

    def _instance_cancel(self, service: str, instance_id: str, now: datetime, reason: str) -> OutboxEntry:
        """A cancel addressed to one instance's own queue, sent once and not stored (see
        :attr:`Decision.unstored`). Its id names the release's revision and the instance."""
        key = self.topology.control_key(service, instance_id)
        instance = key.rsplit(".", 1)[1]
        message_id = f"{self.original.id}.cancel.{service}.r{self.original.revision}.{instance}"[:128]
        return self._command(service, Action.CANCEL, now, key, reason, message_id=message_id)

    def _command(
        self,
        service: str,
        action: Action,
        now: datetime,
        routing_key: str,
        reason: str | None,
        final_version: str | None = None,
        message_id: str | None = None,
    ) -> OutboxEntry:
        info = self._release_info(final_version)
        command = Command(
            message_id=message_id or f"{info.id}.{action}.{service}.r{self.original.revision + 1}",
            release_id=info.id,
            service=service,
            sent_at=now,
            action=action,
            release=info,
            reason=reason,
        )
        return OutboxEntry(
            message_id=command.message_id,
            exchange="commands",
            routing_key=routing_key,
            kind=MessageKind.COMMAND,
            body=encode(command).decode(),
        )

    def _release_info(self, final_version: str | None) -> ReleaseInfo:
        """What the commands of this draft tell services about the release: built once per version."""
        info = self._infos.get(final_version)
        if info is None:
            info = self._infos[final_version] = self._new_release_info(final_version)
        return info

    def _new_release_info(self, final_version: str | None) -> ReleaseInfo:
        r = self.original
        return ReleaseInfo(
            id=r.id,
            name=r.name,
            description=r.description,
            studies=r.studies,
            tags=r.tags,
            author=r.author,
            is_major=r.is_major,
            tentative_version=r.tentative_version,
            final_version=final_version or r.final_version,
        )

    def _transition(
        self, state: ReleaseState, now: datetime, reason: str, *, final_version: str | None = None
    ) -> Decision:
        updates: dict[str, object] = {
            "state": state,
            "state_reason": reason,
            "entered": {**self.original.entered, state: now},
        }
        if final_version is not None:
            updates["final_version"] = final_version
        if state is not ReleaseState.STAGED:
            updates["held"] = False
        release = self._build(now, updates)
        announcement = Announcement(
            message_id=f"{release.id}.announce.{state}.r{release.revision}",
            release_id=release.id,
            sent_at=now,
            state=state,
            release=ReleaseView.of(release),
        )
        entry = OutboxEntry(
            message_id=announcement.message_id,
            exchange="events",
            routing_key=self.topology.event_key(state),
            kind=MessageKind.ANNOUNCEMENT,
            body=encode(announcement).decode(),
        )
        release = release.model_copy(update={"outbox": (*release.outbox, entry)})
        return Decision(Verdict.APPLIED, release, reason, (*self.outbox, entry))

    def _changed(self, now: datetime, reason: str, **updates: object) -> Decision:
        return Decision(Verdict.APPLIED, self._build(now, updates), reason, tuple(self.outbox))

    def _build(self, now: datetime, updates: Mapping[str, object]) -> Release:
        return self.original.model_copy(
            update={
                **updates,
                "tasks": self.tasks,
                "outbox": (*self.original.outbox, *self.outbox),
                "revision": self.original.revision + 1,
                "updated_at": now,
            }
        )

    def _unchanged(self, verdict: Verdict, reason: str) -> Decision:
        return Decision(verdict, self.original, reason)

    def _refuse(self, reason: str) -> Decision:
        return self._unchanged(Verdict.REFUSED, reason)

    def _cancel_everything(self, now: datetime, reason: str) -> Decision:
        """Tell every service still holding something to discard it; wait for their answers."""
        told = self._send_cancel_to_active(now, reason)
        if not told:
            return self._transition(ReleaseState.CANCELED, now, reason)
        return self._transition(ReleaseState.CANCELING, now, reason)

    def _fail(self, now: datetime, reason: str) -> Decision:
        """Fail the release. During processing the others are told to discard their staged data;
        during publication nothing can be taken back, so nobody is told anything."""
        if self.original.state is not ReleaseState.PUBLISHING:
            for service in self._send_cancel_to_active(now, reason):
                self._set_task(service, TaskState.CANCELED, now, reason)
        return self._transition(ReleaseState.FAILED, now, reason)

    def _send_cancel_to_active(self, now: datetime, reason: str) -> list[str]:
        active = [t.service for t in self.tasks.values() if not t.state.is_final]
        for service in active:
            self._send(service, Action.CANCEL, now, self.timeouts.cancel, reason=reason, task_state=None)
        return active
