"""Documents the coordinator stores (releases, the audit trail, the service registry).

The coordinator is the only writer. Documents are immutable values: the state machine returns
new ones, and the store writes them with a compare-and-set on ``state`` and ``revision``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from schemas._base import DocumentModel, MessageId, ReleaseId, ServiceName, StudyId, Tag, Version
from schemas.enums import Action, EventKind, MessageKind, Outcome, ReleaseState, TaskState


class Task(DocumentModel):
    """One required service's part in one release."""

    service: ServiceName
    state: TaskState = TaskState.WAITING
    progress: float = Field(default=0.0, ge=0, le=100)
    last_message: str | None = None
    last_message_id: str | None = None
    #: The answer recorded for each action: the key of reply deduplication.
    answers: dict[Action, Outcome] = Field(default_factory=dict)
    #: When the task entered each state it has been in.
    entered: dict[TaskState, datetime] = Field(default_factory=dict)
    #: The task must be heard from before this moment, or the step times out.
    deadline_at: datetime | None = None
    #: The instance of the service processing it, as its progress reports say (while running).
    instance: str | None = Field(default=None, max_length=200)
    #: How many times ``start`` was sent (again when the instance processing it stopped).
    starts: int = Field(default=0, ge=0)
    #: When ``start`` is to be sent again: the instance processing the task stopped, and the next attempt
    #: waits for its backoff (``None`` when no attempt is waiting).
    resend_at: datetime | None = None
    updated_at: datetime | None = None


class OutboxEntry(DocumentModel):
    """A message a transition caused, stored with it, removed once the broker confirmed it."""

    message_id: MessageId
    exchange: Literal["commands", "events"]
    routing_key: str
    kind: MessageKind
    body: str


class AuditEvent(DocumentModel):
    """One entry of the append-only audit trail."""

    id: str = Field(min_length=1, max_length=200)
    release_id: ReleaseId | None
    at: datetime
    kind: EventKind
    reason: str
    service: ServiceName | None = None
    message_id: str | None = None
    state_before: ReleaseState | None = None
    state_after: ReleaseState | None = None
    #: Who caused it: the broker user that sent the message (a service's, an operator's), or
    #: ``coordinator`` for what the coordinator did by itself.
    actor: str = "coordinator"
    #: The name an operator gave for themselves (``RC_OPERATOR``), beside the broker user: a label only.
    label: str | None = Field(default=None, max_length=200)


#: A note's id: ``N`` and its number in the release (numbers are never reused).
NOTE_ID_PATTERN = r"^N[1-9][0-9]{0,5}$"
#: The largest note, in UTF-8 bytes.
MAX_NOTE_BYTES = 64 * 1024
#: The most all notes of one release may take, JSON-encoded (they travel in every announcement).
MAX_NOTES_TOTAL_BYTES = 128 * 1024
#: The most notes one release may have.
MAX_NOTES = 100


class Note(DocumentModel):
    """A release note in markdown, about the whole release or about one of its studies."""

    id: str = Field(pattern=NOTE_ID_PATTERN)
    #: The study it is about, or ``None`` for the whole release.
    study: StudyId | None = None
    text: str = Field(min_length=1, max_length=MAX_NOTE_BYTES)
    author: str = Field(default="unknown", max_length=200)
    created_at: datetime
    updated_at: datetime


class Release(DocumentModel):
    id: ReleaseId
    #: Creation order: the release with the highest ``seq`` is "the last created release".
    seq: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=10_000)
    studies: tuple[StudyId, ...] = Field(min_length=1)
    tags: tuple[Tag, ...] = ()
    author: str = Field(default="unknown", max_length=200)
    is_major: bool = False
    tentative_version: Version
    final_version: Version | None = None
    state: ReleaseState = ReleaseState.WAITING
    #: Why the release is in its state (rejection, failure, cancel reason), if there is a reason.
    state_reason: str | None = None
    held: bool = False
    #: The required services, snapshotted at creation, keyed by service name.
    tasks: dict[ServiceName, Task]
    #: When the release entered each state it has been in.
    entered: dict[ReleaseState, datetime] = Field(default_factory=dict)
    #: Messages this release's transitions caused that the broker has not confirmed yet.
    outbox: tuple[OutboxEntry, ...] = ()
    revision: int = 0
    created_at: datetime
    updated_at: datetime
    #: Release notes, oldest first.
    notes: tuple[Note, ...] = ()
    #: The number the next note gets (note ids are never reused, even after a removal).
    next_note: int = Field(default=1, ge=1)
    #: The release this one re-runs (``rc release rerun``), if any.
    rerun_of: ReleaseId | None = None

    @property
    def version(self) -> str:
        """The version people should call this release by: the final one once assigned."""
        return self.final_version or self.tentative_version


