"""Every message on the broker (docs/design.md, section 3), all sharing one envelope.

Bodies are JSON. Use :func:`decode` to turn raw bytes into a message: it refuses oversize bodies,
invalid JSON, unknown fields, wrong types and unknown kinds with a :class:`MessageError` whose
text says what is wrong.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeVar

from pydantic import Field, StringConstraints, ValidationError, model_validator

from schemas._base import (
    MessageId,
    ReleaseId,
    ServiceName,
    ShortText,
    StrictModel,
    StudyId,
    Tag,
    Version,
)
from schemas.documents import (
    MAX_NOTE_BYTES,
    NOTE_ID_PATTERN,
    AuditEvent,
    Note,
    ReleaseBrief,
    ReleaseView,
    ServiceRecord,
    StudySummary,
)
from schemas.enums import OUTCOMES_BY_ACTION, Action, EventKind, MessageKind, Outcome, ReleaseState

SCHEMA_VERSION: Literal[1] = 1
#: Bodies larger than this are refused before they are parsed.
MAX_BODY_BYTES = 256 * 1024


class Envelope(StrictModel):
    """The fields every message carries."""

    message_id: MessageId
    kind: MessageKind
    schema_version: Literal[1] = SCHEMA_VERSION
    release_id: ReleaseId | None = None
    service: ServiceName | None = None
    sent_at: datetime


# --------------------------------------------------------------------------- coordinator -> service


class ReleaseInfo(StrictModel):
    """What a task service is told about a release."""

    id: ReleaseId
    name: str
    description: str = ""
    studies: tuple[StudyId, ...] = Field(min_length=1)
    tags: tuple[Tag, ...] = ()
    author: str = "unknown"
    is_major: bool = False
    tentative_version: Version
    final_version: Version | None = None

    @property
    def version(self) -> str:
        return self.final_version or self.tentative_version


class Command(Envelope):
    """``task.<service>.<action>`` on ``rc.commands``: do one step of a release."""

    kind: Literal[MessageKind.COMMAND] = MessageKind.COMMAND
    release_id: ReleaseId
    service: ServiceName
    action: Action
    release: ReleaseInfo
    reason: ShortText | None = None

    @model_validator(mode="after")
    def _release_matches(self) -> Command:
        if self.release.id != self.release_id:
            raise ValueError("release.id must equal release_id")
        return self


# --------------------------------------------------------------------------- service -> coordinator


class TaskReply(Envelope):
    """``reply.<service>.reply``: the outcome of one command."""

    kind: Literal[MessageKind.REPLY] = MessageKind.REPLY
    release_id: ReleaseId
    service: ServiceName
    in_reply_to: MessageId
    action: Action
    outcome: Outcome
    reason: ShortText | None = None
    instance_id: str = Field(min_length=1, max_length=200)
    sdk_version: str = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _outcome_fits_action(self) -> TaskReply:
        allowed = OUTCOMES_BY_ACTION[self.action]
        if self.outcome not in allowed:
            names = ", ".join(sorted(allowed))
            raise ValueError(
                f"outcome {self.outcome.value!r} is not an answer to {self.action.value!r} ({names})"
            )
        return self


class Progress(Envelope):
    """``reply.<service>.progress``: how far processing is; also keeps the step's deadline alive."""

    kind: Literal[MessageKind.PROGRESS] = MessageKind.PROGRESS
    release_id: ReleaseId
    service: ServiceName
    in_reply_to: MessageId
    percent: float = Field(ge=0, le=100)
    note: ShortText | None = None
    instance_id: str = Field(min_length=1, max_length=200)


#: How a heartbeat's ``detail`` starts when the instance is healthy but every process slot is busy: it then
#: consumes nothing from its service's queue (so that an idle instance takes the work), on purpose.
BUSY_DETAIL = "every process slot is busy"


class Heartbeat(Envelope):
    """``reply.<service>.heartbeat``: the service instance is alive and consuming."""

    kind: Literal[MessageKind.HEARTBEAT] = MessageKind.HEARTBEAT
    service: ServiceName
    instance_id: str = Field(min_length=1, max_length=200)
    sdk_version: str = Field(min_length=1, max_length=50)
    healthy: bool = True
    detail: ShortText | None = None
    active_releases: tuple[ReleaseId, ...] = ()


# --------------------------------------------------------------------------- operator <-> coordinator

ReleaseName = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class CreateRelease(StrictModel):
    op: Literal["create"] = "create"
    name: ReleaseName
    studies: tuple[StudyId, ...] = Field(min_length=1)
    description: str = Field(default="", max_length=10_000)
    tags: tuple[Tag, ...] = ()
    is_major: bool = False


Description = Annotated[str, StringConstraints(max_length=10_000)]
NoteText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NOTE_BYTES)]
NoteId = Annotated[str, StringConstraints(pattern=NOTE_ID_PATTERN)]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=300)]
PageSize = Annotated[int, Field(ge=1, le=500)]


