"""The decisions time makes: a deadline that passed, and the ``start`` sent again after an instance stopped
(with its backoff)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from coordinator.machine.decision import Decision, Verdict
from coordinator.machine.draft import _Draft
from coordinator.machine.inputs import DeadlineCheck, InstanceLost
from coordinator.machine.rules import (
    _AWAITED_ACTION,
    MAX_STARTS,
    _awaiting,
    _names,
    _seconds,
    waiting_for_a_slot,
)
from schemas.enums import Action, ReleaseState, TaskState


@dataclass(slots=True)
class _Timing(_Draft):
    """The rules of :class:`InstanceLost` and :class:`DeadlineCheck`, on a :class:`_Draft`."""

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
        attempt = f"attempt {task.starts + 1} of {MAX_STARTS}"
        wait = self.timeouts.retry_wait(task.starts)
        if not wait:
            self._send(
                event.service, Action.START, event.now, self.timeouts.process, task_state=TaskState.RUNNING
            )
            return self._changed(event.now, f"start sent again to {event.service} ({attempt}): {lost}")
        due = event.now + wait
        self.tasks[event.service] = task.model_copy(
            update={"instance": None, "resend_at": due, "deadline_at": due, "updated_at": event.now}
        )
        why = f"start to be sent again to {event.service} in {_seconds(wait)} ({attempt})"
        return self._changed(event.now, f"{why}: {lost}")

    def _resend_due_starts(self, now: datetime) -> Decision | None:
        """Send ``start`` again to the tasks whose backoff has passed (see :meth:`instance_lost`)."""
        due = [
            t.service
            for t in self.tasks.values()
            if t.state is TaskState.RUNNING and t.resend_at is not None and t.resend_at <= now
        ]
        if self.original.state is not ReleaseState.RUNNING or not due:
            return None
        for service in due:
            self._send(service, Action.START, now, self.timeouts.process, task_state=TaskState.RUNNING)
        attempts = ", ".join(f"{s} (attempt {self.tasks[s].starts} of {MAX_STARTS})" for s in due)
        return self._changed(now, f"start sent again to {attempts}")

    def deadline(self, event: DeadlineCheck) -> Decision:
        state = self.original.state
        awaited = _AWAITED_ACTION.get(state)
        if awaited is None:
            return self._unchanged(Verdict.STALE, f"no deadline while the release is {state}")
        resent = self._resend_due_starts(event.now)
        if resent is not None:
            return resent
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
