"""The work of one instance: the step tasks it runs, and the lifecycle of a ``start`` taken on (a slot,
its ``process()``, its end, or its interruption by a cancel or a shutdown).

A ``start`` is acked as soon as it is taken on (a process slot taken, recorded in the outcome store,
progress 0 % sent so the coordinator knows this instance does it); the work then runs unacked-free, kept
alive by progress messages, because RabbitMQ closes a channel holding a delivery past
``consumer_timeout``. A ``start`` already running is just acked. A restarted instance does not resume
what it had taken on: the coordinator sends ``start`` again once the instance doing it stops heartbeating.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from functools import partial
from typing import Any

from schemas.enums import Action, Outcome
from schemas.messages import Command
from task_sdk._control import Processing, stop_processing
from task_sdk._handler import TaskHandler, describe_error
from task_sdk._outcomes import Outcomes, attempt
from task_sdk._progress import ProgressReporter
from task_sdk._sending import Sender
from task_sdk._settings import Settings
from task_sdk._slots import WorkSlots
from task_sdk._transport import Delivery

#: The note of the progress the runner sends by itself as a ``start`` is taken on.
STARTED_NOTE = "processing started"


class Work:
    """The step tasks of one instance, and the processing of the ``start`` commands it took on."""

    def __init__(
        self,
        handler: TaskHandler,
        settings: Settings,
        slots: WorkSlots,
        outcomes: Outcomes,
        sender: Sender,
        log: Any,
    ) -> None:
        self._handler = handler
        self._settings = settings
        self._slots = slots
        self._outcomes = outcomes
        self._sender = sender
        self._log = log
        #: The processing running on this instance, by release id.
        self.processing: dict[str, Processing] = {}
        #: Every task handling a command (the quick steps and the processing).
        self.steps: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ step tasks
    def spawn(self, step: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(step, name=name)
        self.steps.add(task)
        task.add_done_callback(self._step_finished)
        return task

    def _step_finished(self, task: asyncio.Task[None]) -> None:
        self.steps.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("step.crashed", task=task.get_name(), error=describe_error(task.exception()))  # type: ignore[arg-type]

    async def drain(self, grace: float) -> None:
        """Let the steps finish for ``grace`` seconds, then interrupt the processing and cancel the rest."""
        if self.steps:
            await asyncio.wait(set(self.steps), timeout=grace)
        for processing in list(self.processing.values()):
            processing.interrupt("shutdown")
        unfinished = set(self.steps)
        for task in unfinished:
            task.cancel()
        if unfinished:
            self._log.warning("runner.steps_cancelled", count=len(unfinished))
            await asyncio.gather(*unfinished, return_exceptions=True)

    # ------------------------------------------------------------------ start / process
    async def take_on(self, command: Command, delivery: Delivery) -> None:
        """Take a slot, then narrow the work window behind this start, then ack: nothing more comes in than
        there are slots."""
        if await self._answered_without_processing(command, delivery):
            return
        await self._slots.take(delivery)
        if await self._answered_without_processing(command, delivery):  # settled while waiting for a slot
            self._slot_freed()
            return
        self._outcomes.store.record_taken(command)
        self._begin_processing(command)
        await self._sender.settle(delivery.ack)

    async def _answered_without_processing(self, command: Command, delivery: Delivery) -> bool:
        if command.release_id in self.processing:
            self._log.info("processing.already_running", release_id=command.release_id)
            await self._sender.settle(delivery.ack)
            return True
        if self._outcomes.was_canceled(command.release_id):
            reply = self._outcomes.record(
                command, Outcome.CANCELED, "the release was canceled before processing started"
            )
            await self._sender.answer(reply, delivery)
            return True
        return False

    def _slot_freed(self) -> None:
        self._slots.give_back()
        self.spawn(self._slots.follow(), name=f"{self._handler.service}-work-window")

    def _begin_processing(self, command: Command) -> None:
        send = partial(self._sender.progress, command)
        processing = Processing(command, ProgressReporter(send, asyncio.get_running_loop()))
        self.processing[command.release_id] = processing
        processing.task = self.spawn(self._process(processing), name=f"process-{command.release_id}")

    async def _process(self, processing: Processing) -> None:
        command, reporter = processing.command, processing.reporter
        try:
            await reporter.report(0, STARTED_NOTE)  # the coordinator learns at once who processes it
            process = processing.tracked(self._handler.process)
            outcome, reason = await attempt(Action.START, process, command.release, reporter, log=self._log)
        except asyncio.CancelledError:
            await self._on_processing_interrupted(processing)
            raise
        finally:
            self.processing.pop(command.release_id, None)
            self._slot_freed()
        await self._sender.reply(self._outcomes.record(command, outcome, reason))

    async def _on_processing_interrupted(self, processing: Processing) -> None:
        command, why = processing.command, processing.interrupted_by
        self._log.info("processing.interrupted", release_id=command.release_id, by=why)
        if why == "cancel":
            # Answered by the reply to the cancel command; remembered so a replayed start is not re-run.
            self._outcomes.record(command, Outcome.CANCELED, "canceled by a cancel command")
        elif self._outcomes.store.durable:
            self._log.warning("processing.left_to_the_coordinator", release_id=command.release_id)
        else:
            reason = "the service shut down before processing finished"
            await self._sender.reply_once(self._outcomes.record(command, Outcome.FAILED, reason))

    async def interrupt(self, release_id: str) -> None:
        """Stop the release's processing, if it runs here, and wait until it stopped (a cancel came)."""
        processing = self.processing.get(release_id)
        if processing is None:
            return
        self._log.info("processing.interrupting", release_id=release_id)
        if not await stop_processing(processing, "cancel", self._settings.shutdown_timeout):
            self._log.warning("processing.did_not_stop", release_id=release_id)
        if processing.task is not None:
            await asyncio.wait({processing.task}, timeout=self._settings.publish_timeout)
