"""The runner: turns commands into handler calls and handler results into replies.

It talks to the broker only through a :class:`~task_sdk._transport.Transport`, so the same code
runs on RabbitMQ and in memory. The rules it enforces (the guarantees of docs/design.md):

* **Ack timing.** ``initialize``/``publish``/``cancel`` are acked only after their reply is
  confirmed by the broker, so a crash before that makes the broker redeliver them. A ``start`` is
  acked as soon as it is taken on (a process slot taken, recorded in the outcome store, progress 0 %
  sent so the coordinator knows this instance does it); the work then runs unacked-free, kept alive by
  progress messages, because RabbitMQ closes a channel holding a delivery past ``consumer_timeout``.
  The prefetch follows the free slots (``_slots.py``); a cancel reaches the processing instance on its
  own queue (``_control.py``). A restarted instance does not resume what it had taken on: the
  coordinator sends ``start`` again once the instance doing it stops heartbeating.
* **Idempotency.** Every answered ``(release, action)`` is stored with its reply. A redelivered or
  replayed command is answered with the stored reply (the very same message when it is the same
  command) and the work is not done again. A ``failed`` outcome is only replayed to the same
  command: a new command for a failed step (the coordinator retrying) runs it again. A ``start``
  already running is just acked; a quick step already running is answered when it finishes.
* **Commands only from the coordinator.** A command whose ``user_id`` is not the coordinator's broker
  user (or, in development, a trusted user) is dead-lettered before it is parsed (``_trust.py``).
* **No lost reply.** A reply is published until the broker confirms it, retrying across reconnects;
  duplicates are possible and carry the same ``message_id``, so the coordinator can drop them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Any

import structlog

from schemas.enums import SUCCESS_BY_ACTION, Action, Outcome
from schemas.messages import Command, Heartbeat, MessageError, Progress, TaskReply, decode
from task_sdk._control import ControlQueue, Processing, saw_release, stop_processing
from task_sdk._handler import (
    MAX_REASON_CHARS,
    HealthStatus,
    Reject,
    StepResult,
    TaskHandler,
    check_handler,
    describe_error,
    invoke_step,
)
from task_sdk._health import HandlerHealth, write_health_file
from task_sdk._progress import ProgressReporter, StepCancelled
from task_sdk._settings import Settings, hostname
from task_sdk._slots import WorkSlots
from task_sdk._store import MemoryOutcomeStore, OutcomeStore
from task_sdk._transport import Delivery, Health, Outgoing, PublishFailed, Transport
from task_sdk._trust import DeadLetters, command_refusal, warn_about_identity
from task_sdk._version import SDK_VERSION

RETRY_DELAY_MAX = 5.0
#: The note of the progress the runner sends by itself as a ``start`` is taken on.
STARTED_NOTE = "processing started"

log = structlog.get_logger("task_sdk")


def new_message_id() -> str:
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_instance_id() -> str:
    """``hostname:pid:random``: tells apart the instances of one service, and restarts of one."""
    return f"{hostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Runner:
    """Runs one :class:`TaskHandler` against one :class:`Transport`."""

    def __init__(
        self,
        handler: TaskHandler,
        transport: Transport,
        settings: Settings | None = None,
        store: OutcomeStore | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.service = check_handler(handler)
        self.handler = handler
        self.settings = settings or Settings()
        self.instance_id = instance_id or new_instance_id()
        self.consumer_tag = f"task_sdk.{self.service}.{self.instance_id}"
        self._transport = transport
        self._store: OutcomeStore = store if store is not None else MemoryOutcomeStore()
        self._log = log.bind(service=self.service, instance_id=self.instance_id)
        self._steps: set[asyncio.Task[None]] = set()
        self._processing: dict[str, Processing] = {}
        self._in_flight: dict[tuple[str, Action], asyncio.Future[TaskReply]] = {}
        self._slots = WorkSlots(self.settings.concurrency, transport.set_work_window)
        saw = partial(saw_release, self._processing, self._store)
        self._control = ControlQueue(self._admitted, saw, self._dispatch, self._settle, self._log)
        self._ticker: asyncio.Task[None] | None = None
        self._handler_health = HandlerHealth(handler, self.settings.heartbeat_seconds / 2, self._log)
        self._stopping = False
        self.dead_letters = DeadLetters()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, heartbeats: bool = True) -> None:
        """Check and consume the service's queue, declare and consume the instance's own, and (by
        default) heartbeat."""
        try:
            await self._transport.open(self.service, self.consumer_tag, self._on_delivery)
            await self._transport.open_control(self.service, self.instance_id, self._control.on_delivery)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._transport.close()
            raise
        self._log.info("runner.started", consumer_tag=self.consumer_tag, **self.settings.loggable())
        warn_about_identity(self.settings, self.service, self._log)
        if heartbeats:
            self._ticker = asyncio.create_task(self._heartbeat_loop(), name=f"{self.service}-heartbeat")

    async def stop(self) -> None:
        """Stop consuming, let running steps finish (up to ``shutdown_timeout``), then cancel them.

        The transport and the store are closed whatever happens (even if this is cancelled).
        """
        self._stopping = True
        try:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.settings.publish_timeout):
                    await self._transport.stop_consuming()
            self._log.info(
                "runner.draining", running=len(self._steps), timeout=self.settings.shutdown_timeout
            )
            await self._drain(self.settings.shutdown_timeout)
        finally:
            background = [task for task in (self._ticker,) if task is not None]
            for task in background:
                task.cancel()
            await asyncio.gather(*background, self._handler_health.stop(), return_exceptions=True)
            try:  # a broker that stopped answering must not keep the service from exiting
                async with asyncio.timeout(self.settings.publish_timeout):
                    await self._transport.close()
            except TimeoutError:
                self._log.warning("runner.close_timed_out", timeout=self.settings.publish_timeout)
            finally:
                self._store.close()
            self._log.info("runner.stopped")

    async def _drain(self, grace: float) -> None:
        if self._steps:
            await asyncio.wait(set(self._steps), timeout=grace)
        for processing in list(self._processing.values()):
            processing.interrupt("shutdown")
        unfinished = set(self._steps)
        for task in unfinished:
            task.cancel()
        if unfinished:
            self._log.warning("runner.steps_cancelled", count=len(unfinished))
            await asyncio.gather(*unfinished, return_exceptions=True)

    @property
    def active_releases(self) -> tuple[str, ...]:
        """The releases whose processing is running on this instance."""
        return tuple(sorted(self._processing))

    # ------------------------------------------------------------------ heartbeats
    async def _heartbeat_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time()
        while True:
            try:
                await self.tick()
            except Exception as error:  # never let one bad tick end the heartbeats
                self._log.error("heartbeat.failed", error=describe_error(error))
            next_beat = max(next_beat + self.settings.heartbeat_seconds, loop.time())
            await asyncio.sleep(next_beat - loop.time())

    async def tick(self) -> None:
        """One heartbeat, plus the last progress of every running ``process`` as a keepalive."""
        health = self._health()
        if not health.consuming and not self._stopping:
            self._log.warning("runner.not_consuming", detail=health.detail)
            with contextlib.suppress(Exception):
                await self._transport.recover()
        heartbeat = self._heartbeat(health, await self.handler_health())
        if self.settings.health_file is not None:
            try:
                write_health_file(
                    self.settings.health_file, heartbeat.sent_at, heartbeat.healthy, heartbeat.detail
                )
            except OSError as error:
                self._log.warning("health_file.failed", error=describe_error(error))
        await self._send_best_effort(heartbeat)
        for processing in list(self._processing.values()):
            reporter = processing.reporter
            await self._send_progress(processing.command, reporter.percent, reporter.note)

    def _health(self) -> Health:
        if self._stopping:
            return Health(False, "shutting down: not taking new commands")
        return self._transport.health()

    async def handler_health(self) -> HealthStatus:
        """The handler's own health (see :class:`~task_sdk._health.HandlerHealth`)."""
        return await self._handler_health.check()

    def _heartbeat(self, transport: Health, handler: HealthStatus) -> Heartbeat:
        told = (transport.detail, handler.detail, self.dead_letters.summary())
        details = [str(detail) for detail in told if detail]
        return Heartbeat(
            message_id=new_message_id(),
            sent_at=utcnow(),
            service=self.service,
            instance_id=self.instance_id,
            sdk_version=SDK_VERSION,
            healthy=transport.consuming and bool(handler.healthy),
            detail="; ".join(details)[:MAX_REASON_CHARS] or None,
            active_releases=self.active_releases,
        )

    # ------------------------------------------------------------------ commands
    async def _on_delivery(self, delivery: Delivery) -> None:
        if self._stopping:
            return  # left unsettled: the broker requeues it when the connection closes
        command = await self._admitted(delivery)
        if command is not None:
            self._dispatch(command, delivery)

    async def _admitted(self, delivery: Delivery) -> Command | None:
        """The command, if the coordinator sent it and it is valid; else it is dead-lettered."""
        reason, event, command = command_refusal(self.settings, delivery.user_id), "command.refused", None
        if reason is None:
            try:
                command = self._parse(delivery.body)
            except MessageError as error:
                reason, event = f"invalid command: {error.reason}", "command.invalid"
        if command is None:
            message_id = delivery.message_id
            self._log.warning(event, reason=reason, size=len(delivery.body), message_id=message_id)
            self.dead_letters.record(str(reason), message_id)
            await self._settle(delivery.dead_letter)
            return None
        action, release_id = command.action.value, command.release_id
        self._log.info(
            "command.received", release_id=release_id, action=action, message_id=command.message_id
        )
        return command

    def _dispatch(self, command: Command, delivery: Delivery) -> None:
        self._spawn(self._handle(command, delivery), name=f"{command.action.value}-{command.release_id}")

    def _parse(self, body: bytes) -> Command:
        command = decode(body, Command)
        if command.service != self.service:
            raise MessageError(f"command for service {command.service!r} delivered to {self.service!r}")
        return command

    async def _handle(self, command: Command, delivery: Delivery) -> None:
        stored = self._replayable_outcome(command)
        if stored is not None:
            self._log.info("command.replayed", release_id=command.release_id, outcome=stored.outcome.value)
            await self._answer(stored, delivery)
        elif command.action is Action.START:
            await self._take_on(command, delivery)
        else:
            await self._answer(await self._quick_step_once(command), delivery)

    def _replayable_outcome(self, command: Command) -> TaskReply | None:
        stored = self._store.outcome(command.release_id, command.action)
        if stored is None:
            return None
        if stored.outcome is Outcome.FAILED and stored.in_reply_to != command.message_id:
            return None  # a new command for a failed step is a retry: run it again
        return self._reissue(stored, command)

    def _reissue(self, stored: TaskReply, command: Command) -> TaskReply:
        """The stored reply to ``command``: the very same message if it answered this command (so
        duplicates share one message id), else a new reply to the other command with its outcome."""
        if stored.in_reply_to == command.message_id:
            return stored
        changes = {"message_id": new_message_id(), "sent_at": utcnow(), "in_reply_to": command.message_id}
        return stored.model_copy(update=changes)

    async def _answer(self, reply: TaskReply, delivery: Delivery) -> None:
        await self._publish_reply(reply)
        await self._settle(delivery.ack)

    # ------------------------------------------------------------------ initialize, publish, cancel
    async def _quick_step_once(self, command: Command) -> TaskReply:
        """Run the step, or if the same step is already running (a redelivery), wait for its reply."""
        key = (command.release_id, command.action)
        running = self._in_flight.get(key)
        if running is not None:
            return self._reissue(await asyncio.shield(running), command)
        future: asyncio.Future[TaskReply] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            reply = await self._quick_step(command)
            future.set_result(reply)
            return reply
        finally:
            del self._in_flight[key]
            if not future.done():
                future.cancel()

    async def _quick_step(self, command: Command) -> TaskReply:
        if command.action is Action.CANCEL:
            await self._interrupt_processing(command.release_id)
        methods: dict[Action, Callable[..., StepResult]] = {
            Action.INITIALIZE: self.handler.initialize,
            Action.PUBLISH: self.handler.publish,
            Action.CANCEL: self.handler.cancel,
        }
        outcome, reason = await self._attempt(command.action, methods[command.action], command.release)
        return self._record(command, outcome, reason)

    async def _interrupt_processing(self, release_id: str) -> None:
        processing = self._processing.get(release_id)
        if processing is None:
            return
        self._log.info("processing.interrupting", release_id=release_id)
        if not await stop_processing(processing, "cancel", self.settings.shutdown_timeout):
            self._log.warning("processing.did_not_stop", release_id=release_id)
        if processing.task is not None:
            await asyncio.wait({processing.task}, timeout=self.settings.publish_timeout)

    # ------------------------------------------------------------------ start / process
    async def _take_on(self, command: Command, delivery: Delivery) -> None:
        """Take a slot, then narrow the prefetch, then ack: nothing more comes in than there are slots."""
        if await self._answered_without_processing(command, delivery):
            return
        await self._slots.take()
        if await self._answered_without_processing(command, delivery):  # settled while waiting for a slot
            self._slot_freed()
            return
        self._store.record_taken(command)
        self._begin_processing(command)
        await self._settle(delivery.ack)

    async def _answered_without_processing(self, command: Command, delivery: Delivery) -> bool:
        if command.release_id in self._processing:
            self._log.info("processing.already_running", release_id=command.release_id)
            await self._settle(delivery.ack)
            return True
        if self._was_canceled(command.release_id):
            reply = self._record(
                command, Outcome.CANCELED, "the release was canceled before processing started"
            )
            await self._answer(reply, delivery)
            return True
        return False

    def _was_canceled(self, release_id: str) -> bool:
        cancel = self._store.outcome(release_id, Action.CANCEL)
        return cancel is not None and cancel.outcome is Outcome.CANCELED

    def _slot_freed(self) -> None:
        self._slots.give_back()
        self._spawn(self._slots.follow(), name=f"{self.service}-work-window")

    def _begin_processing(self, command: Command) -> None:
        send = partial(self._send_progress, command)
        processing = Processing(command, ProgressReporter(send, asyncio.get_running_loop()))
        self._processing[command.release_id] = processing
        processing.task = self._spawn(self._process(processing), name=f"process-{command.release_id}")

    async def _process(self, processing: Processing) -> None:
        command, reporter = processing.command, processing.reporter
        try:
            await reporter.report(0, STARTED_NOTE)  # the coordinator learns at once who processes it
            process = processing.tracked(self.handler.process)
            outcome, reason = await self._attempt(Action.START, process, command.release, reporter)
        except asyncio.CancelledError:
            await self._on_processing_interrupted(processing)
            raise
        finally:
            self._processing.pop(command.release_id, None)
            self._slot_freed()
        await self._publish_reply(self._record(command, outcome, reason))

    async def _on_processing_interrupted(self, processing: Processing) -> None:
        command, why = processing.command, processing.interrupted_by
        self._log.info("processing.interrupted", release_id=command.release_id, by=why)
        if why == "cancel":
            # Answered by the reply to the cancel command; remembered so a replayed start is not re-run.
            self._record(command, Outcome.CANCELED, "canceled by a cancel command")
        elif self._store.durable:
            self._log.warning("processing.left_to_the_coordinator", release_id=command.release_id)
        else:
            reply = self._record(command, Outcome.FAILED, "the service shut down before processing finished")
            with contextlib.suppress(PublishFailed, TimeoutError):
                async with asyncio.timeout(self.settings.publish_timeout):
                    await self._transport.publish(reply)

    # ------------------------------------------------------------------ calling the handler
    async def _attempt(
        self, action: Action, method: Callable[..., StepResult], *args: object
    ) -> tuple[Outcome, str | None]:
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
            self._log.exception("step.failed", action=action.value)
            return Outcome.FAILED, describe_error(error)
        return SUCCESS_BY_ACTION[action], None  # the handler's method returned normally

    def _record(self, command: Command, outcome: Outcome, reason: str | None) -> TaskReply:
        reply = TaskReply(
            message_id=new_message_id(),
            sent_at=utcnow(),
            release_id=command.release_id,
            service=self.service,
            in_reply_to=command.message_id,
            action=command.action,
            outcome=outcome,
            reason=reason,
            instance_id=self.instance_id,
            sdk_version=SDK_VERSION,
        )
        self._store.record_outcome(reply)
        self._log.info(
            "step.done", release_id=command.release_id, action=command.action.value, outcome=outcome
        )
        return reply

    # ------------------------------------------------------------------ sending
    async def _publish_reply(self, reply: TaskReply) -> None:
        """Publish until the broker confirms it: a reply is never silently lost."""
        delay = 0.1
        while True:
            try:
                await self._transport.publish(reply)
            except PublishFailed as error:
                self._log.warning("reply.publish_failed", message_id=reply.message_id, error=str(error))
            else:
                self._log.info("reply.sent", message_id=reply.message_id, outcome=reply.outcome.value)
                return
            await self._wait_before_retry(delay)
            delay = min(delay * 2, RETRY_DELAY_MAX)

    async def _wait_before_retry(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.publish_timeout):
                await self._transport.wait_ready()
        await asyncio.sleep(delay)

    async def _send_progress(self, command: Command, percent: float, note: str | None) -> None:
        progress = Progress(
            message_id=new_message_id(),
            sent_at=utcnow(),
            release_id=command.release_id,
            service=self.service,
            in_reply_to=command.message_id,
            percent=percent,
            note=note,
            instance_id=self.instance_id,
        )
        await self._send_best_effort(progress)

    async def _send_best_effort(self, message: Outgoing) -> None:
        """Progress and heartbeats are not retried: the next one supersedes them."""
        try:
            await self._transport.publish(message)
        except PublishFailed as error:
            # One line per heartbeat period is enough during an outage; progress failures are debug.
            report = self._log.warning if isinstance(message, Heartbeat) else self._log.debug
            report("message.not_sent", kind=message.kind.value, error=str(error))

    # ------------------------------------------------------------------ plumbing
    async def _settle(self, settle: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await settle()
        except Exception as error:
            # The broker will redeliver the command; the outcome store answers it then.
            self._log.warning("delivery.settle_failed", error=describe_error(error))

    def _spawn(self, step: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(step, name=name)
        self._steps.add(task)
        task.add_done_callback(self._step_finished)
        return task

    def _step_finished(self, task: asyncio.Task[None]) -> None:
        self._steps.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._log.error("step.crashed", task=task.get_name(), error=describe_error(task.exception()))  # type: ignore[arg-type]
