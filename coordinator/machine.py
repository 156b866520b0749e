"""The release state machine: pure, no I/O, no clock reads, no randomness.

``decide(release, event, timeouts)`` returns a :class:`Decision`: the new release document
(revision + 1, with the messages the transition causes appended to its outbox), or the
unchanged document and the reason nothing happened (a duplicate, a stale message, or an
operator command that is refused). The coordinator stores the new document with a
compare-and-set on the old state and revision, then publishes the outbox.

Message ids are derived from the release id, the step and the new revision, so a replayed
outbox sends the very same ids and services can deduplicate by message id.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic_core import to_json

from coordinator.versioning import next_final
from schemas.documents import (
    MAX_NOTE_BYTES,
    MAX_NOTES,
    MAX_NOTES_TOTAL_BYTES,
    Note,
    OutboxEntry,
    Release,
    ReleaseView,
    Task,
)
from schemas.enums import TERMINAL_RELEASE_STATES, Action, MessageKind, Outcome, ReleaseState, TaskState
from schemas.messages import (
    AddNote,
    Announcement,
    Command,
    EditNote,
    Progress,
    ReleaseInfo,
    RemoveNote,
    TaskReply,
    encode,
)
from schemas.topology import Topology

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each step may wait for a service. Processing is an *inactivity* limit:
    every progress message from a service moves that service's deadline forward."""

    initialize: timedelta = timedelta(seconds=60)
    process: timedelta = timedelta(minutes=10)
    publish: timedelta = timedelta(minutes=5)
    cancel: timedelta = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class Begin:
    """Start a ``waiting`` release; ``unhealthy`` maps each unhealthy required service to why."""

    now: datetime
    unhealthy: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReplyReceived:
    reply: TaskReply
    now: datetime


@dataclass(frozen=True, slots=True)
class ProgressReceived:
    progress: Progress
    now: datetime


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    """Services found unhealthy (no consumer, missed heartbeats) while the release waits on them."""

    now: datetime
    unhealthy: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class DeadlineCheck:
    now: datetime


@dataclass(frozen=True, slots=True)
class Hold:
    now: datetime
    operator: str


@dataclass(frozen=True, slots=True)
class Unhold:
    now: datetime
    operator: str


@dataclass(frozen=True, slots=True)
class Publish:
    now: datetime
    operator: str
    #: The highest final version assigned to any release so far (the store knows it).
    highest_final_version: str | None


@dataclass(frozen=True, slots=True)
class Cancel:
    now: datetime
    operator: str
    reason: str


@dataclass(frozen=True, slots=True)
class Edit:
    """Change what describes the release; ``None`` leaves a field as it is."""

    now: datetime
    operator: str
    name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] | None = None
    studies: tuple[str, ...] | None = None
    is_major: bool | None = None


#: What an operator may do to a release's notes (the admin operations themselves).
NoteOperation = AddNote | EditNote | RemoveNote


@dataclass(frozen=True, slots=True)
class NoteChange:
    now: datetime
    operator: str
    change: NoteOperation


Input = (
    Begin
    | ReplyReceived
    | ProgressReceived
    | HealthVerdict
    | DeadlineCheck
    | Hold
    | Unhold
    | Publish
    | Cancel
    | Edit
    | NoteChange
)
OperatorInput = Hold | Unhold | Publish | Cancel
#: Inputs that come from an operator (recorded as operator actions in the audit trail).
OPERATOR_INPUTS = (Hold, Unhold, Publish, Cancel, Edit, NoteChange)

# --------------------------------------------------------------------------- output


class Verdict(StrEnum):
    APPLIED = "applied"
    #: The same answer was already recorded: nothing changes.
    DUPLICATE = "duplicate"
    #: The message belongs to a step the release is no longer in: nothing changes.
    STALE = "stale"
    #: An operator command or a message that is not allowed now: nothing changes.
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    release: Release
    reason: str
    #: Messages this decision added to the outbox (already part of ``release.outbox``).
    messages: tuple[OutboxEntry, ...] = ()

    @property
    def applied(self) -> bool:
        return self.verdict is Verdict.APPLIED


# --------------------------------------------------------------------------- rules

#: The action whose answers each release state waits for.
_AWAITED_ACTION: dict[ReleaseState, Action] = {
    ReleaseState.INITIALIZING: Action.INITIALIZE,
    ReleaseState.RUNNING: Action.START,
    ReleaseState.PUBLISHING: Action.PUBLISH,
    ReleaseState.CANCELING: Action.CANCEL,
}

