"""The audit trail's entries, built in one place: who or what caused each, and why."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from coordinator.machine import OPERATOR_INPUTS, Decision, Input, ProgressReceived, ReplyReceived
from schemas.documents import AuditEvent
from schemas.enums import EventKind, ReleaseState

#: The actor of what the coordinator does by itself (deadlines, health checks).
COORDINATOR = "coordinator"


def audit_event(
    release_id: str | None,
    kind: EventKind,
    reason: str,
    *,
    at: datetime,
    actor: str = COORDINATOR,
    label: str | None = None,
    event_id: str | None = None,
    service: str | None = None,
    message_id: str | None = None,
    state_before: ReleaseState | None = None,
    state_after: ReleaseState | None = None,
) -> AuditEvent:
    """One entry; its id is random unless given (a given id makes recording it again harmless)."""
    return AuditEvent(
        id=event_id or uuid.uuid4().hex,
        release_id=release_id,
        at=at,
        kind=kind,
        reason=reason,
        service=service,
        message_id=message_id,
        state_before=state_before,
        state_after=state_after,
        actor=actor,
        label=label,
    )


@dataclass(frozen=True, slots=True)
class Cause:
    """An input to the state machine and who sent it: a broker user (or ``coordinator``), the name an
    operator gave, and the id of the operator's request (kept on the audit event: a request redelivered
    by the broker is recognized by it)."""

    input: Input
    actor: str = COORDINATOR
    label: str | None = None
    request_id: str | None = None


def of_decision(before: ReleaseState, decision: Decision, cause: Cause) -> AuditEvent:
    """The entry of an applied decision, stored with it; its id is the release's new revision."""
    after = decision.release
    if before is not after.state:
        kind = EventKind.TRANSITION
    elif isinstance(cause.input, OPERATOR_INPUTS):
        kind = EventKind.OPERATOR
    else:
        kind = EventKind.ACCEPTED
    return audit_event(
        after.id,
        kind,
        decision.reason,
        at=after.updated_at,
        actor=cause.actor,
        label=cause.label,
        event_id=f"{after.id}.r{after.revision}",
        service=service_of(cause.input),
        message_id=cause.request_id or message_id_of(cause.input),
        state_before=before,
        state_after=after.state,
    )


def service_of(cause: Input) -> str | None:
    if isinstance(cause, ReplyReceived):
        return cause.reply.service
    if isinstance(cause, ProgressReceived):
        return cause.progress.service
    return None


def message_id_of(cause: Input) -> str | None:
    if isinstance(cause, ReplyReceived):
        return cause.reply.message_id
    if isinstance(cause, ProgressReceived):
        return cause.progress.message_id
    return None
