"""Publishing what transitions caused: each release's outbox, with the broker's confirmation.

A message is dropped from the store only once the broker confirmed it; what it did not confirm stays and
is published again by the sweeper, or by the next coordinator after a restart. Services deduplicate by
message id, so publishing twice is harmless.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from coordinator import metrics
from coordinator.broker import Session, Unroutable
from coordinator.instances import Instances
from schemas.documents import OutboxEntry, Release
from schemas.enums import Action
from schemas.topology import Topology

log = structlog.get_logger("coordinator")


class Outbox:
    def __init__(self, instances: Instances, topology: Topology, clock: Callable[[], datetime]) -> None:
        self.instances = instances
        self.topology = topology
        self.clock = clock
        self.session: Session | None = None
        #: Releases with messages stored but not confirmed, and how many.
        self.undelivered: dict[str, int] = {}

    async def publish(self, release: Release) -> list[str]:
        """Publish every outbox message of ``release`` at once; the ids the broker confirmed."""
        if self.session is None or not release.outbox:
            return []
        results = await asyncio.gather(
            *(self._publish(self.session, release, entry) for entry in release.outbox), return_exceptions=True
        )
        confirmed = []
        for entry, error in zip(release.outbox, results, strict=True):
            if error is None:
                confirmed.append(entry.message_id)
                continue
            metrics.PUBLISH_FAILURES.inc()
            log.warning(
                "publication not confirmed; will retry",
                release_id=release.id,
                message_id=entry.message_id,
                error=repr(error),
            )
        return confirmed

    async def _publish(self, session: Session, release: Release, entry: OutboxEntry) -> None:
        """A cancel goes to the instance processing the release while it is alive (the service's queue
        would give it to any instance); to the service's queue if that instance's queue is gone."""
        instance = self._processing(release, entry)
        if instance is not None:
            try:
                await session.publish(entry, release.id, routing_key=instance)
                return
            except Unroutable:
                log.info("instance gone; cancel sent to the service's queue", release_id=release.id)
        await session.publish(entry, release.id)

    async def send_once(self, release_id: str, entries: Sequence[OutboxEntry]) -> None:
        """Publish messages that are not stored (:attr:`Decision.unstored`): a cancel to one instance.
        If its queue is gone, so is the instance and its processing; any other failure is logged, and the
        next progress report from that instance sends the cancel again."""
        for entry in entries:
            if self.session is None:
                log.warning("cancel to an instance not sent: no broker session", release_id=release_id)
                return
            try:
                await self.session.publish(entry, release_id)
            except Unroutable:
                log.info("instance gone; its cancel dropped", release_id=release_id, key=entry.routing_key)
            except Exception as error:
                log.warning("cancel to an instance not sent", release_id=release_id, error=repr(error))

    def _processing(self, release: Release, entry: OutboxEntry) -> str | None:
        """The routing key of the live instance processing the task this cancel is for, if there is one."""
        parts = entry.routing_key.split(".")
        if entry.exchange != "commands" or len(parts) != 3 or parts[2] != Action.CANCEL.value:
            return None
        task = release.tasks.get(parts[1])
        if task is None or task.instance is None:
            return None
        if not self.instances.alive(task.service, task.instance, self.clock()):
            return None
        return self.topology.control_key(task.service, task.instance)

    def count(self, release_id: str, left: int) -> None:
        """``left`` messages of the release are still to be confirmed."""
        if left:
            self.undelivered[release_id] = left
        else:
            self.undelivered.pop(release_id, None)
        metrics.OUTBOX_SIZE.set(sum(self.undelivered.values()))

    def clear(self) -> None:
        self.undelivered.clear()
        metrics.OUTBOX_SIZE.set(0)