#: The task state in which a task is still expected to answer the awaited action.
_AWAITING_TASK_STATE: dict[Action, TaskState] = {
    Action.INITIALIZE: TaskState.WAITING,
    Action.START: TaskState.RUNNING,
    Action.PUBLISH: TaskState.PUBLISHING,
}

_TASK_STATE_BY_OUTCOME: dict[Outcome, TaskState] = {
    Outcome.ACCEPTED: TaskState.INITIALIZED,
    Outcome.REJECTED: TaskState.REJECTED,
    Outcome.STAGED: TaskState.STAGED,
    Outcome.PUBLISHED: TaskState.PUBLISHED,
    Outcome.FAILED: TaskState.FAILED,
    Outcome.CANCELED: TaskState.CANCELED,
}

_SUCCESS_BY_ACTION: dict[Action, Outcome] = {
    Action.INITIALIZE: Outcome.ACCEPTED,
    Action.START: Outcome.STAGED,
    Action.PUBLISH: Outcome.PUBLISHED,
    Action.CANCEL: Outcome.CANCELED,
}


def decide(release: Release, event: Input, timeouts: Timeouts, topology: Topology | None = None) -> Decision:
    """Apply one event to one release. Never raises for a well-typed event."""
    step = _Step(release, timeouts, topology or Topology())
    match event:
        case Begin():
            return step.begin(event)
        case ReplyReceived():
            return step.reply(event)
        case ProgressReceived():
            return step.progress(event)
        case HealthVerdict():
            return step.health(event)
        case DeadlineCheck():
            return step.deadline(event)
        case Hold() | Unhold() | Publish() | Cancel():
            return step.operator(event)
        case Edit():
            return step.edit(event)
        case NoteChange():
            return step.note(event)


# --------------------------------------------------------------------------- edit rules

#: States in which the studies and the classification may still change: initialization has not ended.
STUDIES_EDITABLE = frozenset({ReleaseState.WAITING, ReleaseState.INITIALIZING})
#: States in which name, description and tags may still change: publication has not started.
DESCRIPTION_EDITABLE = frozenset(
    {ReleaseState.WAITING, ReleaseState.INITIALIZING, ReleaseState.RUNNING, ReleaseState.STAGED}
)
#: States in which notes may change: every state before the release ends (the ``published``
#: announcement carries the notes, so they are final once it is out).
NOTES_EDITABLE = frozenset(ReleaseState) - TERMINAL_RELEASE_STATES


def edit_refusal(release: Release, edit: Edit) -> str | None:
    """Why ``edit`` may not be applied to ``release`` now, or ``None`` if it may."""
    state = release.state
    structural = [
        label
        for label, value in (("studies", edit.studies), ("major/minor", edit.is_major))
        if value is not None
    ]
    descriptive = [
        label
        for label, value in (("name", edit.name), ("description", edit.description), ("tags", edit.tags))
        if value is not None
    ]
    if descriptive and state not in DESCRIPTION_EDITABLE:
        why = (
            "publication has started"
            if state in (ReleaseState.PUBLISHING, ReleaseState.PUBLISHED)
            else "the release has ended"
        )
        return (
            f"{why} (the release is {state}): its {', '.join(descriptive)} can no longer change; "
            "they may change only until publication starts"
        )
    if structural and state not in STUDIES_EDITABLE:
        return (
            f"the {' and '.join(structural)} of a release can change only before initialization ends "
            f"(waiting or initializing); this one is {state}"
        )
    if edit.studies is not None:
        annotated = sorted({n.study for n in release.notes if n.study and n.study not in edit.studies})
        if annotated:
            return (
                f"notes are attached to {', '.join(annotated)}, which the new study list leaves out: "
                "remove those notes first"
            )
        if len(set(edit.studies)) != len(edit.studies):
            return "the study list names a study twice"
    return None


def edit_changes(release: Release, edit: Edit) -> dict[str, object]:
    """The fields ``edit`` actually changes (empty if it changes nothing)."""
    wanted: dict[str, object] = {
        "name": edit.name,
        "description": edit.description,
        "tags": edit.tags,
        "studies": edit.studies,
        "is_major": edit.is_major,
    }
    return {
        field_name: value
        for field_name, value in wanted.items()
        if value is not None and getattr(release, field_name) != value
    }


def note_size(text: str) -> int:
    """A note's size in UTF-8 bytes (what the limit is about)."""
    return len(text.encode())