class ListReleases(StrictModel):
    """Releases newest first; optionally only those in ``state``, with ``study``, created since ``since``."""

    op: Literal["list"] = "list"
    state: ReleaseState | None = None
    study: StudyId | None = None
    since: datetime | None = None
    limit: PageSize = 50
    #: The ``next_cursor`` of the previous page.
    cursor: Cursor | None = None


class EditRelease(StrictModel):
    """Change what describes a release. Name, description and tags may change until publication starts;
    studies and the classification only until initialization ends. Fields left out stay as they are."""

    op: Literal["edit"] = "edit"
    release_id: ReleaseId
    name: ReleaseName | None = None
    description: Description | None = None
    tags: tuple[Tag, ...] | None = None
    studies: Annotated[tuple[StudyId, ...], Field(min_length=1)] | None = None
    is_major: bool | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> EditRelease:
        fields = (self.name, self.description, self.tags, self.studies, self.is_major)
        if all(value is None for value in fields):
            raise ValueError("give at least one of name, description, tags, studies, is_major")
        return self


class RerunRelease(StrictModel):
    """Create a new release with the name, description, studies, tags and classification of an ended one."""

    op: Literal["rerun"] = "rerun"
    release_id: ReleaseId


class ListEvents(StrictModel):
    """A release's audit trail, newest first."""

    op: Literal["events"] = "events"
    release_id: ReleaseId
    #: Only events that moved the release into this state.
    state: ReleaseState | None = None
    kind: EventKind | None = None
    since: datetime | None = None
    limit: PageSize = 50
    cursor: Cursor | None = None


class AddNote(StrictModel):
    """A markdown note on a release, or on one of its studies."""

    op: Literal["note_add"] = "note_add"
    release_id: ReleaseId
    study: StudyId | None = None
    text: NoteText


class EditNote(StrictModel):
    op: Literal["note_edit"] = "note_edit"
    release_id: ReleaseId
    note_id: NoteId
    text: NoteText


class RemoveNote(StrictModel):
    op: Literal["note_remove"] = "note_remove"
    release_id: ReleaseId
    note_id: NoteId


class ListNotes(StrictModel):
    """A release's notes, newest first."""

    op: Literal["notes"] = "notes"
    release_id: ReleaseId
    study: StudyId | None = None
    since: datetime | None = None
    limit: PageSize = 50
    cursor: Cursor | None = None


class ListStudies(StrictModel):
    """Every study ever released, the one whose latest release is newest first."""

    op: Literal["studies"] = "studies"
    #: Only studies whose id starts with this.
    study: StudyId | None = None
    #: Only studies whose latest release is in this state.
    state: ReleaseState | None = None
    #: Only studies whose latest release was created since.
    since: datetime | None = None
    limit: PageSize = 50
    cursor: Cursor | None = None


class ShowStudy(StrictModel):
    """One study: its latest and last published release, and its releases newest first."""

    op: Literal["study"] = "study"
    study: StudyId
    state: ReleaseState | None = None
    since: datetime | None = None
    limit: PageSize = 20
    cursor: Cursor | None = None


class ShowRelease(StrictModel):
    op: Literal["show"] = "show"
    release_id: ReleaseId
    events: int = Field(default=20, ge=0, le=500)


class HoldRelease(StrictModel):
    op: Literal["hold"] = "hold"
    release_id: ReleaseId


class UnholdRelease(StrictModel):
    op: Literal["unhold"] = "unhold"
    release_id: ReleaseId


class PublishRelease(StrictModel):
    op: Literal["publish"] = "publish"
    release_id: ReleaseId


class CancelRelease(StrictModel):
    op: Literal["cancel"] = "cancel"
    release_id: ReleaseId
    reason: ShortText = Field(min_length=1)


class ListServices(StrictModel):
    op: Literal["services"] = "services"


class RequireService(StrictModel):
    op: Literal["require"] = "require"
    service: ServiceName


class UnrequireService(StrictModel):
    op: Literal["unrequire"] = "unrequire"
    service: ServiceName


AdminOperation = Annotated[
    CreateRelease
    | ListReleases
    | ShowRelease
    | HoldRelease
    | UnholdRelease
    | PublishRelease
    | CancelRelease
    | ListServices
    | RequireService
    | UnrequireService
    | EditRelease
    | RerunRelease
    | ListEvents
    | AddNote
    | EditNote
    | RemoveNote
    | ListNotes
    | ListStudies
    | ShowStudy,
    Field(discriminator="op"),
]


class AdminRequest(Envelope):
    """On ``rc.admin``; the answer goes to the request's ``reply_to`` with its ``correlation_id``."""

    kind: Literal[MessageKind.ADMIN_REQUEST] = MessageKind.ADMIN_REQUEST
    operator: str = Field(min_length=1, max_length=200)
    operation: AdminOperation


