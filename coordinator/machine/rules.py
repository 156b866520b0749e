"""The rules the steps follow: what each state waits for, what may change when, notes, deadlines."""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from pydantic_core import to_json

from coordinator.machine.inputs import Edit, NoteChange, NoteOperation
from schemas.documents import (
    MAX_NOTE_BYTES,
    MAX_NOTES,
    Note,
    Release,
    Task,
)
from schemas.enums import TERMINAL_RELEASE_STATES, Action, Outcome, ReleaseState, TaskState
from schemas.messages import (
    AddNote,
    EditNote,
    RemoveNote,
    TaskReply,
)

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


# --------------------------------------------------------------------------- edit rules

#: How many times ``start`` goes to a service whose instances keep dying before the release fails.
MAX_STARTS = 3

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


def _waiting_services(tasks: Iterable[Task], action: Action) -> list[str]:
    """The services of ``tasks`` that still owe an answer to ``action``: :func:`_is_awaiting` in one pass
    (it runs on every reply, over every task of the release)."""
    if action is Action.CANCEL:
        return [t.service for t in tasks if not t.state.is_final]
    awaiting = _AWAITING_TASK_STATE[action]
    return [t.service for t in tasks if t.state is awaiting]


def awaiting_services(release: Release) -> list[str]:
    """The services the release is waiting on in its current step."""
    awaited = _AWAITED_ACTION.get(release.state)
    return [] if awaited is None else [t.service for t in _awaiting(release, awaited)]


def _awaiting(release: Release, action: Action) -> Iterable[Task]:
    if action is Action.CANCEL:
        return (t for t in release.tasks.values() if not t.state.is_final)
    awaiting = _AWAITING_TASK_STATE[action]
    return (t for t in release.tasks.values() if t.state is awaiting)


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


#: How many services a reason that is written on every reply names (the rest are counted).
NAMED_IN_PASSING = 5


def _some_names(services: Collection[str], limit: int = NAMED_IN_PASSING) -> str:
    """The first ``limit`` services by name and how many more: a reason written on every reply stays
    the same size whatever the number of services (all of them would make a step's audit trail grow as
    the square of that number)."""
    first = heapq.nsmallest(limit, services)
    more = len(services) - len(first)
    return ", ".join(first) + (f" and {more} more" if more else "")


def told_to_discard(release: ReleaseState, task: Task) -> bool:
    """Whether the service, which was sent ``start``, was told to discard what it staged for the release:
    a cancel went to it (the release is being or was canceled, or it failed before publication, which
    cancels the running tasks)."""
    if task.starts == 0:
        return False
    if release in (ReleaseState.CANCELING, ReleaseState.CANCELED):
        return True
    return release is ReleaseState.FAILED and task.state is TaskState.CANCELED


def waiting_for_a_slot(
    release: ReleaseState, tasks: Mapping[str, Task], services: Sequence[str], busy: Collection[str]
) -> bool:
    """The commands awaited from ``services`` still wait in their queues because every instance of each is
    ``busy``: an instance whose process slots are all taken consumes nothing from its service's queue.

    ``initialize`` and ``publish`` wait there like any command; a ``start`` waits only as long as no
    instance has taken it (none reported progress). A ``cancel`` is not counted: it reaches the instance
    that processes the release through that instance's own control queue."""
    if not all(service in busy for service in services):
        return False
    if release is ReleaseState.RUNNING:
        return all(tasks[service].instance is None for service in services)
    return release in (ReleaseState.INITIALIZING, ReleaseState.PUBLISHING)
