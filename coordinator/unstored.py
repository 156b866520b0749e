"""Inputs decided in a row, and replies decided in memory whose store write waits for the next ones.

A reply that leaves its release in its step and causes nothing to publish (the first two of three
``initialized`` replies, say) need not be stored alone: its write may wait up to the reply write delay
(``RC_REPLY_WRITE_DELAY``) so that the replies of one step share one durable write, usually the one that
moves the release on. Its delivery is acknowledged only once that write has returned, so the guarantee
holds as before (a message is acknowledged only after its effect is stored); if the coordinator dies or
the write fails first, the broker delivers the reply again and it is decided again.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from coordinator.machine import Decision, Input
from schemas.documents import AuditEvent, Release


@dataclass
class Fold:
    """Inputs decided in a row: the decisions, and (before, decision, input) per applied one."""

    release: Release
    decisions: list[Decision] = field(default_factory=list)
    applied: list[tuple[Release, Decision, Input]] = field(default_factory=list)
    #: The audit event of each applied decision, stored in the same write.
    audit: list[AuditEvent] = field(default_factory=list)

    def extend(self, later: Fold) -> None:
        """Add ``later`` (decided from this fold's release) in place: one write for both."""
        self.release = later.release
        self.decisions.extend(later.decisions)
        self.applied.extend(later.applied)
        self.audit.extend(later.audit)

    def is_quiet(self, before: Release) -> bool:
        """The release stays in its step and has nothing new to publish: its write may wait."""
        known = {entry.message_id for entry in before.outbox}
        return self.release.state is before.state and all(e.message_id in known for e in self.release.outbox)


@dataclass(eq=False)
class Unstored:
    """Replies of one release decided in memory since its last write (see the module's documentation)."""

    #: The release as last stored: the ``before`` of the write that stores the rest.
    stored: Release
    #: What was decided since, in order (its own lists, extended in place: a release of many services
    #: holds many); ``fold.release`` is the release as this coordinator sees it.
    fold: Fold
    #: Done once ``fold`` is stored; failed if it never will be (its replies are then delivered again).
    durable: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    #: The task that stores it when the delay is over.
    timer: asyncio.Task[None] | None = None

    def stored_now(self) -> None:
        if not self.durable.done():
            self.durable.set_result(None)
        self._stop_timer()

    def lost(self, error: BaseException) -> None:
        """Never to be stored: whoever waits for it gets ``error`` (and does not acknowledge)."""
        if not self.durable.done():
            self.durable.set_exception(error)
            self.durable.add_done_callback(_retrieved)  # nobody may be waiting any more
        self._stop_timer()

    def _stop_timer(self) -> None:
        if self.timer is not None and self.timer is not asyncio.current_task():
            self.timer.cancel()


def _retrieved(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()
