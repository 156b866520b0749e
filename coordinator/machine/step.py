"""One decision in the making: :func:`decide` applies one input to one release."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.machine.decision import Decision, Verdict
from coordinator.machine.draft import _Draft
from coordinator.machine.inputs import (
    Begin,
    Cancel,
    DeadlineCheck,
    Edit,
    HealthVerdict,
    Hold,
    Input,
    InstanceLost,
    NoteChange,
    OperatorInput,
    ProgressReceived,
    Publish,
    ReplyReceived,
    Timeouts,
    Unhold,
)
from coordinator.machine.rules import (
    _AWAITED_ACTION,
    _TASK_STATE_BY_OUTCOME,
    MAX_STARTS,
    _awaiting,
    _confirms_cancel,
    _describe_changes,
    _is_awaiting,
    _names,
    _seconds,
    _some_names,
    _waiting_services,
    edit_changes,
    edit_refusal,
    note_refusal,
    notes_size,
    told_to_discard,
    waiting_for_a_slot,
    with_note_change,
)
from coordinator.versioning import next_final
from schemas.documents import MAX_NOTES_TOTAL_BYTES, Release
from schemas.enums import SUCCESS_BY_ACTION, Action, Outcome, ReleaseState, TaskState
from schemas.messages import TaskReply
from schemas.topology import Topology


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
        case InstanceLost():
            return step.instance_lost(event)
        case DeadlineCheck():
            return step.deadline(event)
        case Hold() | Unhold() | Publish() | Cancel():
            return step.operator(event)
        case Edit():
            return step.edit(event)
        case NoteChange():
            return step.note(event)


@dataclass(slots=True)
class _Step(_Draft):
    """One decision in the making: the rules of each input, on a :class:`_Draft`."""

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
        if reply.outcome is SUCCESS_BY_ACTION[reply.action]:
            return self._advance_if_all_answered(event.now)
        return self._setback(reply, event.now)

    def progress(self, event: ProgressReceived) -> Decision:
        progress = event.progress
        task = self.tasks.get(progress.service)
        if task is None:
            return self._unchanged(
                Verdict.REFUSED, f"{progress.service} is not a required service of this release"
            )
        if progress.instance_id != task.instance and told_to_discard(self.original.state, task):
            why = f"{progress.service} instance {progress.instance_id} is processing a release that is"
            reason = f"{why} {self.original.state}: cancel sent to that instance"
            cancel = self._instance_cancel(progress.service, progress.instance_id, event.now, reason)
            return Decision(Verdict.STALE, self.original, reason, unstored=(cancel,))
        if self.original.state is not ReleaseState.RUNNING or task.state is not TaskState.RUNNING:
            return self._unchanged(
                Verdict.STALE, f"progress from {progress.service} while release is {self.original.state}"
            )
        self.tasks[progress.service] = task.model_copy(
            update={
                "instance": progress.instance_id,
                "progress": progress.percent,
                "last_message": progress.note if progress.note is not None else task.last_message,
                "last_message_id": progress.message_id,
                "deadline_at": event.now + self.timeouts.process,
                "updated_at": event.now,
            }
        )
        return self._changed(event.now, f"{progress.service} at {progress.percent:g}%")

    def instance_lost(self, event: InstanceLost) -> Decision:
        """Send ``start`` again (to whichever instance takes it) when the one processing stopped; fail the
        release once the service has lost :data:`MAX_STARTS` instances on it."""
        task = self.tasks.get(event.service)
        lost = f"instance {event.instance_id} of {event.service} {event.why}"
        if (
            task is None
            or self.original.state is not ReleaseState.RUNNING
            or task.state is not TaskState.RUNNING
            or task.instance != event.instance_id
        ):
            return self._unchanged(Verdict.STALE, f"{lost}, but it is not processing this release")
        if task.starts >= MAX_STARTS:
            why = f"{event.service} lost {task.starts} instances while processing (the last: {lost})"
            return self._fail(event.now, f"{why}: check its logs")
        self._send(
            event.service, Action.START, event.now, self.timeouts.process, task_state=TaskState.RUNNING
        )
        attempt = f"attempt {task.starts + 1} of {MAX_STARTS}"
        return self._changed(event.now, f"start sent again to {event.service} ({attempt}): {lost}")

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
        if waiting_for_a_slot(state, self.tasks, silent, event.busy):
            return self._wait_longer(silent, awaited, event.now)
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

    def _wait_longer(self, services: Sequence[str], awaited: Action, now: datetime) -> Decision:
        """Move the deadline of ``services`` on by their step's limit: their ``awaited`` command waits in
        the queue for an instance with a free process slot, nobody has had it yet."""
        limit = self.timeouts.awaiting(awaited)
        for service in services:
            self.tasks[service] = self.tasks[service].model_copy(
                update={"deadline_at": now + limit, "updated_at": now}
            )
        why = f"{awaited} still waiting in the queue of {_names(services)}: every instance is busy"
        return self._changed(now, f"{why} (deadline moved on by {_seconds(limit)})")

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
        waiting = _waiting_services(self.tasks.values(), _AWAITED_ACTION[state])
        if waiting:
            return self._changed(now, f"waiting on {len(waiting)} service(s): {_some_names(waiting)}")
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
