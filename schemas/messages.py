"""Every message on the broker (docs/design.md, section 3), all sharing one envelope.

Bodies are JSON. Use :func:`decode` to turn raw bytes into a message: it refuses oversize bodies,
invalid JSON, unknown fields, wrong types and unknown kinds with a :class:`MessageError` whose
text says what is wrong.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Literal, TypeVar, Union

from pydantic import Field, SerializeAsAny, TypeAdapter, ValidationError, model_validator

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
    AuditEvent,
    Note,
    ReleaseBrief,
    ReleaseView,
    ServiceRecord,
    StudySummary,
)
from schemas.enums import OUTCOMES_BY_ACTION, Action, MessageKind, Outcome, ReleaseState
from schemas.operations import (
    AddNote as AddNote,
)
from schemas.operations import (
    AdminOperation as AdminOperation,
)
from schemas.operations import (
    CancelRelease as CancelRelease,
)
from schemas.operations import (
    CreateRelease as CreateRelease,
)
from schemas.operations import (
    Cursor as Cursor,
)
from schemas.operations import (
    Description as Description,
)
from schemas.operations import (
    EditNote as EditNote,
)
from schemas.operations import (
    EditRelease as EditRelease,
)
from schemas.operations import (
    HoldRelease as HoldRelease,
)
from schemas.operations import (
    ListEvents as ListEvents,
)
from schemas.operations import (
    ListNotes as ListNotes,
)
from schemas.operations import (
    ListReleases as ListReleases,
)
from schemas.operations import (
    ListServices as ListServices,
)
from schemas.operations import (
    ListStudies as ListStudies,
)
from schemas.operations import (
    NoteId as NoteId,
)
from schemas.operations import (
    NoteText as NoteText,
)
from schemas.operations import (
    PageSize as PageSize,
)
from schemas.operations import (
    PublishRelease as PublishRelease,
)
from schemas.operations import (
    ReleaseName as ReleaseName,
)
from schemas.operations import (
    RemoveNote as RemoveNote,
)
from schemas.operations import (
    RequireService as RequireService,
)
from schemas.operations import (
    RerunRelease as RerunRelease,
)
from schemas.operations import (
    ShowRelease as ShowRelease,
)
from schemas.operations import (
    ShowStudy as ShowStudy,
)
from schemas.operations import (
    UnholdRelease as UnholdRelease,
)
from schemas.operations import (
    UnrequireService as UnrequireService,
)

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
    #: Serialized by the result's own type (its ``result_type`` says which): the same JSON as through the
    #: union, without the union serializer trying the page once more (twice the cost on a page of 50).
    result: SerializeAsAny[AdminResult] | None = None

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
        raise MessageError(_describe(error, expected.__name__)) from None


def decode_any(body: bytes, allowed: tuple[type[Envelope], ...]) -> Envelope:
    """Parse ``body`` as whichever of ``allowed`` its ``kind`` names, in one pass over the body: the
    ``kind`` picks the model as the JSON is read."""
    if len(body) > MAX_BODY_BYTES:
        raise MessageError(f"oversize: {len(body)} bytes, the limit is {MAX_BODY_BYTES}")
    try:
        return _union_of(allowed).validate_json(body)  # each model is strict itself
    except ValidationError as error:
        raise MessageError(_describe_any(error, allowed)) from None


@functools.cache
def _union_of(allowed: tuple[type[Envelope], ...]) -> TypeAdapter[Envelope]:
    """One validator of the union of ``allowed``, discriminated by ``kind``."""
    union = Union[allowed]  # type: ignore[valid-type]  # noqa: UP007 - the members are known only here
    return TypeAdapter(Annotated[union, Field(discriminator="kind")])


def _describe_any(error: ValidationError, allowed: tuple[type[Envelope], ...]) -> str:
    """The reason :func:`decode_any` gives: the kind that is missing or wrong, or what is wrong in the
    message of the kind it names."""
    first = error.errors(include_url=False)[0]
    if first["type"] == "union_tag_not_found":
        return "invalid message: kind: Field required"
    if first["type"] == "union_tag_invalid":
        tag = str((first.get("ctx") or {}).get("tag"))
        if tag not in _KIND_VALUES:
            return "invalid message: kind: Input should be " + _KINDS_IN_WORDS
        names = ", ".join(t.__name__ for t in allowed)
        return f"unexpected kind {tag!r} here (expected {names})"
    loc = first["loc"]
    if not loc:  # no kind was read: invalid JSON, or not an object
        return _describe(error, "message")
    return _describe(error, MESSAGE_TYPES[MessageKind(str(loc[0]))].__name__, strip=1)


_KIND_VALUES = [kind.value for kind in MessageKind]
_KINDS_IN_WORDS = ", ".join(repr(v) for v in _KIND_VALUES[:-1]) + f" or {_KIND_VALUES[-1]!r}"


def encode(message: Envelope) -> bytes:
    return message.model_dump_json().encode()


def _describe(error: ValidationError, name: str, *, strip: int = 0) -> str:
    """One line: what is wrong where (the first five problems), in the model called ``name``; ``strip``
    leading parts of each location are dropped (the tag a union adds)."""
    problems = []
    for item in error.errors(include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"][strip:]) or "body"
        problems.append(f"{where}: {item['msg']}")
    more = f" (+{error.error_count() - 5} more)" if error.error_count() > 5 else ""
    if error.errors()[0]["type"] == "json_invalid":
        return f"invalid JSON: {error.errors()[0]['msg']}"
    return f"invalid {name}: " + "; ".join(problems) + more
