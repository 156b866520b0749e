"""Control: a cancel reaches the instance processing the release, and stops that processing first.

Every instance consumes a queue of its own, bound to ``task.<service>.cancel.<instance>``: the coordinator
sends a cancel there while the instance it last heard processing the release is alive, and to the
service's shared queue otherwise. A cancel on the instance's own queue is answered only if this instance
saw the release (it processes it, processed it, or already answered its cancel); any other instance
answers nothing, so one ``cancelled`` reply goes out per release and service.

Answering a cancel first interrupts the release's ``process()`` (``progress.cancelled`` is set and the
task cancelled) and waits until it really stopped: a plain ``def process`` runs in a thread, which only
stops when it looks at ``progress.cancelled``. Only then does ``cancel()`` run, so nothing is staged
after it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from schemas.enums import Action
from schemas.messages import Command
from task_sdk._progress import ProgressReporter
from task_sdk._store import OutcomeStore
from task_sdk._transport import Delivery

Settle = Callable[[Callable[[], Coroutine[Any, Any, None]]], Coroutine[Any, Any, None]]


@dataclass(eq=False)
class Processing:
    """A ``start`` taken on: its command, its progress reporter and the task running ``process``."""

    command: Command
    reporter: ProgressReporter
    task: asyncio.Task[None] | None = None
    interrupted_by: str | None = None
    #: Set while the handler's ``process`` is not running (before it starts, and once it returned).
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.stopped.set()

    def interrupt(self, why: str) -> None:
        self.interrupted_by = why
        self.reporter.request_cancel()
        if self.task is not None:
            self.task.cancel()

    def tracked(self, method: Callable[..., Any]) -> Callable[..., Any]:
        """``method`` (the handler's ``process``), clearing :attr:`stopped` while it runs."""
        self.stopped.clear()
        stopped, loop = self.stopped, asyncio.get_running_loop()
        if inspect.iscoroutinefunction(method):

            async def run_coroutine(*args: object) -> object:
                try:
                    return await method(*args)
                finally:
                    stopped.set()

            return run_coroutine

        def run_in_thread(*args: object) -> object:
            try:
                return method(*args)
            finally:
                loop.call_soon_threadsafe(stopped.set)

        return run_in_thread


async def stop_processing(processing: Processing, why: str, grace: float) -> bool:
    """Interrupt ``processing`` and wait (at most ``grace`` seconds) until its ``process()`` stopped."""
    processing.interrupt(why)
    try:
        async with asyncio.timeout(grace):
            await processing.stopped.wait()
    except TimeoutError:
        return False
    return True


def saw_release(processing: Mapping[str, Processing], store: OutcomeStore, release_id: str) -> bool:
    """Whether this instance processes the release, processed it or answered its cancel."""
    answered = (store.outcome(release_id, action) for action in (Action.START, Action.CANCEL))
    return release_id in processing or any(reply is not None for reply in answered)


@dataclass
class ControlQueue:
    """What the runner does with a delivery from the instance's own control queue."""

    admit: Callable[[Delivery], Awaitable[Command | None]]
    saw: Callable[[str], bool]
    handle: Callable[[Command, Delivery], None]
    settle: Settle
    log: Any = field(default_factory=lambda: structlog.get_logger("task_sdk"))

    async def on_delivery(self, delivery: Delivery) -> None:
        command = await self.admit(delivery)  # only the coordinator's, and valid (else dropped: no DLX)
        if command is None:
            return
        if command.action is not Action.CANCEL:
            self.log.warning(
                "control.not_a_cancel", action=command.action.value, release_id=command.release_id
            )
            await self.settle(delivery.dead_letter)
            return
        if not self.saw(command.release_id):
            self.log.info("control.cancel_not_mine", release_id=command.release_id)
            await self.settle(delivery.ack)
            return
        self.log.info("control.cancel", release_id=command.release_id, message_id=command.message_id)
        self.handle(command, delivery)
