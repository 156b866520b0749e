"""The closed vocabularies of the contract (docs/design.md, sections 3 and 5)."""

from __future__ import annotations

from enum import StrEnum


class Action(StrEnum):
    """What the coordinator tells a task service to do."""

    INITIALIZE = "initialize"
    START = "start"
    PUBLISH = "publish"
    CANCEL = "cancel"


class Outcome(StrEnum):
    """What a task service answers to a command."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    STAGED = "staged"
    PUBLISHED = "published"
    FAILED = "failed"
    CANCELED = "canceled"


#: The outcomes a service may answer to each action.
OUTCOMES_BY_ACTION: dict[Action, frozenset[Outcome]] = {
    Action.INITIALIZE: frozenset({Outcome.ACCEPTED, Outcome.REJECTED, Outcome.FAILED}),
    Action.START: frozenset({Outcome.STAGED, Outcome.FAILED, Outcome.CANCELED}),
    Action.PUBLISH: frozenset({Outcome.PUBLISHED, Outcome.FAILED}),
    Action.CANCEL: frozenset({Outcome.CANCELED, Outcome.FAILED}),
}


#: What a service answers to each action when it did it: success.
SUCCESS_BY_ACTION: dict[Action, Outcome] = {
    Action.INITIALIZE: Outcome.ACCEPTED,
    Action.START: Outcome.STAGED,
    Action.PUBLISH: Outcome.PUBLISHED,
    Action.CANCEL: Outcome.CANCELED,
}


class ReplyKind(StrEnum):
    """The last part of a reply's routing key ``reply.<service>.<kind>``."""

    REPLY = "reply"
    PROGRESS = "progress"
    HEARTBEAT = "heartbeat"


class MessageKind(StrEnum):
    """The AMQP ``type`` property and the envelope's ``kind``."""

    COMMAND = "command"
    REPLY = "reply"
    PROGRESS = "progress"
    HEARTBEAT = "heartbeat"
    ADMIN_REQUEST = "admin_request"
    ADMIN_ANSWER = "admin_answer"
    ANNOUNCEMENT = "announcement"


class ReleaseState(StrEnum):
    WAITING = "waiting"
    INITIALIZING = "initializing"
    RUNNING = "running"
    STAGED = "staged"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    CANCELING = "canceling"
    CANCELED = "canceled"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_RELEASE_STATES


TERMINAL_RELEASE_STATES = frozenset({ReleaseState.PUBLISHED, ReleaseState.CANCELED, ReleaseState.FAILED})

#: The states a release goes through, in order, when nothing goes wrong.
PUBLISHED_PATH = (
    ReleaseState.WAITING,
    ReleaseState.INITIALIZING,
    ReleaseState.RUNNING,
    ReleaseState.STAGED,
    ReleaseState.PUBLISHING,
    ReleaseState.PUBLISHED,
)


class TaskState(StrEnum):
    WAITING = "waiting"
    INITIALIZED = "initialized"
    RUNNING = "running"
    STAGED = "staged"
    PUBLISHING = "publishing"
    PUBLISHED = "published"
    REJECTED = "rejected"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        """A task in a final state is told nothing more about its release."""
        return self in {TaskState.REJECTED, TaskState.FAILED, TaskState.CANCELED, TaskState.PUBLISHED}


class EventKind(StrEnum):
    """What an entry of the append-only ``events`` collection records."""

    CREATED = "created"
    TRANSITION = "transition"
    ACCEPTED = "accepted"
    REFUSED = "refused"
    DEAD_LETTERED = "dead_lettered"
    OPERATOR = "operator"