class ReleaseResult(StrictModel):
    result_type: Literal["release"] = "release"
    release: ReleaseView
    events: tuple[AuditEvent, ...] = ()


class ReleasePage(StrictModel):
    result_type: Literal["releases"] = "releases"
    releases: tuple[ReleaseView, ...]
    next_cursor: str | None = None


class ServiceList(StrictModel):
    result_type: Literal["services"] = "services"
    services: tuple[ServiceRecord, ...]


class EventPage(StrictModel):
    result_type: Literal["events"] = "events"
    release_id: ReleaseId
    #: The release's state when the page was read (``--follow`` stops once it is final).
    release_state: ReleaseState
    #: Newest first.
    events: tuple[AuditEvent, ...]
    next_cursor: str | None = None


class NotePage(StrictModel):
    result_type: Literal["notes"] = "notes"
    release_id: ReleaseId
    #: Newest first.
    notes: tuple[Note, ...]
    next_cursor: str | None = None


class StudyPage(StrictModel):
    result_type: Literal["studies"] = "studies"
    studies: tuple[StudySummary, ...]
    next_cursor: str | None = None


class StudyResult(StrictModel):
    result_type: Literal["study"] = "study"
    study: StudySummary
    #: The releases that included the study, newest first.
    releases: tuple[ReleaseBrief, ...]
    next_cursor: str | None = None


AdminResult = Annotated[
    ReleaseResult | ReleasePage | ServiceList | EventPage | NotePage | StudyPage | StudyResult,
    Field(discriminator="result_type"),
]


class AdminAnswer(Envelope):
    """Either ``ok`` with a result, or a refusal with the reason in ``error``."""

    kind: Literal[MessageKind.ADMIN_ANSWER] = MessageKind.ADMIN_ANSWER
    in_reply_to: MessageId
    ok: bool
    error: ShortText | None = None
    result: AdminResult | None = None

    @model_validator(mode="after")
    def _error_iff_refused(self) -> AdminAnswer:
        if self.ok == (self.error is not None):
            raise ValueError("an answer has an error exactly when it is not ok")
        return self


# --------------------------------------------------------------------------- coordinator -> listeners


class Announcement(Envelope):
    """``release.<state>`` on ``rc.events``: a release changed state."""

    kind: Literal[MessageKind.ANNOUNCEMENT] = MessageKind.ANNOUNCEMENT
    release_id: ReleaseId
    state: ReleaseState
    release: ReleaseView


Message = Command | TaskReply | Progress | Heartbeat | AdminRequest | AdminAnswer | Announcement
AnyMessage = Annotated[Message, Field(discriminator="kind")]

MESSAGE_TYPES: dict[MessageKind, type[Envelope]] = {
    MessageKind.COMMAND: Command,
    MessageKind.REPLY: TaskReply,
    MessageKind.PROGRESS: Progress,
    MessageKind.HEARTBEAT: Heartbeat,
    MessageKind.ADMIN_REQUEST: AdminRequest,
    MessageKind.ADMIN_ANSWER: AdminAnswer,
    MessageKind.ANNOUNCEMENT: Announcement,
}


class MessageError(ValueError):
    """A message that cannot be accepted; ``reason`` is one line fit for a dead-letter header."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


M = TypeVar("M", bound=Envelope)


def decode(body: bytes, expected: type[M]) -> M:
    """Parse ``body`` as a message of type ``expected`` or raise :class:`MessageError` saying why."""
    if len(body) > MAX_BODY_BYTES:
        raise MessageError(f"oversize: {len(body)} bytes, the limit is {MAX_BODY_BYTES}")
    try:
        return expected.model_validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error, expected)) from None


def decode_any(body: bytes, allowed: tuple[type[Envelope], ...]) -> Envelope:
    """Parse ``body`` as whichever of ``allowed`` its ``kind`` names."""
    if len(body) > MAX_BODY_BYTES:
        raise MessageError(f"oversize: {len(body)} bytes, the limit is {MAX_BODY_BYTES}")
    try:
        head = _KindOnly.model_validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error, _KindOnly)) from None
    target = MESSAGE_TYPES[head.kind]
    if target not in allowed:
        names = ", ".join(t.__name__ for t in allowed)
        raise MessageError(f"unexpected kind {head.kind.value!r} here (expected {names})")
    return decode(body, target)


class _KindOnly(StrictModel):
    model_config = StrictModel.model_config | {"extra": "ignore"}
    kind: MessageKind


def encode(message: Envelope) -> bytes:
    return message.model_dump_json().encode()


def _describe(error: ValidationError, model: type[object]) -> str:
    problems = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        problems.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 5} more)" if error.error_count() > 5 else ""
    if error.errors()[0]["type"] == "json_invalid":
        return f"invalid JSON: {error.errors()[0]['msg']}"
    return f"invalid {model.__name__}: " + "; ".join(problems) + more
