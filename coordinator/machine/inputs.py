"""What the state machine is given: the inputs it decides on, and the time limits of each step."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.enums import Action
from schemas.messages import (
    AddNote,
    EditNote,
    Progress,
    RemoveNote,
    TaskReply,
)

# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long each step may wait for a service. Processing is an *inactivity* limit:
    every progress message from a service moves that service's deadline forward."""

    initialize: timedelta = timedelta(seconds=60)
    process: timedelta = timedelta(minutes=10)
    publish: timedelta = timedelta(minutes=5)
    cancel: timedelta = timedelta(minutes=2)

    def awaiting(self, action: Action) -> timedelta:
        """How long a service may take to answer ``action`` (for ``start``: between two progress reports)."""
        return {
            Action.INITIALIZE: self.initialize,
            Action.START: self.process,
            Action.PUBLISH: self.publish,
            Action.CANCEL: self.cancel,
        }[action]


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
class InstanceLost:
    """The instance processing a service's task stopped heartbeating: its work must go to another."""

    now: datetime
    service: str
    instance_id: str
    why: str


@dataclass(frozen=True, slots=True)
class DeadlineCheck:
    now: datetime
    #: Services whose live instances report every process slot busy: a ``start`` none has taken yet waits
    #: in their queue for a free slot, and its deadline is moved on instead of failing the release.
    busy: frozenset[str] = frozenset()


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
    | InstanceLost
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
