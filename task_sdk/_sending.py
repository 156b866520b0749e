"""Sending: replies published until the broker confirms them, progress and heartbeats on a best-effort
basis, and deliveries settled without letting a broken channel end the step.

A reply is never silently lost: it is published again, across reconnects, until confirmed; duplicates
are possible and carry the same ``message_id``, so the coordinator can drop them. Progress and heartbeats
are not retried: the next one supersedes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from schemas.messages import Command, Heartbeat, Progress, TaskReply
from task_sdk._handler import describe_error
from task_sdk._outcomes import new_message_id, utcnow
from task_sdk._settings import Settings
from task_sdk._transport import Delivery, Outgoing, PublishFailed, Transport

RETRY_DELAY_MAX = 5.0


class Sender:
    """What one instance sends, over its :class:`Transport`."""

    def __init__(
        self, transport: Transport, settings: Settings, service: str, instance_id: str, log: Any
    ) -> None:
        self._transport = transport
        self._settings = settings
        self._service = service
        self._instance_id = instance_id
        self._log = log

    async def answer(self, reply: TaskReply, delivery: Delivery) -> None:
        """Publish the reply to a command, then ack the command."""
        await self.reply(reply)
        await self.settle(delivery.ack)

    async def reply(self, reply: TaskReply) -> None:
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
            async with asyncio.timeout(self._settings.publish_timeout):
                await self._transport.wait_ready()
        await asyncio.sleep(delay)

    async def reply_once(self, reply: TaskReply) -> None:
        """Publish the reply once, within ``publish_timeout``, or not at all (the service is stopping)."""
        with contextlib.suppress(PublishFailed, TimeoutError):
            async with asyncio.timeout(self._settings.publish_timeout):
                await self._transport.publish(reply)

    async def progress(self, command: Command, percent: float, note: str | None) -> None:
        progress = Progress(
            message_id=new_message_id(),
            sent_at=utcnow(),
            release_id=command.release_id,
            service=self._service,
            in_reply_to=command.message_id,
            percent=percent,
            note=note,
            instance_id=self._instance_id,
        )
        await self.best_effort(progress)

    async def best_effort(self, message: Outgoing) -> None:
        """Progress and heartbeats are not retried: the next one supersedes them."""
        try:
            await self._transport.publish(message)
        except PublishFailed as error:
            # One line per heartbeat period is enough during an outage; progress failures are debug.
            report = self._log.warning if isinstance(message, Heartbeat) else self._log.debug
            report("message.not_sent", kind=message.kind.value, error=str(error))

    async def settle(self, settle: Callable[[], Coroutine[Any, Any, None]]) -> None:
        try:
            await settle()
        except Exception as error:
            # The broker will redeliver the command; the outcome store answers it then.
            self._log.warning("delivery.settle_failed", error=describe_error(error))
