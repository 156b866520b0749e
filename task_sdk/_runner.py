"""The runner: the command dispatch. It admits commands, hands each to the part that does it, and
keeps the instance's lifecycle (start, heartbeats, stop).

It talks to the broker only through a :class:`~task_sdk._transport.Transport`, so the same code
runs on RabbitMQ and in memory. The rules it enforces (the guarantees of docs/design.md):

* **Ack timing.** ``initialize``/``publish``/``cancel`` are acked only after their reply is
  confirmed by the broker, so a crash before that makes the broker redeliver them. A ``start`` is
  acked as soon as it is taken on (``_work.py``). The instance consumes for its free slots only
  (``_slots.py``); a cancel reaches the processing instance on its own queue (``_control.py``).
* **Idempotency.** Every answered ``(release, action)`` is stored with its reply, and a replayed
  command is answered with it, not re-run (``_outcomes.py``).
* **Commands only from the coordinator.** A command whose ``user_id`` is not the coordinator's broker
  user (or, in development, a trusted user) is dead-lettered before it is parsed (``_trust.py``).
* **No lost reply.** A reply is published until the broker confirms it, retrying across reconnects
  (``_sending.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Callable
from functools import partial

import structlog

from schemas.enums import Action
from schemas.messages import Command, Heartbeat, MessageError, TaskReply, decode
from task_sdk._control import ControlQueue, saw_release
from task_sdk._handler import (
    MAX_REASON_CHARS,
    HealthStatus,
    StepResult,
    TaskHandler,
    check_handler,
    describe_error,
)
from task_sdk._health import HandlerHealth, write_health_file
from task_sdk._outcomes import Outcomes, attempt, new_message_id, utcnow
from task_sdk._sending import Sender
from task_sdk._settings import Settings, hostname
from task_sdk._slots import WorkSlots
from task_sdk._store import MemoryOutcomeStore, OutcomeStore
from task_sdk._transport import BUSY, Delivery, Health, Transport
from task_sdk._trust import DeadLetters, command_refusal, warn_about_identity
from task_sdk._version import SDK_VERSION
from task_sdk._work import Work

__all__ = ["Runner", "new_instance_id"]

log = structlog.get_logger("task_sdk")


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
        self._log = log.bind(service=self.service, instance_id=self.instance_id)
        store = store if store is not None else MemoryOutcomeStore()
        self._outcomes = Outcomes(store, self.service, self.instance_id, self._log)
        self._sender = Sender(transport, self.settings, self.service, self.instance_id, self._log)
        slots = WorkSlots(self.settings.concurrency, self._set_work_window)
        self._work = Work(handler, self.settings, slots, self._outcomes, self._sender, self._log)
        saw = partial(saw_release, self._work.processing, store)
        self._control = ControlQueue(self._admitted, saw, self._dispatch, self._sender.settle, self._log)
        self._ticker: asyncio.Task[None] | None = None
        self._handler_health = HandlerHealth(handler, self.settings.heartbeat_seconds / 2, self._log)
        self._handler_said = HealthStatus(True)  # what the handler's health() last answered
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
                "runner.draining", running=len(self._work.steps), timeout=self.settings.shutdown_timeout
            )
            await self._work.drain(self.settings.shutdown_timeout)
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
                self._outcomes.store.close()
            self._log.info("runner.stopped")

    @property
    def active_releases(self) -> tuple[str, ...]:
        """The releases whose processing is running on this instance."""
        return tuple(sorted(self._work.processing))

    # ------------------------------------------------------------------ heartbeats
    async def _set_work_window(self, free_slots: int, taken: Delivery | None) -> None:
        """The prefetch follows the free slots. Before the last one goes (and the consumer with it), a
        heartbeat says so: the coordinator must never find the queue without consumer while the
        instance's last word was "idle", or it cancels a release created meanwhile as unserved."""
        if free_slots == 0 and self._ticker is not None:
            await self._sender.best_effort(self._heartbeat(BUSY, self._handler_said))
        await self._transport.set_work_window(free_slots, taken)

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
        self._handler_said = await self.handler_health()
        heartbeat = self._heartbeat(health, self._handler_said)
        if self.settings.health_file is not None:
            try:
                write_health_file(
                    self.settings.health_file, heartbeat.sent_at, heartbeat.healthy, heartbeat.detail
                )
            except OSError as error:
                self._log.warning("health_file.failed", error=describe_error(error))
        await self._sender.best_effort(heartbeat)
        for processing in list(self._work.processing.values()):
            reporter = processing.reporter
            await self._sender.progress(processing.command, reporter.percent, reporter.note)

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
            await self._sender.settle(delivery.dead_letter)
            return None
        action, release_id = command.action.value, command.release_id
        self._log.info(
            "command.received", release_id=release_id, action=action, message_id=command.message_id
        )
        return command

    def _dispatch(self, command: Command, delivery: Delivery) -> None:
        self._work.spawn(self._handle(command, delivery), name=f"{command.action.value}-{command.release_id}")

    def _parse(self, body: bytes) -> Command:
        command = decode(body, Command)
        if command.service != self.service:
            raise MessageError(f"command for service {command.service!r} delivered to {self.service!r}")
        return command

    async def _handle(self, command: Command, delivery: Delivery) -> None:
        stored = self._outcomes.replayable(command)
        if stored is not None:
            self._log.info("command.replayed", release_id=command.release_id, outcome=stored.outcome.value)
            await self._sender.answer(stored, delivery)
        elif command.action is Action.START:
            await self._work.take_on(command, delivery)
        else:
            reply = await self._outcomes.once(command, partial(self._quick_step, command))
            await self._sender.answer(reply, delivery)

    async def _quick_step(self, command: Command) -> TaskReply:
        if command.action is Action.CANCEL:
            await self._work.interrupt(command.release_id)
        methods: dict[Action, Callable[..., StepResult]] = {
            Action.INITIALIZE: self.handler.initialize,
            Action.PUBLISH: self.handler.publish,
            Action.CANCEL: self.handler.cancel,
        }
        method = methods[command.action]
        outcome, reason = await attempt(command.action, method, command.release, log=self._log)
        return self._outcomes.record(command, outcome, reason)