def notes_size(notes: Iterable[Note]) -> int:
    """What the notes add to every announcement and ``show`` answer, JSON-encoded."""
    return sum(len(to_json(note)) for note in notes)


def note_refusal(release: Release, event: NoteOperation) -> str | None:
    """Why a note change may not be applied to ``release`` now, or ``None`` if it may."""
    if release.state not in NOTES_EDITABLE:
        return (
            f"the release is {release.state}: its notes can no longer change "
            "(notes can change until the release is published, canceled or failed)"
        )
    if isinstance(event, EditNote | RemoveNote) and _note(release, event.note_id) is None:
        known = ", ".join(n.id for n in release.notes) or "none"
        return f"no note {event.note_id} on {release.id} (its notes: {known})"
    if isinstance(event, AddNote) and event.study is not None and event.study not in release.studies:
        return f"study {event.study} is not part of {release.id} (its studies: {', '.join(release.studies)})"
    if isinstance(event, AddNote | EditNote):
        size = note_size(event.text)
        if size > MAX_NOTE_BYTES:
            return f"the note is {size} bytes; a note may have at most {MAX_NOTE_BYTES} bytes (64 KiB)"
        if not event.text.strip():
            return "the note is empty"
    if isinstance(event, AddNote) and len(release.notes) >= MAX_NOTES:
        return f"the release already has {MAX_NOTES} notes, the most it may have"
    return None


def with_note_change(release: Release, note: NoteChange) -> tuple[tuple[Note, ...], int, str]:
    """The notes after ``note`` (allowed by :func:`note_refusal`), the next note number, and what changed."""
    who, now = note.operator, note.now
    match note.change:
        case AddNote(text=text, study=study):
            added = Note(
                id=f"N{release.next_note}", study=study, text=text, author=who, created_at=now, updated_at=now
            )
            about = f" on {study}" if study else ""
            reason = f"note {added.id}{about} added by {who} ({note_size(text)} bytes)"
            return (*release.notes, added), release.next_note + 1, reason
        case EditNote(note_id=note_id, text=text):
            notes = tuple(
                n.model_copy(update={"text": text, "updated_at": now}) if n.id == note_id else n
                for n in release.notes
            )
            return notes, release.next_note, f"note {note_id} edited by {who} ({note_size(text)} bytes)"
        case RemoveNote(note_id=note_id):
            notes = tuple(n for n in release.notes if n.id != note_id)
            return notes, release.next_note, f"note {note_id} removed by {who}"


def _note(release: Release, note_id: str) -> Note | None:
    return next((n for n in release.notes if n.id == note_id), None)


def _describe_changes(release: Release, changes: Mapping[str, object]) -> str:
    parts = []
    for field_name, value in changes.items():
        if field_name == "description":
            parts.append("description changed")
        elif field_name == "is_major":
            parts.append("now a major release" if value else "now a minor release")
        elif isinstance(value, tuple):
            parts.append(f"{field_name} [{', '.join(map(str, value))}]")
        else:
            parts.append(f"{field_name} {getattr(release, field_name)!r} -> {value!r}")
    return "; ".join(parts)


def next_deadline(release: Release) -> datetime | None:
    """When :func:`decide` should next be given a :class:`DeadlineCheck` for this release."""
    if release.state.is_terminal:
        return None
    awaited = _AWAITED_ACTION.get(release.state)
    if awaited is None:
        return None
    pending = [t.deadline_at for t in _awaiting(release, awaited) if t.deadline_at is not None]
    return min(pending, default=None)


def awaiting_services(release: Release) -> list[str]:
    """The services the release is waiting on in its current step."""
    awaited = _AWAITED_ACTION.get(release.state)
    return [] if awaited is None else [t.service for t in _awaiting(release, awaited)]


def _awaiting(release: Release, action: Action) -> Iterable[Task]:
    return (t for t in release.tasks.values() if _is_awaiting(t, action))


def _is_awaiting(task: Task, action: Action) -> bool:
    """Whether ``task`` still owes an answer to ``action``."""
    if action is Action.CANCEL:
        return not task.state.is_final
    return task.state is _AWAITING_TASK_STATE[action]


def _confirms_cancel(task: Task, reply: TaskReply) -> bool:
    """A service confirming a cancel it was sent when the release failed (its task is canceled already)."""
    return reply.action is Action.CANCEL and task.state is TaskState.CANCELED


