"""Publishing what transitions caused: each release's outbox, with the broker's confirmation.

A message is dropped from the store only once the broker confirmed it; what it did not confirm stays and
is published again by the sweeper, or by the next coordinator after a restart. Services deduplicate by
message id, so publishing twice is harmless.
"""

from __future__ import annotations

import asyncio

import structlog

from coordinator import metrics
from coordinator.broker import Session
from schemas.documents import Release

log = structlog.get_logger("coordinator")


class Outbox:
    def __init__(self) -> None:
        self.session: Session | None = None
        #: Releases with messages stored but not confirmed, and how many.
        self.undelivered: dict[str, int] = {}

    async def publish(self, release: Release) -> list[str]:
        """Publish every outbox message of ``release`` at once; the ids the broker confirmed."""
        session = self.session
        if session is None or not release.outbox:
            return []
        results = await asyncio.gather(
            *(session.publish(entry, release.id) for entry in release.outbox), return_exceptions=True
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