class ServiceRecord(DocumentModel):
    """The registry entry of one task service."""

    name: ServiceName
    required: bool = False
    last_heartbeat_at: datetime | None = None
    healthy: bool = True
    health_detail: str | None = None
    #: Instance id -> when it was last heard from.
    instances: dict[str, datetime] = Field(default_factory=dict)
    sdk_version: str | None = None
    registered_at: datetime | None = None


class ReleaseView(DocumentModel):
    """What operators, services and listeners are shown of a release (no outbox, no revision)."""

    id: ReleaseId
    name: str
    description: str
    studies: tuple[StudyId, ...]
    tags: tuple[Tag, ...]
    author: str
    is_major: bool
    version: Version
    tentative_version: Version
    final_version: Version | None
    state: ReleaseState
    state_reason: str | None
    held: bool
    tasks: dict[ServiceName, Task]
    entered: dict[ReleaseState, datetime]
    created_at: datetime
    updated_at: datetime
    #: The release notes, oldest first; empty in list pages (see ``note_count``).
    notes: tuple[Note, ...] = ()
    note_count: int = 0
    rerun_of: ReleaseId | None = None

    @classmethod
    def of(cls, release: Release) -> ReleaseView:
        """The view of ``release``, its notes included."""
        return cls._made(release, release.notes, len(release.notes))

    @classmethod
    def listed(cls, release: Release, note_count: int) -> ReleaseView:
        """The view of ``release`` in a list page: its notes left out, ``note_count`` of them (a store
        reads a listed release without its notes, and counts them)."""
        return cls._made(release, (), note_count)

    @classmethod
    def _made(cls, release: Release, notes: tuple[Note, ...], note_count: int) -> ReleaseView:
        """Every value comes from ``release``, a validated document whose fields have the very types and
        checks of the view's (``_same_types``, at import): the view is built without validating them again
        (no dump and re-validation of every task, note and version)."""
        fields = {name: getattr(release, name) for name in _VIEW_FROM_RELEASE}
        return cls.model_construct(**fields, version=release.version, notes=notes, note_count=note_count)


#: The fields a view copies from its release as they are (all but ``version``, ``notes`` and ``note_count``).
_VIEW_FROM_RELEASE = tuple(
    name for name in ReleaseView.model_fields if name not in ("version", "notes", "note_count")
)


def _same_types(view: type[DocumentModel], document: type[DocumentModel], names: tuple[str, ...]) -> None:
    """Refuse, at import, a view field that its document lacks, types otherwise, or checks less than the
    view does (the view would take from the document values that the view's own checks refuse)."""
    for name in names:
        field, shown = document.model_fields.get(name), view.model_fields[name]
        if (
            field is None
            or field.annotation != shown.annotation
            or any(rule not in field.metadata for rule in shown.metadata)
        ):
            raise TypeError(f"{view.__name__}.{name} is not {document.__name__}.{name} (ReleaseView._made)")


_same_types(ReleaseView, Release, _VIEW_FROM_RELEASE)


class ReleaseBrief(DocumentModel):
    """One release in a per-study listing."""

    id: ReleaseId
    name: str
    state: ReleaseState
    version: Version
    final_version: Version | None = None
    is_major: bool = False
    created_at: datetime
    #: When it entered ``published`` (``None`` if it is not published).
    published_at: datetime | None = None


class StudySummary(DocumentModel):
    """A study across releases: the latest release it was part of, and its last published release."""

    study: StudyId
    #: How many releases included it.
    release_count: int = Field(ge=0)
    latest: ReleaseBrief
    #: The published release with the highest final version that included the study.
    last_published: ReleaseBrief | None = None


__all__ = [
    "MAX_NOTES",
    "MAX_NOTES_TOTAL_BYTES",
    "MAX_NOTE_BYTES",
    "NOTE_ID_PATTERN",
    "AuditEvent",
    "MessageId",
    "Note",
    "OutboxEntry",
    "Release",
    "ReleaseBrief",
    "ReleaseView",
    "ServiceRecord",
    "StudySummary",
    "Task",
]