def _seconds(limit: timedelta) -> str:
    return f"{limit.total_seconds():g}s"


def _names(services: Iterable[str]) -> str:
    return ", ".join(sorted(services))


@dataclass(slots=True)
class _Step:
    """One decision in the making: the working copy of the release and the messages it causes."""

    original: Release
    timeouts: Timeouts
    topology: Topology
    tasks: dict[str, Task] = field(init=False)
    outbox: list[OutboxEntry] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.tasks = dict(self.original.tasks)

    # ------------------------------------------------------------------ events

    def begin(self, event: Begin) -> Decision:
        if self.original.state is not ReleaseState.WAITING:
            return self._unchanged(Verdict.STALE, f"already begun: the release is {self.original.state}")
        unhealthy = {s: why for s, why in event.unhealthy.items() if s in self.tasks}
        if unhealthy:
            for service in self.tasks:
                self._set_task(service, TaskState.CANCELED, event.now, unhealthy.get(service))
            details = "; ".join(f"{s} ({why})" for s, why in sorted(unhealthy.items()))
            return self._transition(
                ReleaseState.CANCELED, event.now, f"unhealthy at initialization: {details}"
            )
        for service in self.tasks:
            self._send(service, Action.INITIALIZE, event.now, self.timeouts.initialize)
        return self._transition(ReleaseState.INITIALIZING, event.now, "initialization sent to every service")

    def reply(self, event: ReplyReceived) -> Decision:
        reply = event.reply
        task = self.tasks.get(reply.service)
        if task is None:
            return self._unchanged(
                Verdict.REFUSED, f"{reply.service} is not a required service of this release"
            )
        if task.answers.get(reply.action) is reply.outcome or _confirms_cancel(task, reply):
            return self._unchanged(
                Verdict.DUPLICATE, f"{reply.service} already answered {reply.action}: {reply.outcome}"
            )
        state = self.original.state
        if state.is_terminal:
            return self._unchanged(
                Verdict.STALE, f"{reply.action} reply from {reply.service}: release is {state}"
            )
        awaited = _AWAITED_ACTION.get(state)
        if reply.action is not awaited:
            return self._unchanged(
                Verdict.STALE, f"{reply.action} reply from {reply.service} while the release is {state}"
            )
        if not _is_awaiting(task, awaited):
            return self._unchanged(
                Verdict.DUPLICATE, f"{reply.service} already answered {reply.action} (task is {task.state})"
            )
        self._record_answer(reply, event.now)
        if reply.outcome is _SUCCESS_BY_ACTION[reply.action]:
            return self._advance_if_all_answered(event.now)
        return self._setback(reply, event.now)

    def progress(self, event: ProgressReceived) -> Decision:
        progress = event.progress
        task = self.tasks.get(progress.service)
        if task is None:
            return self._unchanged(
                Verdict.REFUSED, f"{progress.service} is not a required service of this release"
            )
        if self.original.state is not ReleaseState.RUNNING or task.state is not TaskState.RUNNING:
            return self._unchanged(
                Verdict.STALE, f"progress from {progress.service} while release is {self.original.state}"
            )
        self.tasks[progress.service] = task.model_copy(
            update={
                "progress": progress.percent,
                "last_message": progress.note if progress.note is not None else task.last_message,
                "last_message_id": progress.message_id,
                "deadline_at": event.now + self.timeouts.process,
                "updated_at": event.now,
            }
        )
        return self._changed(event.now, f"{progress.service} at {progress.percent:g}%")

    def health(self, event: HealthVerdict) -> Decision:
        if self.original.state is not ReleaseState.INITIALIZING:
            return self._unchanged(
                Verdict.STALE, f"health only matters at initialization ({self.original.state})"
            )
        unhealthy = {s: why for s, why in event.unhealthy.items() if s in self.tasks}
        if not unhealthy:
            return self._unchanged(Verdict.STALE, "every service of the release is healthy")
        details = "; ".join(f"{s} ({why})" for s, why in sorted(unhealthy.items()))
        return self._cancel_everything(event.now, f"unhealthy at initialization: {details}")

    def deadline(self, event: DeadlineCheck) -> Decision:
        state = self.original.state
        awaited = _AWAITED_ACTION.get(state)
        if awaited is None:
            return self._unchanged(Verdict.STALE, f"no deadline while the release is {state}")
        silent = [
            t.service
            for t in _awaiting(self.original, awaited)
            if t.deadline_at is not None and t.deadline_at <= event.now
        ]
        if not silent:
            return self._unchanged(Verdict.STALE, "no deadline has passed")
        names, limits = _names(silent), self.timeouts
        if state is ReleaseState.INITIALIZING:
            return self._cancel_everything(
                event.now,
                f"no answer to initialize within {_seconds(limits.initialize)} from: {names} (is it running "
                "and consuming its queue? the limit is RC_INITIALIZE_TIMEOUT)",
            )
        if state is ReleaseState.RUNNING:
            return self._fail(
                event.now,
                f"no progress during processing for {_seconds(limits.process)} from: {names} (a running task "
                "reports progress by itself, so its process has probably stopped: check its logs; the limit "
                "is RC_PROCESS_TIMEOUT)",
            )
        if state is ReleaseState.PUBLISHING:
            return self._fail(
                event.now,
                f"no answer to publish within {_seconds(limits.publish)} from: {names} (the others may be "
                "public already: fix it, then rc release rerun; the limit is RC_PUBLISH_TIMEOUT)",
            )
        return self._transition(
            ReleaseState.CANCELED,
            event.now,
            f"canceled; no answer to cancel within {_seconds(limits.cancel)} from: {names} (they may still "
            "hold staged data: check them)",
        )

    def operator(self, event: OperatorInput) -> Decision:
        state = self.original.state
        match event:
            case Hold():
                if state is not ReleaseState.STAGED:
                    return self._refuse(f"only a staged release can be held; this one is {state}")
                if self.original.held:
                    return self._refuse("the release is already on hold")
                return self._changed(event.now, f"held by {event.operator}", held=True)
            case Unhold():
                if not self.original.held:
                    return self._refuse("the release is not on hold")
                return self._changed(event.now, f"released from hold by {event.operator}", held=False)
            case Publish():
                return self._publish(event)
            case Cancel():
                return self._operator_cancel(event)

    def edit(self, event: Edit) -> Decision:
        refusal = edit_refusal(self.original, event)
        if refusal is not None:
            return self._refuse(refusal)
        changes = edit_changes(self.original, event)
        if not changes:
            return self._unchanged(Verdict.DUPLICATE, "nothing to change: the release already reads so")
        reason = f"edited by {event.operator}: {_describe_changes(self.original, changes)}"
        return self._changed(event.now, reason, **changes)

    def note(self, event: NoteChange) -> Decision:
        refusal = note_refusal(self.original, event.change)
        if refusal is not None:
            return self._refuse(refusal)
        notes, next_note, reason = with_note_change(self.original, event)
        if notes_size(notes) > MAX_NOTES_TOTAL_BYTES:
            return self._refuse(
                f"the notes of a release may take at most {MAX_NOTES_TOTAL_BYTES} bytes together "
                f"(128 KiB; they travel in every announcement); these would take {notes_size(notes)}"
            )
        return self._changed(event.now, reason, notes=notes, next_note=next_note)

    # ------------------------------------------------------------------ step logic

    def _record_answer(self, reply: TaskReply, now: datetime) -> None:
        task = self.tasks[reply.service]
        self.tasks[reply.service] = task.model_copy(
            update={
                "state": _TASK_STATE_BY_OUTCOME[reply.outcome],
                "progress": 100.0 if reply.outcome is Outcome.STAGED else task.progress,
                "last_message": reply.reason,
                "last_message_id": reply.message_id,
                "answers": {**task.answers, reply.action: reply.outcome},
                "entered": {**task.entered, _TASK_STATE_BY_OUTCOME[reply.outcome]: now},
                "deadline_at": None,
                "updated_at": now,
            }
        )

    def _advance_if_all_answered(self, now: datetime) -> Decision:
        state = self.original.state
        if state is ReleaseState.CANCELING:
            return self._finish_canceling(now)
        waiting = [t.service for t in self.tasks.values() if _is_awaiting(t, _AWAITED_ACTION[state])]
        if waiting:
            return self._changed(now, f"waiting on {len(waiting)} service(s): {_names(waiting)}")
        if state is ReleaseState.INITIALIZING:
            for service in self.tasks:
                self._send(service, Action.START, now, self.timeouts.process, task_state=TaskState.RUNNING)
            return self._transition(ReleaseState.RUNNING, now, "every service accepted; processing started")
        if state is ReleaseState.RUNNING:
            return self._transition(ReleaseState.STAGED, now, "every service staged its data")
        return self._transition(ReleaseState.PUBLISHED, now, "every service published its data")

    def _setback(self, reply: TaskReply, now: datetime) -> Decision:
        """A rejection, failure or cancel reported by one service."""
        why = f": {reply.reason}" if reply.reason else ""
        state = self.original.state
        if state is ReleaseState.CANCELING:
            return self._finish_canceling(now)
        if state is ReleaseState.INITIALIZING or reply.outcome is Outcome.CANCELED:
            return self._cancel_everything(now, f"{reply.service} {reply.outcome} the release{why}")
        phase = "processing" if state is ReleaseState.RUNNING else "publication"
        return self._fail(now, f"{reply.service} failed during {phase}{why}")

    def _finish_canceling(self, now: datetime) -> Decision:
        pending = [t.service for t in self.tasks.values() if not t.state.is_final]
        if pending:
            return self._changed(now, f"waiting for cancel from: {_names(pending)}")
        return self._transition(ReleaseState.CANCELED, now, self.original.state_reason or "canceled")

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

    def _publish(self, event: Publish) -> Decision:
        state = self.original.state
        if state is ReleaseState.PUBLISHING:
            return self._retry_publication(event)
        if state is not ReleaseState.STAGED:
            return self._refuse(f"only a staged release can be published; this one is {state}")
        if self.original.held:
            return self._refuse("the release is on hold; unhold it before publishing")
        final = next_final(event.highest_final_version, is_major=self.original.is_major)
        for service in self.tasks:
            self._send(
                service,
                Action.PUBLISH,
                event.now,
                self.timeouts.publish,
                task_state=TaskState.PUBLISHING,
                final_version=final,
            )
        return self._transition(
            ReleaseState.PUBLISHING,
            event.now,
            f"published by {event.operator} as {final}",
            final_version=final,
        )

    def _retry_publication(self, event: Publish) -> Decision:
        pending = [t.service for t in self.tasks.values() if t.state is TaskState.PUBLISHING]
        for service in pending:
            self._send(
                service, Action.PUBLISH, event.now, self.timeouts.publish, task_state=TaskState.PUBLISHING
            )
        return self._changed(event.now, f"publication retried by {event.operator} for: {_names(pending)}")

    def _operator_cancel(self, event: Cancel) -> Decision:
        state = self.original.state
        if state.is_terminal:
            return self._refuse(f"the release is already {state}")
        if state is ReleaseState.PUBLISHING:
            return self._refuse(
                "a publishing release cannot be canceled: some services may already be public; "
                "retry the publication instead (rc release publish)"
            )
        if state is ReleaseState.CANCELING:
            return self._refuse("the release is already being canceled")
        reason = f"canceled by {event.operator}: {event.reason}"
        if state is ReleaseState.WAITING:
            for service in self.tasks:
                self._set_task(service, TaskState.CANCELED, event.now, reason)
        return self._cancel_everything(event.now, reason)

    # ------------------------------------------------------------------ building blocks

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
        self.tasks[service] = task.model_copy(
            update={
                "state": task.state if task_state is None else task_state,
                "deadline_at": now + timeout,
                "entered": entered,
                "updated_at": now,
            }
        )
        info = self._release_info(final_version)
        command = Command(
            message_id=f"{info.id}.{action}.{service}.r{self.original.revision + 1}",
            release_id=info.id,
            service=service,
            sent_at=now,
            action=action,
            release=info,
            reason=reason,
        )
        self.outbox.append(
            OutboxEntry(
                message_id=command.message_id,
                exchange="commands",
                routing_key=self.topology.command_key(service, action),
                kind=MessageKind.COMMAND,
                body=encode(command).decode(),
            )
        )

    def _release_info(self, final_version: str | None) -> ReleaseInfo:
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


__all__ = [
    "DESCRIPTION_EDITABLE",
    "NOTES_EDITABLE",
    "OPERATOR_INPUTS",
    "STUDIES_EDITABLE",
    "Begin",
    "Cancel",
    "DeadlineCheck",
    "Decision",
    "Edit",
    "HealthVerdict",
    "Hold",
    "Input",
    "NoteChange",
    "NoteOperation",
    "ProgressReceived",
    "Publish",
    "ReplyReceived",
    "Timeouts",
    "Unhold",
    "Verdict",
    "awaiting_services",
    "decide",
    "edit_changes",
    "edit_refusal",
    "next_deadline",
    "note_refusal",
    "note_size",
    "notes_size",
    "with_note_change",
]
