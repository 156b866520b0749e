"""The release state machine: pure, no I/O, no clock reads, no randomness.

``decide(release, event, timeouts)`` returns a :class:`Decision`: the new release document
(revision + 1, with the messages the transition causes appended to its outbox), or the
unchanged document and the reason nothing happened (a duplicate, a stale message, or an
operator command that is refused). The coordinator stores the new document with a
compare-and-set on the old state and revision, then publishes the outbox.

Message ids are derived from the release id, the step and the new revision, so a replayed
outbox sends the very same ids and services can deduplicate by message id.
"""

from coordinator.machine.decision import Decision, Verdict
from coordinator.machine.inputs import (
    OPERATOR_INPUTS,
    Begin,
    Cancel,
    DeadlineCheck,
    Edit,
    HealthVerdict,
    Hold,
    Input,
    InstanceLost,
    NoteChange,
    NoteOperation,
    OperatorInput,
    ProgressReceived,
    Publish,
    ReplyReceived,
    Timeouts,
    Unhold,
)
from coordinator.machine.rules import (
    DESCRIPTION_EDITABLE,
    MAX_STARTS,
    NOTES_EDITABLE,
    STUDIES_EDITABLE,
    awaiting_services,
    edit_changes,
    edit_refusal,
    next_deadline,
    note_refusal,
    note_size,
    notes_size,
    with_note_change,
)
from coordinator.machine.step import decide

__all__ = [
    "DESCRIPTION_EDITABLE",
    "MAX_STARTS",
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
    "InstanceLost",
    "NoteChange",
    "NoteOperation",
    "OperatorInput",
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
