"""Outcomes: what a step ended in, recorded and replayed so that a command is answered once, not re-run.

Every answered ``(release, action)`` is stored with its reply. A redelivered or replayed command is
answered with the stored reply (the very same message when it is the same command) and the work is not
done again. A ``failed`` outcome is only replayed to the same command: a new command for a failed step
(the coordinator retrying) runs it again. A quick step already running is answered when it finishes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from schemas.enums import SUCCESS_BY_ACTION, Action, Outcome
from schemas.messages import Command, TaskReply
from task_sdk._handler import MAX_REASON_CHARS, Reject, StepResult, describe_error, invoke_step
from task_sdk._progress import StepCancelled
from task_sdk._store import OutcomeStore
from task_sdk._version import SDK_VERSION


def new_message_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


async def attempt(
    action: Action, method: Callable[..., StepResult], *args: object, log: Any
) -> tuple[Outcome, str | None]:
    """Call the handler's ``method``: the outcome it ends in, and why if it is not a success."""
    try:
        await invoke_step(method, *args)
    except Reject as rejection:
        if action is Action.INITIALIZE:
            return Outcome.REJECTED, rejection.reason[:MAX_REASON_CHARS]
        return Outcome.FAILED, f"Reject raised by {action.value}: {rejection.reason}"[:MAX_REASON_CHARS]
    except StepCancelled as cancelled:
        outcome = Outcome.CANCELED if action is Action.START else Outcome.FAILED
        return outcome, describe_error(cancelled)
    except Exception as error:
        log.exception("step.failed", action=action.value)
        return Outcome.FAILED, describe_error(error)
    return SUCCESS_BY_ACTION[action], None  # the handler's method returned normally


class Outcomes:
    """The replies of one instance: recorded in its :class:`OutcomeStore`, reissued to replays."""

    def __init__(self, store: OutcomeStore, service: str, instance_id: str, log: Any) -> None:
        self.store = store
        self._service = service
        self._instance_id = instance_id
        self._log = log
        self._in_flight: dict[tuple[str, Action], asyncio.Future[TaskReply]] = {}

    def replayable(self, command: Command) -> TaskReply | None:
        """The stored reply that answers ``command``, if the step must not run again."""
        stored = self.store.outcome(command.release_id, command.action)
        if stored is None:
            return None
        if stored.outcome is Outcome.FAILED and stored.in_reply_to != command.message_id:
            return None  # a new command for a failed step is a retry: run it again
        return reissue(stored, command)

    def was_canceled(self, release_id: str) -> bool:
        cancel = self.store.outcome(release_id, Action.CANCEL)
        return cancel is not None and cancel.outcome is Outcome.CANCELED

    def record(self, command: Command, outcome: Outcome, reason: str | None) -> TaskReply:
        """The reply to ``command``, remembered in the store."""
        reply = TaskReply(
            message_id=new_message_id(),
            sent_at=utcnow(),
            release_id=command.release_id,
            service=self._service,
            in_reply_to=command.message_id,
            action=command.action,
            outcome=outcome,
            reason=reason,
            instance_id=self._instance_id,
            sdk_version=SDK_VERSION,
        )
        self.store.record_outcome(reply)
        self._log.info(
            "step.done", release_id=command.release_id, action=command.action.value, outcome=outcome
        )
        return reply

    async def once(self, command: Command, run: Callable[[], Awaitable[TaskReply]]) -> TaskReply:
        """``run()``, or if the same step is already running (a redelivery), wait for its reply."""
        key = (command.release_id, command.action)
        running = self._in_flight.get(key)
        if running is not None:
            return reissue(await asyncio.shield(running), command)
        future: asyncio.Future[TaskReply] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            reply = await run()
            future.set_result(reply)
            return reply
        finally:
            del self._in_flight[key]
            if not future.done():
                future.cancel()


def reissue(stored: TaskReply, command: Command) -> TaskReply:
    """The stored reply to ``command``: the very same message if it answered this command (so
    duplicates share one message id), else a new reply to the other command with its outcome."""
    if stored.in_reply_to == command.message_id:
        return stored
    changes = {"message_id": new_message_id(), "sent_at": utcnow(), "in_reply_to": command.message_id}
    return stored.model_copy(update=changes)
